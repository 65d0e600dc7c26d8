"""Functional environment wrappers: pure, jittable, vmappable.

Two levels, both with gymnax 1.x's six-value API
``obs, state, reward, terminated, truncated, info = env.step(key, state,
action, params)``:

* :class:`Env`, one environment: auto-reset in the same step that keeps the
  true successor in ``info["final_observation"]``, episode statistics, and
  action clipping to the box (the caller keeps its unclipped action for its
  log-prob). Built on gymnax's ``step_env`` / ``reset_env``.
* :class:`VecEnv`, ``num_envs`` copies stepped as one batch with one key;
  :class:`NormalizeObservation` and :class:`ScaleReward` wrap a
  :class:`VecEnv` so their running statistics are shared by all copies.
* :class:`Given`, a vector env stepped elsewhere (on the host): its step
  returns the :class:`HostStep` passed as its params, so the same two
  wrappers, with the same code, normalise environments stepped by
  Gymnasium (:mod:`jaxrl_align.host.stepping`).

Wrapper objects hold only static configuration and are hashable, so they can
be closed over or passed as static arguments; all changing data is in the
returned state (NamedTuples of arrays).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from gymnax.environments import spaces

from jaxrl_align import _checks
from jaxrl_align import normalization
from jaxrl_align.envs import registry

Array = jax.Array


class EnvState(NamedTuple):
  """State of one :class:`Env`.

  Attributes:
    inner: the gymnax state.
    episode_return: scalar float32, undiscounted return so far this episode.
    episode_length: scalar int32, steps so far this episode.
  """
  inner: Any
  episode_return: Array
  episode_length: Array


@dataclasses.dataclass(frozen=True, eq=False)
class Env:
  """One auto-resetting JAX-native environment.

  ``step`` returns, besides the gymnax values, an ``info`` dict with
  ``final_observation`` (the true successor ``s_{t+1}``, before any reset),
  ``episode_return`` and ``episode_length`` (of the episode that ended at
  this step, 0 elsewhere) and ``invalid_action``.

  Out-of-range discrete actions: a concrete (host) action raises
  ``ValueError``; inside ``jit`` the values cannot be checked before running,
  so an invalid action makes that step's observation and reward NaN and sets
  ``info["invalid_action"]``, rather than being silently clamped.

  Attributes:
    env_id: the Gymnasium id.
    gymnax_env: the underlying gymnax environment.
    clip_action: clip continuous actions to the action box before stepping.
  """
  env_id: str
  gymnax_env: Any
  clip_action: bool = True

  def __hash__(self):
    return hash((self.env_id, id(self.gymnax_env), self.clip_action))

  def action_space(self, params) -> spaces.Space:
    return self.gymnax_env.action_space(params)

  def observation_space(self, params) -> spaces.Space:
    return self.gymnax_env.observation_space(params)

  def _check_action(self, action, params):
    space = self.action_space(params)
    shape = tuple(space.shape)
    if jnp.shape(action) != shape:
      raise ValueError(f"{self.env_id}: `action` must have shape {shape} for "
                       f"one env, got {jnp.shape(action)}.")
    dtype = jnp.result_type(action)
    if isinstance(space, spaces.Discrete):
      if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"{self.env_id}: `action` must be an integer in "
                         f"[0, {space.n}), got dtype {dtype}.")
      if _checks.is_concrete(action) and not 0 <= int(action) < space.n:
        raise ValueError(f"{self.env_id}: `action` must be in [0, {space.n}), "
                         f"got {int(action)}.")
      return action, (action < 0) | (action >= space.n)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(f"{self.env_id}: `action` must be floating point, got "
                       f"dtype {dtype}.")
    if self.clip_action:
      action = jnp.clip(action, space.low, space.high)
    return action, jnp.zeros((), bool)

  def reset(self, key: Array, params) -> tuple[Array, EnvState]:
    """Starts an episode.

    Args:
      key: PRNG key.
      params: gymnax params (from :func:`jaxrl_align.envs.make`).

    Returns:
      ``(obs [*obs_shape], EnvState)``.
    """
    with registry.foreign_numerics():
      obs, inner = self.gymnax_env.reset_env(key, params)
    # gymnax's Python-int fields (``time``) are weakly typed; a restored
    # checkpoint's are not, and jit would compile every program that takes
    # the state a second time after a resume: the same dtypes, made strong
    inner = jax.tree.map(lambda x: jax.lax.convert_element_type(
        x, jnp.asarray(x).dtype), inner)
    return obs, EnvState(inner, jnp.zeros((), jnp.float32),
                         jnp.zeros((), jnp.int32))

  @property
  def stochastic_step(self) -> bool:
    """Whether gymnax's ``step_env`` draws random numbers (Acrobot's torque
    noise); the others are deterministic given state and action."""
    return self.env_id in registry.STOCHASTIC_STEP

  def step(self, key: Array, state: EnvState, action: Array, params):
    """One transition, resetting in the same step when the episode ends.

    Args:
      key: PRNG key.
      state: :class:`EnvState`.
      action: ``[]`` int for discrete tasks, ``[action_dim]`` float for
        continuous ones.
      params: gymnax params.

    Returns:
      ``(obs, state, reward, terminated, truncated, info)``: ``obs`` is the
      next episode's first observation when this one ended;
      ``info["final_observation"]`` is always the true successor.
    """
    step_key, reset_key = (jax.random.split(key) if self.stochastic_step
                           else (key, key))
    stepped = self._advance(step_key, state, action, params)
    with registry.foreign_numerics():
      reset = self.gymnax_env.reset_env(reset_key, params)
    return self._merge(stepped, reset)

  def _advance(self, key, state, action, params):
    """The transition to the true successor, before any reset."""
    env_action, invalid = self._check_action(action, params)
    with registry.foreign_numerics():
      next_obs, inner, reward, terminated, _ = self.gymnax_env.step_env(
          key, state.inner, env_action, params)
      truncated = self.gymnax_env.is_truncated(inner, params)
    reward = jnp.asarray(reward, jnp.float32)
    next_obs = jnp.where(invalid, jnp.full_like(next_obs, jnp.nan), next_obs)
    reward = jnp.where(invalid, jnp.float32(jnp.nan), reward)
    stats = EnvState(inner, state.episode_return + reward,
                     state.episode_length + 1)
    return (next_obs, stats, reward, jnp.asarray(terminated, bool),
            jnp.asarray(truncated, bool), invalid)

  @staticmethod
  def _merge(stepped, reset):
    """Swaps in the reset where the episode ended; builds ``info``."""
    next_obs, stats, reward, terminated, truncated, invalid = stepped
    reset_obs, reset_inner = reset
    done = terminated | truncated
    new_state = EnvState(
        inner=jax.tree.map(lambda r, s: jnp.where(done, r, s), reset_inner,
                           stats.inner),
        episode_return=jnp.where(done, 0.0, stats.episode_return),
        episode_length=jnp.where(done, 0, stats.episode_length))
    info = {
        "final_observation": next_obs,
        "episode_return": jnp.where(done, stats.episode_return, 0.0),
        "episode_length": jnp.where(done, stats.episode_length, 0),
        "invalid_action": invalid,
    }
    obs = jnp.where(done, reset_obs, next_obs)
    return obs, new_state, reward, terminated, truncated, info


@dataclasses.dataclass(frozen=True)
class VecEnv:
  """``num_envs`` independent copies of an :class:`Env`, one key per step.

  Arrays gain a leading ``[num_envs]`` axis: ``obs [N, *obs_shape]``,
  ``action [N, *action_shape]``, ``reward/terminated/truncated [N]``.
  """
  env: Env
  num_envs: int

  def __post_init__(self):
    _checks.check_positive_int("num_envs", self.num_envs)

  @property
  def env_id(self) -> str:
    return self.env.env_id

  def action_space(self, params) -> spaces.Space:
    """The space of one env's action."""
    return self.env.action_space(params)

  def observation_space(self, params) -> spaces.Space:
    """The space of one env's observation."""
    return self.env.observation_space(params)

  def reset(self, key: Array, params):
    keys = jax.random.split(key, self.num_envs)
    return jax.vmap(self.env.reset, in_axes=(0, None))(keys, params)

  def obs_stats(self, state):
    """The observation statistics in a state of this wrapper stack: none
    here (see :class:`NormalizeObservation`)."""
    del state
    return None

  def step(self, key: Array, state, action: Array, params):
    expected = (self.num_envs,) + tuple(self.env.action_space(params).shape)
    if jnp.shape(action) != expected:
      raise ValueError(f"{self.env.env_id}: `action` must have shape "
                       f"{expected} for {self.num_envs} envs, got "
                       f"{jnp.shape(action)}.")
    env = self.env
    if env.stochastic_step:
      key, step_key = jax.random.split(key)
      step_keys, key_axis = jax.random.split(step_key, self.num_envs), 0
    else:  # step_env ignores its key: no per-env keys to make
      step_keys, key_axis = key, None
    stepped = jax.vmap(env._advance, in_axes=(key_axis, 0, 0, None))(
        step_keys, state, action, params)
    done = stepped[3] | stepped[4]

    # Random numbers for resets are only drawn in steps where some episode
    # ended (outside any outer vmap, which turns the cond into a select).
    def _resets():
      keys = jax.random.split(key, self.num_envs)
      with registry.foreign_numerics():
        return jax.vmap(env.gymnax_env.reset_env, in_axes=(0, None))(
            keys, params)

    def _no_resets():
      return stepped[0], stepped[1].inner

    reset = jax.lax.cond(jnp.any(done), _resets, _no_resets)
    return jax.vmap(env._merge)(stepped, reset)


class HostStep(NamedTuple):
  """One step of ``N`` environments stepped outside JAX, as arrays.

  Attributes:
    obs: ``[N, *obs_shape]``, the observation after the step (the reset
      one where an episode ended).
    reward: ``[N]``.
    terminated: ``[N]`` bool.
    truncated: ``[N]`` bool.
    final_observation: ``[N, *obs_shape]``, the true successor (the final
      observation where an episode ended).
  """
  obs: Array
  reward: Array
  terminated: Array
  truncated: Array
  final_observation: Array


class HostRollout(NamedTuple):
  """``T`` steps of ``N`` environments stepped outside JAX, as the
  environments gave them, before any wrapper: what a learner replays
  through its wrappers (over :class:`Given`) into a
  :class:`~jaxrl_align.envs.Trajectory`
  (:class:`~jaxrl_align.learner.Stepping`'s ``replay``).

  Attributes:
    obs: ``[N, *obs_shape]``, the observations the first action was chosen
      on, as the learner saw them (normalised by its last replay or
      restart).
    action: ``[T, N, ...]``, as the actor sampled it (unclipped).
    steps: a :class:`HostStep` of ``[T, N, ...]`` arrays: each step's
      observations (the reset ones where an episode ended), rewards,
      flags and true successors, raw.
    episode_return: ``[T, N]`` float32, the return of the episode that
      ended at the step (0 where none ended).
    episode_length: ``[T, N]`` int32, its length (0 where none ended).
  """
  obs: Array
  action: Array
  steps: HostStep
  episode_return: Array
  episode_length: Array


@dataclasses.dataclass(frozen=True)
class Given:
  """A vector env whose data comes from outside: ``reset(key, obs)``
  returns ``obs``; ``step(key, state, action, step)`` returns the
  :class:`HostStep` ``step`` in the six-value API (the action is ignored:
  the step was taken elsewhere). Its state is ``None``. Wrapped in
  :class:`NormalizeObservation` and :class:`ScaleReward`, it applies their
  exact arithmetic to environments stepped on the host."""

  def obs_stats(self, state) -> None:
    del state
    return None

  def reset(self, key: Array, obs: Array):
    del key
    return obs, None

  def restart(self, state, obs: Array):
    del state
    return obs, None

  def step(self, key: Array, state, action, step: HostStep):
    del key, state, action
    return (step.obs, None, step.reward, step.terminated, step.truncated,
            {"final_observation": step.final_observation})


class NormalizeObservationState(NamedTuple):
  """Inner vector-env state and the shared observation statistics."""
  inner: Any
  obs_stats: normalization.RunningMeanStd


@dataclasses.dataclass(frozen=True)
class NormalizeObservation:
  """Normalises observations by running statistics shared over all envs.

  ``obs`` and ``info["final_observation"]`` are normalised with the same
  statistics, updated (when ``update_stats``) with each step's ``obs`` batch
  before normalising, and clipped to ``[-clip, clip]``.
  """
  env: Any
  clip: float = 10.0
  update_stats: bool = True

  def __getattr__(self, name):
    if name == "env":  # not yet set (copying, unpickling)
      raise AttributeError(name)
    return getattr(self.env, name)

  def _normalize(self, stats, x):
    return normalization.normalize(stats, x, clip=self.clip)

  def obs_stats(self, state: NormalizeObservationState):
    """The running observation statistics held in ``state``."""
    return state.obs_stats

  def reset(self, key: Array, params):
    obs, inner = self.env.reset(key, params)
    stats = normalization.running_mean_std_init(obs.shape[1:], obs.dtype)
    if self.update_stats:
      stats = normalization.running_mean_std_update(stats, obs)
    return self._normalize(stats, obs), NormalizeObservationState(inner, stats)

  def restart(self, state: NormalizeObservationState, obs: Array):
    """A reset whose observations ``obs`` came from outside (a
    :class:`Given` inside): the statistics in ``state`` are kept and, as in
    :meth:`reset`, updated with ``obs`` before normalising it."""
    obs, inner = self.env.restart(state.inner, obs)
    stats = state.obs_stats
    if self.update_stats:
      stats = normalization.running_mean_std_update(stats, obs)
    return self._normalize(stats, obs), NormalizeObservationState(inner, stats)

  def step(self, key: Array, state: NormalizeObservationState, action, params):
    obs, inner, reward, terminated, truncated, info = self.env.step(
        key, state.inner, action, params)
    stats = state.obs_stats
    if self.update_stats:
      stats = normalization.running_mean_std_update(stats, obs)
    info = dict(info, final_observation=self._normalize(
        stats, info["final_observation"]))
    return (self._normalize(stats, obs), NormalizeObservationState(inner, stats),
            reward, terminated, truncated, info)


class ScaleRewardState(NamedTuple):
  """Inner state, per-env discounted return, shared return statistics."""
  inner: Any
  discounted_return: Array
  return_stats: normalization.RunningMeanStd


@dataclasses.dataclass(frozen=True)
class ScaleReward:
  """Divides rewards by the running std of the discounted return.

  Each env keeps ``G ← γ G + r`` (reset to 0 after either termination or
  truncation); the std of ``G`` over all envs and steps scales the reward,
  which is then clipped to ``[-clip, clip]``. Use the learner's own ``γ``.
  ``info["raw_reward"]`` keeps the unscaled reward.
  """
  env: Any
  gamma: float = 0.99
  clip: float = 10.0
  update_stats: bool = True

  def __post_init__(self):
    _checks.check_scalar_in_range("gamma", self.gamma, 0.0, 1.0)

  def __getattr__(self, name):
    if name == "env":  # not yet set (copying, unpickling)
      raise AttributeError(name)
    return getattr(self.env, name)

  def obs_stats(self, state: ScaleRewardState):
    """The wrapped stack's observation statistics (or None)."""
    return self.env.obs_stats(state.inner)

  def reset(self, key: Array, params):
    obs, inner = self.env.reset(key, params)
    n = obs.shape[0]
    return obs, ScaleRewardState(inner, jnp.zeros((n,), jnp.float32),
                                 normalization.running_mean_std_init(()))

  def restart(self, state: ScaleRewardState, obs: Array):
    """A reset whose observations ``obs`` came from outside (a
    :class:`Given` inside): every env's discounted return starts again at
    0, as in :meth:`reset`; the return statistics in ``state`` are kept."""
    obs, inner = self.env.restart(state.inner, obs)
    return obs, ScaleRewardState(inner, jnp.zeros_like(
        state.discounted_return), state.return_stats)

  def step(self, key: Array, state: ScaleRewardState, action, params):
    obs, inner, reward, terminated, truncated, info = self.env.step(
        key, state.inner, action, params)
    ret = state.discounted_return * jnp.float32(self.gamma) + reward
    stats = state.return_stats
    if self.update_stats:
      stats = normalization.running_mean_std_update(stats, ret)
    scaled = normalization.normalize(stats, reward, center=False,
                                     clip=self.clip)
    done = terminated | truncated
    ret = jnp.where(done, jnp.zeros_like(ret), ret)
    info = dict(info, raw_reward=reward)
    return (obs, ScaleRewardState(inner, ret, stats), scaled, terminated,
            truncated, info)

