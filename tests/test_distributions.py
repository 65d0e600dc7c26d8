"""Categorical and diagonal-Gaussian distributions against NumPy/SciPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from scipy import stats

import jaxrl_align as jra


def np_log_softmax(logits):
  logits = np.asarray(logits, np.float64)
  return logits - special.logsumexp(logits, axis=-1, keepdims=True)


# ---------------------------------------------------------------- categorical


def test_categorical_against_numpy():
  rng = np.random.default_rng(0)
  logits_p = rng.normal(size=(5, 3, 4)).astype(np.float32) * 2
  logits_q = rng.normal(size=(5, 3, 4)).astype(np.float32) * 2
  action = rng.integers(0, 4, size=(5, 3))
  log_p, log_q = np_log_softmax(logits_p), np_log_softmax(logits_q)
  p = np.exp(log_p)

  np.testing.assert_allclose(
      jax.jit(jra.categorical_log_prob)(logits_p, action),
      np.take_along_axis(log_p, action[..., None], -1)[..., 0], rtol=1e-5)
  np.testing.assert_allclose(jax.jit(jra.categorical_entropy)(logits_p),
                             -(p * log_p).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(jax.jit(jra.categorical_kl)(logits_p, logits_q),
                             (p * (log_p - log_q)).sum(-1), rtol=1e-4,
                             atol=1e-6)
  mode = jax.jit(jra.categorical_mode)(logits_p)
  np.testing.assert_array_equal(mode, logits_p.argmax(-1))
  assert mode.dtype == jnp.int32


def test_categorical_sample_frequencies():
  probs = np.array([0.1, 0.2, 0.3, 0.4])
  n = 200_000
  logits = jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)), (n, 4))
  samples = jax.jit(jra.categorical_sample)(jax.random.key(0), logits)
  assert samples.shape == (n,) and samples.dtype == jnp.int32
  counts = np.bincount(np.asarray(samples), minlength=4)
  # Chi-square goodness of fit; the key is fixed so this cannot flake.
  assert stats.chisquare(counts, probs * n).pvalue > 1e-3
  # Same key, same samples.
  again = jra.categorical_sample(jax.random.key(0), logits)
  np.testing.assert_array_equal(samples, again)


def test_masked_actions_give_finite_entropy_kl_and_gradients():
  logits = jnp.array([[0.0, -jnp.inf, 1.0], [2.0, 0.5, -jnp.inf]])
  other = jnp.array([[0.3, -jnp.inf, 0.2], [0.0, 0.0, 0.0]])
  h = jra.categorical_entropy(logits)
  finite = [[0.0, 1.0], [2.0, 0.5]]
  expected = -(np.exp(np_log_softmax(finite)) * np_log_softmax(finite)).sum(-1)
  np.testing.assert_allclose(h, expected, rtol=1e-5)
  kl = jra.categorical_kl(logits, other)
  assert np.all(np.isfinite(kl))
  grad = jax.grad(lambda l: jnp.sum(jra.categorical_entropy(l)
                                    + jra.categorical_kl(l, other)))(logits)
  assert np.all(np.isfinite(grad))
  # p > 0 where q = 0 is an infinite KL, as it should be.
  assert jra.categorical_kl(jnp.zeros(2), jnp.array([0.0, -jnp.inf])) == jnp.inf


def test_categorical_vmap():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  action = jnp.asarray(rng.integers(0, 3, size=6))
  per_row = jax.vmap(lambda l, a: jra.categorical_log_prob(l[None], a[None])[0])
  np.testing.assert_allclose(per_row(logits, action),
                             jra.categorical_log_prob(logits, action), rtol=1e-6)
  keys = jax.random.split(jax.random.key(0), 6)
  assert jax.vmap(jra.categorical_sample)(keys, logits).shape == (6,)


def test_categorical_bad_input():
  with pytest.raises(ValueError, match="action"):
    jra.categorical_log_prob(jnp.zeros((4, 3)), jnp.zeros((4, 1), jnp.int32))
  with pytest.raises(ValueError, match="logits"):
    jra.categorical_entropy(jnp.zeros((4, 3), jnp.int32))
  with pytest.raises(ValueError, match="logits"):
    jra.categorical_kl(jnp.zeros((4, 3)), jnp.zeros((4, 2)))


# ------------------------------------------------------------------ Gaussian


def test_gaussian_against_scipy():
  rng = np.random.default_rng(2)
  mean_p = rng.normal(size=(7, 3)).astype(np.float32)
  mean_q = rng.normal(size=(7, 3)).astype(np.float32)
  log_std_p = (rng.normal(size=3) * 0.5).astype(np.float32)  # state-independent
  log_std_q = (rng.normal(size=(7, 3)) * 0.5).astype(np.float32)
  action = rng.normal(size=(7, 3)).astype(np.float32)
  std_p, std_q = np.exp(log_std_p), np.exp(log_std_q)

  np.testing.assert_allclose(
      jax.jit(jra.gaussian_log_prob)(mean_p, log_std_p, action),
      stats.norm.logpdf(action, mean_p, std_p).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(
      jax.jit(jra.gaussian_entropy)(mean_p, log_std_p),
      np.broadcast_to(stats.norm.entropy(0, std_p).sum(-1), (7,)), rtol=1e-5)
  # Closed form per dimension: log(σq/σp) + (σp² + (μp-μq)²)/(2σq²) - 1/2.
  expected_kl = (np.log(std_q / std_p)
                 + (std_p**2 + (mean_p - mean_q) ** 2) / (2 * std_q**2)
                 - 0.5).sum(-1)
  np.testing.assert_allclose(
      jax.jit(jra.gaussian_kl)(mean_p, log_std_p, mean_q, log_std_q),
      expected_kl, rtol=1e-5)
  np.testing.assert_array_equal(jra.gaussian_mode(mean_p, log_std_p), mean_p)


def test_gaussian_kl_matches_monte_carlo():
  mean_p, log_std_p = jnp.array([0.3, -1.0]), jnp.array([0.1, -0.4])
  mean_q, log_std_q = jnp.array([0.0, -0.5]), jnp.array([0.3, 0.0])
  n = 400_000
  x = jra.gaussian_sample(jax.random.key(1), jnp.broadcast_to(mean_p, (n, 2)),
                          log_std_p)
  mc = jnp.mean(jra.gaussian_log_prob(jnp.broadcast_to(mean_p, (n, 2)),
                                      log_std_p, x)
                - jra.gaussian_log_prob(jnp.broadcast_to(mean_q, (n, 2)),
                                        log_std_q, x))
  exact = jra.gaussian_kl(mean_p, log_std_p, mean_q, log_std_q)
  np.testing.assert_allclose(mc, exact, atol=5e-3)
  # The samples have the requested moments.
  np.testing.assert_allclose(x.mean(0), mean_p, atol=5e-3)
  np.testing.assert_allclose(x.std(0), jnp.exp(log_std_p), rtol=5e-3)


def test_gaussian_vmap_and_float64():
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    mean = jnp.asarray(rng.normal(size=(4, 2)))
    log_std = jnp.asarray(rng.normal(size=2))
    action = jnp.asarray(rng.normal(size=(4, 2)))
    lp = jax.vmap(jra.gaussian_log_prob, in_axes=(0, None, 0))(
        mean[:, None], log_std, action[:, None])[:, 0]
    assert lp.dtype == jnp.float64
    np.testing.assert_allclose(
        lp, stats.norm.logpdf(action, mean, np.exp(log_std)).sum(-1),
        rtol=1e-12)


def test_gaussian_bad_input():
  with pytest.raises(ValueError, match="log_std"):
    jra.gaussian_log_prob(jnp.zeros((4, 3)), jnp.zeros(2), jnp.zeros((4, 3)))
  with pytest.raises(ValueError, match="action"):
    jra.gaussian_log_prob(jnp.zeros((4, 3)), jnp.zeros(3), jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="mean"):
    jra.gaussian_entropy(jnp.zeros(()), jnp.zeros(()))
