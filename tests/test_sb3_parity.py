"""Parity with Stable-Baselines3 and sb3-contrib: GAE, PPO's loss terms, TRPO.

Each test calls the peers' own code (the installed ``stable_baselines3`` and
``sb3_contrib`` packages, the ``test`` extra) on the same data as ours and
converts the conventions where they differ (``docs/agents.md``, "Conventions
against Stable-Baselines3"). A deliberately wrong variant of ours is checked
to fail each comparison, so no test passes vacuously.
"""

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_align as jr
from jaxrl_align import losses
from jaxrl_align import normalization

th = pytest.importorskip("torch")
sb3 = pytest.importorskip("stable_baselines3")
buffers = pytest.importorskip("stable_baselines3.common.buffers")
sb3_logger = pytest.importorskip("stable_baselines3.common.logger")


def _rollout(seed, t, n):
  """Random ``[T, N]`` rollout with terminations and time-limit truncations.

  ``next_value[t] = value[t+1]`` inside an episode; after a termination or a
  truncation it is the value of the true final observation (zero does not
  matter after a termination: nothing bootstraps from it).
  """
  rng = np.random.default_rng(seed)
  reward = rng.normal(size=(t, n))
  value = rng.normal(size=(t, n))
  final_value = rng.normal(size=(t, n))  # V(final observation) at an episode end
  last_value = rng.normal(size=n)        # V(s_T) after the rollout
  end = rng.random((t, n))
  terminated = end < 0.1
  truncated = (end >= 0.1) & (end < 0.2)
  terminated[-1, 0], truncated[-1, 0] = False, True  # cut at the rollout's end
  terminated[-1, 1], truncated[-1, 1] = True, False
  done = terminated | truncated
  next_value = np.concatenate([value[1:], last_value[None]], axis=0)
  next_value = np.where(done, final_value, next_value)
  return reward, value, next_value, terminated, truncated, last_value


def _sb3_gae(reward, value, next_value, terminated, truncated, last_value,
             gamma, lam, dtype):
  """SB3's ``RolloutBuffer.compute_returns_and_advantage``
  (``stable_baselines3/common/buffers.py``) on the same rollout.

  The buffer is filled as ``OnPolicyAlgorithm.collect_rollouts``
  (``stable_baselines3/common/on_policy_algorithm.py``) fills it: one
  ``done = terminated or truncated`` flag, stored as the next step's
  ``episode_start``, and on a truncation ``γ·V(final observation)`` added
  to the step's reward.
  """
  t, n = reward.shape
  buf = buffers.RolloutBuffer(
      t, gym.spaces.Box(-1.0, 1.0, (1,)), gym.spaces.Discrete(2),
      gae_lambda=lam, gamma=gamma, n_envs=n)
  done = terminated | truncated
  buf.rewards = (reward + gamma * truncated * next_value).astype(dtype)
  buf.values = value.astype(dtype)
  buf.episode_starts = np.concatenate(
      [np.zeros((1, n)), done[:-1]], axis=0).astype(dtype)
  buf.advantages = np.zeros((t, n), dtype)
  last = np.where(truncated[-1], 0.0, last_value).astype(dtype)
  buf.compute_returns_and_advantage(th.as_tensor(last), done[-1])
  return buf.advantages, buf.returns


@pytest.mark.parametrize("variant", ["ours", "broken"])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-6),
                                       (np.float64, 1e-12)])
def test_gae_equals_sb3_rollout_buffer(dtype, tol, variant):
  t, n, gamma, lam = 64, 6, 0.99, 0.95
  reward, value, next_value, terminated, truncated, last_value = _rollout(
      0, t, n)
  assert terminated.any() and truncated.any() and terminated[-1].any()
  want_adv, want_ret = _sb3_gae(reward, value, next_value, terminated,
                                truncated, last_value, gamma, lam, dtype)
  # The broken variant treats a time limit as a termination (no bootstrap).
  term = terminated | truncated if variant == "broken" else terminated
  with jax.enable_x64(dtype == np.float64):
    args = [jnp.asarray(x.astype(dtype)) for x in (reward, value, next_value)]
    gae = jax.jit(lambda r, v, nv, d, c: jr.gae(r, v, nv, d, c, gamma=gamma,
                                                lam=lam))
    adv, ret = gae(*args, term, truncated)
    # vmap over the environments (axis 1) gives the same numbers.
    adv_v, _ = jax.vmap(gae, in_axes=1, out_axes=1)(*args, term, truncated)
    assert adv.dtype == dtype
  close = (np.allclose(adv, want_adv, rtol=tol, atol=tol)
           and np.allclose(ret, want_ret, rtol=tol, atol=tol)
           and np.allclose(adv_v, want_adv, rtol=tol, atol=tol))
  assert close == (variant == "ours"), np.abs(adv - want_adv).max()


def _fill(buf, model, rng, noise):
  """Fills an SB3 rollout buffer with random observations and actions; the
  stored log-probabilities and values are the policy's own plus ``noise``
  (as if collected by an older policy), so ratios and clipping are active.
  """
  t, n = buf.buffer_size, buf.n_envs
  obs = rng.normal(size=(t, n) + buf.obs_shape).astype(np.float32)
  action = rng.integers(0, model.action_space.n, size=(t, n, 1))
  with th.no_grad():
    value, log_prob, _ = model.policy.evaluate_actions(
        th.as_tensor(obs.reshape(t * n, -1)),
        th.as_tensor(action.reshape(-1)))
  buf.observations[:] = obs
  buf.actions[:] = action
  buf.log_probs[:] = (log_prob.numpy().reshape(t, n)
                      + noise * rng.normal(size=(t, n)))
  buf.values[:] = value.numpy().reshape(t, n) + noise * rng.normal(size=(t, n))
  buf.advantages[:] = rng.normal(size=(t, n)) + 0.3
  buf.returns[:] = rng.normal(size=(t, n))
  buf.full, buf.generator_ready = True, False


def _flat(x):
  return jnp.asarray(np.asarray(x, np.float32).reshape(-1))


@pytest.mark.parametrize("variant", ["ours", "max_form", "ddof0"])
def test_ppo_loss_terms_equal_sb3_ppo_train(variant):
  """SB3's ``PPO.train`` (``stable_baselines3/ppo/ppo.py``) for one epoch of
  one minibatch logs its loss terms at the incoming weights; ours at the
  same log-probabilities, values and entropies give the same numbers.

  Conventions converted (docs/agents.md): SB3's value loss is the MSE, ours
  ½·MSE; SB3 clips the value prediction (our ``form="prediction"``); SB3
  whitens the advantages with ``ddof=1``. The ``max_form`` and ``ddof0``
  variants keep our defaults and must not match.
  """
  t, clip, clip_vf = 64, 0.2, 0.3
  model = sb3.PPO("MlpPolicy", "CartPole-v1", n_steps=t, batch_size=t,
                  n_epochs=1, clip_range=clip, clip_range_vf=clip_vf,
                  policy_kwargs=dict(net_arch=[16]), seed=0, device="cpu")
  model.set_logger(sb3_logger.Logger(None, []))
  buf = model.rollout_buffer
  _fill(buf, model, np.random.default_rng(1), noise=0.3)
  with th.no_grad():
    value, log_prob, entropy = model.policy.evaluate_actions(
        th.as_tensor(buf.observations.reshape(t, -1)),
        th.as_tensor(buf.actions.reshape(-1)))
  model.train()
  logged = model.logger.name_to_value

  def terms(log_prob, old_log_prob, advantage, value, old_value, target,
            entropy):
    advantage = normalization.whiten(advantage,
                                     ddof=0 if variant == "ddof0" else 1)
    form = "max" if variant == "max_form" else "prediction"
    return {
        "policy_gradient_loss": losses.ppo_clip_loss(
            log_prob, old_log_prob, advantage, clip_eps=clip),
        "value_loss": 2 * losses.clipped_value_loss(
            value, old_value, target, clip_eps=clip_vf, form=form),
        "entropy_loss": losses.entropy_loss(entropy),
        "approx_kl": losses.approx_kl(log_prob, old_log_prob),
        "clip_fraction": losses.clip_fraction(log_prob, old_log_prob,
                                              clip_eps=clip)}

  ours = jax.jit(terms)(
      _flat(log_prob), _flat(buf.log_probs), _flat(buf.advantages),
      _flat(value), _flat(buf.values), _flat(buf.returns), _flat(entropy))
  assert 0 < logged["train/clip_fraction"] < 1  # clipping is exercised
  forms = [losses.clipped_value_loss(
      _flat(value), _flat(buf.values), _flat(buf.returns), clip_eps=clip_vf,
      form=form) for form in ("max", "prediction")]
  assert abs(forms[0] - forms[1]) > 1e-3  # the clipping forms differ here
  close = {k: np.isclose(float(v), logged["train/" + k], rtol=1e-5, atol=1e-6)
           for k, v in ours.items()}
  if variant == "ours":
    assert all(close.values()), (
        {k: (float(v), logged["train/" + k]) for k, v in ours.items()})
  else:
    assert not all(close.values())
