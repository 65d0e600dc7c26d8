"""Networks: the QR-free orthogonal init, shapes, and the vmapped-init trap."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxrl_align import heads
from jaxrl_align import networks


@pytest.mark.parametrize("shape", [(64, 64), (4, 64), (64, 2), (7, 3)])
def test_orthogonal_init_is_orthogonal(shape):
  init = networks.orthogonal(2.0)
  for seed in range(20):
    w = np.asarray(init(jax.random.key(seed), shape), np.float64) / 2.0
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
    np.testing.assert_allclose(gram, np.eye(min(shape)), atol=2e-5)


def test_orthogonal_init_has_the_haar_distribution_of_qr_init():
  # Entries of a Haar orthogonal matrix: compare with Flax's QR-based init,
  # run one matrix at a time (unbatched QR is safe).
  ours_init = jax.jit(lambda k: networks.orthogonal()(k, (16, 16)))
  ours = np.concatenate([np.asarray(ours_init(jax.random.key(i))).ravel()
                         for i in range(200)])
  qr_init = jax.jit(lambda k: nn.initializers.orthogonal()(k, (16, 16)))
  theirs = np.concatenate([np.asarray(qr_init(
      jax.random.key(10_000 + i))).ravel() for i in range(200)])
  assert stats.ks_2samp(ours, theirs).pvalue > 1e-3
  assert abs(ours.mean()) < 0.01


def test_actor_critic_shapes():
  obs = jnp.zeros((5, 3))
  disc = networks.ActorCritic(heads.Categorical(2))
  params = disc.init(jax.random.key(0), obs)
  logits, value = disc.apply(params, obs)
  assert logits.shape == (5, 2) and value.shape == (5,)
  cont = networks.ActorCritic(heads.DiagGaussian(1))
  params = heads.DiagGaussian(1).with_log_std(
      cont.init(jax.random.key(0), obs), -0.5)
  (mean, log_std), value = cont.apply(params, obs)
  assert mean.shape == (5, 1) and log_std.shape == (1,) and value.shape == (5,)
  np.testing.assert_allclose(log_std, [-0.5])
  # Policy head scaled 0.01: near-uniform initial policy.
  x = jax.random.normal(jax.random.key(1), (100, 3))
  assert float(jnp.abs(disc.apply(disc.init(jax.random.key(2), x), x)[0]).max()) < 0.1


@pytest.mark.timeout(240)
def test_vmapped_init_never_deadlocks():
  """Regression test for the batched-QR deadlock on 2-core CPUs: many
  jit(vmap(init)) calls over 8 seeds must all finish (the timeout fails the
  test instead of hanging CI)."""
  net = networks.ActorCritic(heads.Categorical(2))
  obs = jnp.zeros((1, 4))
  init = jax.jit(jax.vmap(lambda k: net.init(k, obs)))
  for i in range(30):
    params = init(jax.random.split(jax.random.key(i), 8))
    jax.block_until_ready(params)
  kernel = params["params"]["actor"]["Dense_0"]["kernel"]  # [8, 4, 64]
  assert kernel.shape == (8, 4, 64)
  # fan_in < fan_out: orthonormal rows, scaled by √2; different per seed.
  gram = jnp.einsum("sij,skj->sik", kernel, kernel)
  np.testing.assert_allclose(gram, np.broadcast_to(2 * np.eye(4), (8, 4, 4)),
                             atol=1e-4)
  assert not np.allclose(kernel[0], kernel[1])


@pytest.mark.parametrize("activation,fn", [("tanh", np.tanh),
                                           ("relu", lambda x: np.maximum(x, 0))])
def test_actor_critic_forward_equals_a_numpy_loop(activation, fn):
  """Both MLPs, each activation, against float64 NumPy on their own
  parameters (SB3's ``activation_fn``); the other activation does not."""
  net = networks.ActorCritic(heads.Categorical(3), hidden=(8, 5),
                             ortho_init=False, activation=activation)
  obs = np.asarray(jax.random.normal(jax.random.key(0), (6, 4)))
  params = net.init(jax.random.key(1), obs)
  logits, value = jax.jit(net.apply)(params, obs)

  def forward(p, act):
    x = obs.astype(np.float64)
    layers = sorted(p, key=lambda name: int(name.split("_")[-1]))
    for i, name in enumerate(layers):
      x = x @ np.asarray(p[name]["kernel"], np.float64) + np.asarray(
          p[name]["bias"], np.float64)
      if i < len(layers) - 1:
        x = act(x)
    return x

  p = params["params"]
  np.testing.assert_allclose(logits, forward(p["actor"], fn), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(value, forward(p["critic"], fn)[:, 0],
                             rtol=1e-5, atol=1e-6)
  other = np.tanh if activation == "relu" else (lambda x: np.maximum(x, 0))
  assert np.abs(np.asarray(logits) - forward(p["actor"], other)).max() > 1e-3
