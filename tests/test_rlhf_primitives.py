"""The RLHF primitives of floor 1 against float64 NumPy references, exact
enumeration and cross-identities: preference losses (Bradley–Terry, DPO),
the KL-penalised per-token reward and the token/time-major seam,
group-relative advantages (RLOO, GRPO), batch whitening."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_align as jra

RNG = np.random.default_rng(0)


def f32(*shape):
  return jnp.asarray(RNG.normal(size=shape), jnp.float32)


def log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


# ----------------------------------------------------------- preferences


def test_bradley_terry_loss_against_numpy_with_mask():
  c, r = f32(50), f32(50)
  mask = jnp.asarray(RNG.random(50) < 0.7)
  expected = -log_sigmoid(np.float64(c) - np.float64(r))
  np.testing.assert_allclose(jra.bradley_terry_loss(c, r), expected.mean(),
                             rtol=1e-6)
  np.testing.assert_allclose(jra.bradley_terry_loss(c, r, mask=mask),
                             expected[np.asarray(mask)].mean(), rtol=1e-6)
  # Swapping the pair is a different loss (the order is what is learned).
  assert abs(float(jra.bradley_terry_loss(r, c))
             - float(jra.bradley_terry_loss(c, r))) > 1e-3
  with pytest.raises(ValueError, match="rejected_reward"):
    jra.bradley_terry_loss(c, r[:3])


def test_dpo_loss_against_numpy_and_label_smoothing():
  pc, pr, rc, rr = (f32(40) for _ in range(4))
  h = (np.float64(pc) - np.float64(rc)) - (np.float64(pr) - np.float64(rr))
  for beta, eps in ((0.1, 0.0), (0.5, 0.2)):
    expected = -((1 - eps) * log_sigmoid(beta * h)
                 + eps * log_sigmoid(-beta * h)).mean()
    got = jra.dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
  # The policy equal to the reference: ln 2, whatever β.
  np.testing.assert_allclose(jra.dpo_loss(rc, rr, rc, rr, beta=3.0),
                             np.log(2), rtol=1e-6)
  with pytest.raises(ValueError, match="beta"):
    jra.dpo_loss(pc, pr, rc, rr, beta=0.0)
  with pytest.raises(ValueError, match="label_smoothing"):
    jra.dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.5)


def test_dpo_is_bradley_terry_on_the_implicit_reward():
  # Rafailov et al.: DPO is the Bradley–Terry loss of the implicit reward
  # r = β (log π - log π_ref).
  pc, pr, rc, rr = (f32(30) for _ in range(4))
  beta = 0.3
  np.testing.assert_allclose(
      jra.dpo_loss(pc, pr, rc, rr, beta=beta),
      jra.bradley_terry_loss(beta * (pc - rc), beta * (pr - rr)), rtol=1e-6)
  # Its gradient raises the chosen log-probability, lowers the rejected.
  g_c, g_r = jax.grad(lambda a, b: jra.dpo_loss(a, b, rc, rr, beta=beta),
                      argnums=(0, 1))(pc, pr)
  assert np.all(np.asarray(g_c) < 0) and np.all(np.asarray(g_r) > 0)


# ------------------------------------------------- per-token rewards, seam


def _rewards_loop(score, logp, ref, mask, coef, estimator):
  """Column by column, in float64."""
  logp, ref, mask = (np.asarray(x, np.float64) for x in (logp, ref, mask))
  log_r = ref - logp
  kl = {"k1": -log_r, "k2": 0.5 * log_r ** 2,
        "k3": np.expm1(log_r) - log_r}[estimator] * mask
  reward = -coef * kl
  for b in range(mask.shape[1]):
    live = np.flatnonzero(mask[:, b])
    if live.size:
      reward[live[-1], b] += float(score[b])
  return reward, kl


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_penalized_rewards_against_a_loop(estimator):
  t, b = 7, 5
  logp, ref = f32(t, b) - 1.0, f32(t, b) - 1.0
  lengths = np.array([7, 3, 1, 0, 5])
  mask = jnp.asarray(np.arange(t)[:, None] < lengths[None])
  score = f32(b)
  reward, kl = jax.jit(lambda *a: jra.kl_penalized_rewards(
      *a, kl_coef=0.2, estimator=estimator))(score, logp, ref, mask)
  want_r, want_kl = _rewards_loop(score, logp, ref, mask, 0.2, estimator)
  np.testing.assert_allclose(reward, want_r, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(kl, want_kl, rtol=1e-5, atol=1e-6)
  # The return of a response is its score minus the penalty; an empty
  # response (column 3) gets nothing.
  np.testing.assert_allclose(
      np.asarray(reward).sum(0),
      np.where(lengths > 0, np.asarray(score), 0.0)
      - 0.2 * np.asarray(kl).sum(0), rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(reward)[~np.asarray(mask)] == 0)


def test_only_k1_in_the_reward_gives_the_gradient_of_the_kl():
  # One token from a 4-way categorical: expectations by enumeration.
  # E_π[k ∇log π] against ∇KL(π || ref) (and, for k3, the formula the
  # docstring states: ∇KL(π || ref) - ∇KL(ref || π)).
  ref_logits = jnp.array([0.3, -1.0, 0.5, 0.0])
  theta = jnp.array([1.0, 0.2, -0.4, 0.1])
  actions = jnp.arange(4)

  def score_gradient(estimator):
    logp = jax.nn.log_softmax(theta)
    ref = jax.nn.log_softmax(ref_logits)
    _, k = jra.kl_penalized_rewards(jnp.zeros(4), logp[None], ref[None],
                                    jnp.ones((1, 4), bool), kl_coef=1.0,
                                    estimator=estimator)
    grads = jax.vmap(jax.grad(
        lambda th, a: jax.nn.log_softmax(th)[a]), in_axes=(None, 0))(
            theta, actions)
    return jnp.sum(jnp.exp(logp)[:, None] * k[0][:, None] * grads, 0)

  kl = lambda th: jra.categorical_kl(th, ref_logits)  # KL(π || ref)
  reverse = lambda th: jra.categorical_kl(ref_logits, th)  # KL(ref || π)
  np.testing.assert_allclose(score_gradient("k1"), jax.grad(kl)(theta),
                             atol=1e-6)
  np.testing.assert_allclose(score_gradient("k3"),
                             jax.grad(kl)(theta) - jax.grad(reverse)(theta),
                             atol=1e-6)
  assert np.max(np.abs(score_gradient("k3") - jax.grad(kl)(theta))) > 1e-2


def test_the_seam_transposes_and_gae_runs_per_response():
  x = f32(3, 6, 2)  # [B, T, ...]
  np.testing.assert_array_equal(jra.batch_major(jra.time_major(x)), x)
  assert jra.time_major(x).shape == (6, 3, 2)
  # GAE over [B, T] responses through the seam equals GAE row by row.
  reward, value = f32(4, 6), f32(4, 6)
  next_value = jnp.concatenate([value[:, 1:], jnp.zeros((4, 1))], 1)
  end = jnp.zeros((4, 6), bool).at[:, -1].set(True)
  adv, _ = jra.gae(*(jra.time_major(a) for a in (reward, value, next_value,
                                                  end, jnp.zeros_like(end))),
                   gamma=1.0, lam=0.95)
  for row in range(4):
    want, _ = jra.gae(reward[row], value[row], next_value[row], end[row],
                      jnp.zeros(6, bool), gamma=1.0, lam=0.95)
    np.testing.assert_allclose(jra.batch_major(adv)[row], want, rtol=1e-6)


def test_last_step_marks_the_end_of_each_column():
  mask = jnp.array([[1, 1, 0], [1, 0, 0], [0, 1, 0]], bool)
  np.testing.assert_array_equal(
      jra.last_step(mask), [[0, 0, 0], [1, 0, 0], [0, 1, 0]])


# ------------------------------------------------ group-relative advantages


def test_rloo_against_leave_one_out_loop():
  reward = f32(5, 3)
  got = np.asarray(jax.jit(jra.rloo_advantages)(reward), np.float64)
  r = np.asarray(reward, np.float64)
  for g in range(5):
    others = np.delete(r, g, axis=0).mean(0)
    np.testing.assert_allclose(got[g], r[g] - others, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got.sum(0), 0, atol=1e-5)
  np.testing.assert_allclose(got, 5 / 4 * (r - r.mean(0)), rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match="2 samples"):
    jra.rloo_advantages(f32(1, 3))


def test_grpo_against_numpy_ddof1():
  reward = f32(6, 4)
  r = np.asarray(reward, np.float64)
  want = (r - r.mean(0)) / (r.std(0, ddof=1) + 1e-4)
  np.testing.assert_allclose(jra.grpo_advantages(reward), want, rtol=1e-5)
  np.testing.assert_allclose(jra.grpo_advantages(reward, scale=False),
                             r - r.mean(0), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- whiten


def test_whiten_against_numpy_masked_and_unmasked():
  x = f32(30)
  mask = jnp.asarray(RNG.random(30) < 0.6)
  xs = np.asarray(x, np.float64)
  sel = xs[np.asarray(mask)]
  for ddof in (0, 1):
    want = (xs - sel.mean()) / (sel.std(ddof=ddof) + 1e-8)
    np.testing.assert_allclose(jra.whiten(x, mask, ddof=ddof), want,
                               rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      jra.whiten(x, mask, shift_mean=False),
      (xs - sel.mean()) / (sel.std() + 1e-8) + sel.mean(), rtol=1e-5,
      atol=1e-6)
  # Unmasked, it is the expression the learners used, bit for bit.
  np.testing.assert_array_equal(jra.whiten(x), (x - x.mean()) / (x.std()
                                                                + 1e-8))
  with pytest.raises(ValueError, match="ddof"):
    jra.whiten(x, ddof=2)
