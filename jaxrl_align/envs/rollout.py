"""Time-major rollouts of a policy in a vector environment, under ``lax.scan``."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from jaxrl_align import _checks

Array = jax.Array


class Trajectory(NamedTuple):
  """A time-major batch of transitions, ``[T, N, ...]``.

  Attributes:
    obs: ``[T, N, *obs_shape]``, the observation the action was chosen on.
    action: ``[T, N, *action_shape]``, as the policy returned it (unclipped).
    reward: ``[T, N]`` float32 (scaled, if the env scales rewards).
    terminated: ``[T, N]`` bool, the successor is terminal.
    truncated: ``[T, N]`` bool, the episode was cut by the time limit.
    next_obs: ``[T, N, *obs_shape]``, the true successor (the final
      observation when the episode ended, never the reset one).
    extras: what the policy returned besides the action (e.g. ``log_prob``,
      ``value``), each ``[T, N, ...]``.
    episode_return: ``[T, N]`` float32, return of the episode that ended at
      this step (0 where none ended).
    episode_length: ``[T, N]`` int32, its length (0 where none ended).
  """
  obs: Array
  action: Array
  reward: Array
  terminated: Array
  truncated: Array
  next_obs: Array
  extras: dict[str, Array]
  episode_return: Array
  episode_length: Array


class RolloutState(NamedTuple):
  """What a rollout carries from one step to the next.

  Attributes:
    env_state: the vector env's state.
    obs: ``[N, *obs_shape]``, the current observation.
    key: PRNG key for the next steps.
  """
  env_state: Any
  obs: Array
  key: Array


PolicyFn = Callable[[Array, Array], tuple[Array, dict[str, Array]]]


def rollout_init(env, env_params, key: Array) -> RolloutState:
  """Resets a vector env and returns the state a rollout starts from."""
  key, reset_key = jax.random.split(key)
  obs, env_state = env.reset(reset_key, env_params)
  return RolloutState(env_state, obs, key)


def rollout(policy_fn: PolicyFn, env, env_params, state: RolloutState,
            num_steps: int) -> tuple[RolloutState, Trajectory]:
  """Runs ``num_steps`` steps of ``policy_fn`` in a vector env.

  Args:
    policy_fn: ``(key, obs [N, ...]) -> (action [N, ...], extras)`` where
      ``extras`` is a dict of ``[N, ...]`` arrays (log-prob, value, ...).
    env: a :class:`~jaxrl_align.envs.VecEnv` (possibly wrapped).
    env_params: its params.
    state: where to start (:func:`rollout_init`, or a previous rollout's end).
    num_steps: ``T``, a Python int > 0.

  Returns:
    ``(state, Trajectory)`` with ``[T, N, ...]`` fields.
  """
  _checks.check_positive_int("num_steps", num_steps)

  def _env_step(carry: RolloutState, _):
    key, policy_key, env_key = jax.random.split(carry.key, 3)
    action, extras = policy_fn(policy_key, carry.obs)
    obs, env_state, reward, terminated, truncated, info = env.step(
        env_key, carry.env_state, action, env_params)
    transition = Trajectory(
        obs=carry.obs, action=action, reward=reward, terminated=terminated,
        truncated=truncated, next_obs=info["final_observation"],
        extras=extras, episode_return=info["episode_return"],
        episode_length=info["episode_length"])
    return RolloutState(env_state, obs, key), transition

  return jax.lax.scan(_env_step, state, None, length=num_steps)


def rollout_resampled(make_policy_fn: Callable[[Array], PolicyFn], env,
                      env_params, state: RolloutState, num_steps: int,
                      every: int) -> tuple[RolloutState, Trajectory]:
  """:func:`rollout` with the policy rebuilt from a fresh key every
  ``every`` steps: gSDE's exploration matrices, drawn at steps ``0, every,
  2·every, ...`` of each rollout and held in between (SB3's
  ``sde_sample_freq``; ``every = num_steps`` draws once per rollout).

  The keys come from ``state.key``, so the run stays a pure function of
  the rollout state: no matrix needs storing, and a checkpoint taken
  between rollouts resumes bit for bit.

  Args:
    make_policy_fn: ``key -> policy_fn`` (see :func:`rollout`).
    env: a vector env.
    env_params: its params.
    state: where to start.
    num_steps: ``T``, a multiple of ``every``.
    every: steps between draws, a Python int > 0 that divides ``T``.

  Returns:
    ``(state, Trajectory)`` with ``[T, N, ...]`` fields.
  """
  _checks.check_positive_int("every", every)
  _checks.check_positive_int("num_steps", num_steps)
  if num_steps % every:
    raise ValueError(f"`every` ({every}) must divide `num_steps` "
                     f"({num_steps}).")

  def _segment(carry: RolloutState, _):
    key, policy_key = jax.random.split(carry.key)
    return rollout(make_policy_fn(policy_key), env, env_params,
                   carry._replace(key=key), every)

  state, trajectory = jax.lax.scan(_segment, state, None,
                                   length=num_steps // every)
  return state, jax.tree.map(
      lambda x: x.reshape((num_steps,) + x.shape[2:]), trajectory)
