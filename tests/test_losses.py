"""Policy and value losses, KL estimators and diagnostics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_align as jra

# Four samples covering the four cases of the clipped objective, ε = 0.2:
#   ρ = 1.5, A = +1: min(1.5, 1.2) = 1.2     (clipped above, no gradient)
#   ρ = 0.5, A = +1: min(0.5, 0.8) = 0.5     (unclipped)
#   ρ = 1.5, A = -1: min(-1.5, -1.2) = -1.5  (unclipped)
#   ρ = 0.5, A = -1: min(-0.5, -0.8) = -0.8  (clipped below, no gradient)
# Mean surrogate = (1.2 + 0.5 - 1.5 - 0.8) / 4 = -0.15, so the loss is 0.15.
RATIO = np.array([1.5, 0.5, 1.5, 0.5], np.float32)
ADV = np.array([1.0, 1.0, -1.0, -1.0], np.float32)
OLD_LP = np.array([-1.0, -2.0, -0.5, -0.1], np.float32)
LP = OLD_LP + np.log(RATIO)


def test_ppo_clip_loss_hand_values_and_gradient():
  loss = jax.jit(lambda lp: jra.ppo_clip_loss(lp, OLD_LP, ADV, clip_eps=0.2))
  np.testing.assert_allclose(loss(LP), 0.15, rtol=1e-5)
  # d loss / d log π_i = -ρ_i A_i / N where unclipped, 0 where clipped:
  # [0, -(0.5)(1)/4, -(1.5)(-1)/4, 0].
  grad = jax.grad(loss)(jnp.asarray(LP))
  np.testing.assert_allclose(grad, [0.0, -0.5 / 4, 1.5 / 4, 0.0], rtol=1e-5,
                             atol=1e-7)
  # With a mask of the first two: -(1.2 + 0.5) / 2.
  masked = jra.ppo_clip_loss(LP, OLD_LP, ADV, clip_eps=0.2,
                             mask=np.array([True, True, False, False]))
  np.testing.assert_allclose(masked, -0.85, rtol=1e-5)


def test_ppo_clip_loss_matches_numpy_on_random_batches():
  rng = np.random.default_rng(0)
  lp = rng.normal(size=(16, 8)).astype(np.float32) * 0.3
  old = rng.normal(size=(16, 8)).astype(np.float32) * 0.3
  adv = rng.normal(size=(16, 8)).astype(np.float32)
  mask = rng.random((16, 8)) < 0.7
  r = np.exp(lp.astype(np.float64) - old)
  surr = np.minimum(r * adv, np.clip(r, 0.9, 1.1) * adv)
  np.testing.assert_allclose(
      jra.ppo_clip_loss(lp, old, adv, clip_eps=0.1, mask=mask),
      -surr[mask].mean(), rtol=1e-5)
  np.testing.assert_allclose(
      jra.clip_fraction(lp, old, clip_eps=0.1, mask=mask),
      (np.abs(r - 1) > 0.1)[mask].mean(), rtol=1e-6)


def test_clip_fraction_hand_values():
  # |ρ - 1| = 0.5 for all four samples: all clipped at ε = 0.2, none at 0.6.
  assert float(jra.clip_fraction(LP, OLD_LP, clip_eps=0.2)) == 1.0
  assert float(jra.clip_fraction(LP, OLD_LP, clip_eps=0.6)) == 0.0


def test_vmap_over_clip_eps():
  eps = jnp.array([0.1, 0.2, 0.6])
  swept = jax.jit(jax.vmap(
      lambda e: jra.ppo_clip_loss(LP, OLD_LP, ADV, clip_eps=e)))(eps)
  for i, e in enumerate([0.1, 0.2, 0.6]):
    np.testing.assert_allclose(
        swept[i], jra.ppo_clip_loss(LP, OLD_LP, ADV, clip_eps=e), rtol=1e-6)
  # At ε = 0.6 nothing is clipped: the loss is -mean(ρA) = -(1.5+0.5-1.5-0.5)/4.
  np.testing.assert_allclose(swept[2], 0.0, atol=1e-6)


def test_kl_estimators_hand_values():
  # log r = log_prob - old_log_prob = log 2:
  #   k1 = -log 2, k2 = (log 2)^2 / 2, k3 = (2 - 1) - log 2.
  lp, old = jnp.array([np.log(2.0)], jnp.float32), jnp.zeros(1)
  np.testing.assert_allclose(jra.kl_k1(lp, old), [-np.log(2)], rtol=1e-6)
  np.testing.assert_allclose(jra.kl_k2(lp, old), [np.log(2) ** 2 / 2],
                             rtol=1e-6)
  np.testing.assert_allclose(jra.kl_k3(lp, old), [1 - np.log(2)], rtol=1e-6)
  np.testing.assert_allclose(jra.approx_kl(lp, old), 1 - np.log(2), rtol=1e-6)


def test_k1_and_k3_are_unbiased_for_kl_old_new():
  # Samples from old = softmax(a); KL(old || new) is known analytically.
  old_logits = jnp.array([0.0, 1.0, -1.0, 0.5])
  new_logits = jnp.array([0.4, 0.6, -0.2, 0.1])
  exact = jra.categorical_kl(old_logits, new_logits)
  n = 400_000
  x = jra.categorical_sample(jax.random.key(0),
                             jnp.broadcast_to(old_logits, (n, 4)))
  old_lp = jra.categorical_log_prob(jnp.broadcast_to(old_logits, (n, 4)), x)
  new_lp = jra.categorical_log_prob(jnp.broadcast_to(new_logits, (n, 4)), x)
  np.testing.assert_allclose(jnp.mean(jra.kl_k1(new_lp, old_lp)), exact,
                             rtol=0.03)
  k3 = jra.kl_k3(new_lp, old_lp)
  np.testing.assert_allclose(jnp.mean(k3), exact, rtol=0.03)
  assert float(jnp.min(k3)) >= 0.0
  # k2 is biased but close for nearby distributions.
  np.testing.assert_allclose(jnp.mean(jra.kl_k2(new_lp, old_lp)), exact,
                             rtol=0.3)


def test_ppo_kl_penalty_loss_hand_values():
  # ρA = [1.5, 0.5, -1.5, -0.5]; kl = [0.1, 0.2, 0.3, 0.4]; β = 2:
  # mean(ρA - β kl) = (0 - 2*1.0) / 4 = -0.5, so the loss is 0.5.
  kl = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
  loss = jax.jit(lambda b: jra.ppo_kl_penalty_loss(LP, OLD_LP, ADV, kl, beta=b))
  np.testing.assert_allclose(loss(2.0), 0.5, rtol=1e-5)
  np.testing.assert_allclose(jax.vmap(loss)(jnp.array([0.0, 2.0])), [0.0, 0.5],
                             atol=1e-6)


def test_value_losses_hand_values():
  value = jnp.array([2.0, 0.0, 1.0])
  old_value = jnp.array([1.0, 0.0, 1.0])
  target = jnp.array([3.0, 1.0, 1.0])
  # Plain: ½ mean([1, 1, 0]) = 1/3.
  np.testing.assert_allclose(jra.value_loss(value, target), 1 / 3, rtol=1e-6)
  # Clipped, ε = 0.5: clipped values [1.5, 0, 1];
  # max((V-R)², (Vc-R)²) = [max(1, 2.25), max(1, 1), 0] -> ½ mean = 3.25/6.
  np.testing.assert_allclose(
      jra.clipped_value_loss(value, old_value, target, clip_eps=0.5),
      3.25 / 6, rtol=1e-6)
  # A large ε is no clipping at all.
  np.testing.assert_allclose(
      jra.clipped_value_loss(value, old_value, target, clip_eps=1e6),
      jra.value_loss(value, target), rtol=1e-6)
  mask = jnp.array([True, False, False])
  np.testing.assert_allclose(jra.value_loss(value, target, mask=mask), 0.5)


def test_clipped_value_loss_prediction_form_is_sb3s():
  # SB3's PPO.train: values_pred = V_old + clamp(V - V_old, -ε, ε), loss
  # F.mse_loss(returns, values_pred); ours is half of it. ε = 0.5 as above:
  # clipped values [1.5, 0, 1], errors² [2.25, 1, 0] -> ½ mean = 3.25/6,
  # where the max form gave the same only because (V_clip-R)² ≥ (V-R)²
  # everywhere; with target 1.2 at the first sample the forms part.
  value = jnp.array([2.0, 0.0, 1.0])
  old_value = jnp.array([1.0, 0.0, 1.0])
  target = jnp.array([1.2, 1.0, 1.0])
  v_clip = np.array([1.5, 0.0, 1.0])
  want = 0.5 * np.mean((v_clip - np.asarray(target)) ** 2)  # 0.09+1+0 / 6
  loss = jax.jit(lambda v, form: jra.clipped_value_loss(
      v, old_value, target, clip_eps=0.5, form=form), static_argnums=1)
  np.testing.assert_allclose(loss(value, "prediction"), want, rtol=1e-6)
  # The max form differs here: max(0.64, 0.09) at the first sample.
  np.testing.assert_allclose(loss(value, "max"), 0.5 * (0.64 + 1) / 3,
                             rtol=1e-6)
  batched = jax.vmap(lambda v: jra.clipped_value_loss(
      v, old_value, target, clip_eps=0.5, form="prediction"))
  np.testing.assert_allclose(batched(jnp.stack([value, value])), [want, want],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="form"):
    jra.clipped_value_loss(value, old_value, target, clip_eps=0.5,
                           form="clip")


def test_entropy_loss_and_masked_mean():
  ent = jnp.array([1.0, 2.0, 3.0])
  np.testing.assert_allclose(jra.entropy_loss(ent), -2.0)
  np.testing.assert_allclose(
      jra.entropy_loss(ent, mask=jnp.array([False, True, True])), -2.5)
  # An empty mask is a zero mean, never NaN.
  assert float(jra.masked_mean(ent, jnp.zeros(3, bool))) == 0.0


def test_losses_under_vmap_over_a_batch_axis():
  rng = np.random.default_rng(1)
  lp, old, adv = (jnp.asarray(rng.normal(size=(3, 10)), jnp.float32)
                  for _ in range(3))
  per_row = jax.vmap(lambda a, b, c: jra.ppo_clip_loss(a, b, c, clip_eps=0.2))
  expected = [jra.ppo_clip_loss(lp[i], old[i], adv[i], clip_eps=0.2)
              for i in range(3)]
  np.testing.assert_allclose(per_row(lp, old, adv), expected, rtol=1e-6)
  v = jax.vmap(jra.value_loss)(lp, old)
  np.testing.assert_allclose(v, [jra.value_loss(lp[i], old[i]) for i in
                                 range(3)], rtol=1e-6)


def test_losses_bad_input():
  z = jnp.zeros(4)
  with pytest.raises(ValueError, match="clip_eps"):
    jra.ppo_clip_loss(z, z, z, clip_eps=0.0)
  with pytest.raises(ValueError, match="clip_eps"):
    jra.clipped_value_loss(z, z, z, clip_eps=-1.0)
  with pytest.raises(ValueError, match="advantage"):
    jra.ppo_clip_loss(z, z, jnp.zeros(3), clip_eps=0.2)
  with pytest.raises(ValueError, match="mask"):
    jra.ppo_clip_loss(z, z, z, clip_eps=0.2, mask=jnp.ones(3, bool))
  with pytest.raises(ValueError, match="beta"):
    jra.ppo_kl_penalty_loss(z, z, z, z, beta=-1.0)
  with pytest.raises(ValueError, match="target"):
    jra.value_loss(z, jnp.zeros((4, 1)))
