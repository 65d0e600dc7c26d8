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
