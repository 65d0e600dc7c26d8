"""Environments: JAX-native Gymnasium classic control, Gymnasium's MuJoCo
tasks compiled with MJX (``mjx/Hopper-v5``, optional ``mujoco-mjx``), and
a host adapter.

``env, params = make("CartPole-v1")`` gives one auto-resetting environment
with gymnax 1.x's API; ``make_vec`` gives ``num_envs`` of them as one batch,
optionally with shared observation normalisation and reward scaling.
:class:`GymnasiumVecEnv` steps any Gymnasium id on the host and yields the
same :class:`Trajectory`.
"""

from __future__ import annotations

import difflib
import functools

import gymnasium

from jaxrl_align.envs.gymnasium_adapter import GymnasiumVecEnv
from jaxrl_align.envs.registry import ENV_IDS
from jaxrl_align.envs.registry import PROBE_IDS
from jaxrl_align.envs.registry import make_gymnax
from jaxrl_align.envs.registry import MJX_IDS
from jaxrl_align.envs.rollout import rollout
from jaxrl_align.envs.rollout import rollout_init
from jaxrl_align.envs.rollout import rollout_resampled
from jaxrl_align.envs.rollout import RolloutState
from jaxrl_align.envs.rollout import Trajectory
from jaxrl_align.envs.wrappers import Env
from jaxrl_align.envs.wrappers import EnvState
from jaxrl_align.envs.wrappers import Given
from jaxrl_align.envs.wrappers import HostRollout
from jaxrl_align.envs.wrappers import HostStep
from jaxrl_align.envs.wrappers import NormalizeObservation
from jaxrl_align.envs.wrappers import ScaleReward
from jaxrl_align.envs.wrappers import VecEnv


def make(env_id: str, *, clip_action: bool = True):
  """One auto-resetting JAX-native environment.

  Args:
    env_id: one of ``CartPole-v1``, ``Acrobot-v1``, ``MountainCar-v0``,
      ``MountainCarContinuous-v0``, ``Pendulum-v1``, or of :data:`MJX_IDS`
      (``mjx/Hopper-v5``, ...: needs ``mujoco-mjx``).
    clip_action: clip continuous actions to the action box.

  Returns:
    ``(env, params)``: an :class:`Env` and its gymnax params.

  Raises:
    ValueError: unknown ``env_id`` (the message lists the known ones).
  """
  gymnax_env, params = make_gymnax(env_id)
  return Env(env_id, gymnax_env, clip_action), params


def make_vec(env_id: str, num_envs: int, *, normalize_obs: bool = False,
             scale_reward: bool = False, gamma: float = 0.99,
             clip_obs: float = 10.0, clip_reward: float = 10.0,
             clip_action: bool = True):
  """``num_envs`` environments stepped as one batch, optionally normalised.

  Args:
    env_id: as for :func:`make`.
    num_envs: number of parallel environments, > 0.
    normalize_obs: wrap with :class:`NormalizeObservation` (``clip_obs``).
    scale_reward: wrap with :class:`ScaleReward` (``gamma``, ``clip_reward``).
    gamma: the learner's discount, for reward scaling.
    clip_obs: bound on normalised observations.
    clip_reward: bound on scaled rewards.
    clip_action: clip continuous actions to the action box.

  Returns:
    ``(vec_env, params)``.
  """
  env, params = make(env_id, clip_action=clip_action)
  vec = VecEnv(env, num_envs)
  if normalize_obs:
    vec = NormalizeObservation(vec, clip=clip_obs)
  if scale_reward:
    vec = ScaleReward(vec, gamma=gamma, clip=clip_reward)
  return vec, params


def is_jax_native(env_id: str) -> bool:
  """True for the tasks that run inside ``jit`` (:data:`ENV_IDS`,
  :data:`MJX_IDS` and the probes); any other registered Gymnasium id is
  stepped on the host."""
  return env_id in ENV_IDS or env_id in MJX_IDS or env_id in PROBE_IDS


def gymnasium_id(env_id: str) -> str:
  """The Gymnasium id a task is: ``Hopper-v5`` for ``mjx/Hopper-v5`` (the
  same task, stepped by MJX), the id itself otherwise."""
  return env_id.removeprefix("mjx/") if env_id in MJX_IDS else env_id


def check_env_id(env_id: str) -> None:
  """Raises ``ValueError`` (with the closest known id) unless ``env_id`` is
  JAX-native or a registered Gymnasium id."""
  if is_jax_native(env_id) or env_id in gymnasium.envs.registry:
    return
  close = difflib.get_close_matches(
      str(env_id), list(ENV_IDS + MJX_IDS) + list(gymnasium.envs.registry),
      n=1)
  hint = f" Did you mean {close[0]}?" if close else ""
  raise ValueError(f"Unknown `env_id` {env_id!r}; known ids: "
                   f"{', '.join(ENV_IDS + MJX_IDS)} (JAX-native), or any "
                   f"registered Gymnasium id (stepped on the host).{hint}")


@functools.lru_cache(maxsize=None)
def spaces(env_id: str):
  """``(observation_space, action_space)`` of a task: gymnax's for a
  JAX-native id, the Gymnasium environment's otherwise (which must have a
  ``Box`` observation and a ``Box`` or ``Discrete`` action, as
  :class:`GymnasiumVecEnv` requires).

  Raises:
    ValueError: an unknown id, a missing dependency (the message names the
      package), or spaces the learners do not take.
  """
  if is_jax_native(env_id):
    env, params = make_gymnax(env_id)
    return env.observation_space(params), env.action_space(params)
  check_env_id(env_id)
  try:
    env = gymnasium.make(env_id)
  except gymnasium.error.DependencyNotInstalled as e:
    raise ValueError(f"{env_id}: {e}") from None
  try:
    obs, action = env.observation_space, env.action_space
  finally:
    env.close()
  if not isinstance(obs, gymnasium.spaces.Box):
    raise ValueError(f"{env_id}: observations must be a Box (an array), got "
                     f"{obs}.")
  if not isinstance(action, (gymnasium.spaces.Box, gymnasium.spaces.Discrete)):
    raise ValueError(f"{env_id}: actions must be Discrete or Box, got "
                     f"{action}.")
  return obs, action


__all__ = (
    "check_env_id",
    "ENV_IDS",
    "Env",
    "EnvState",
    "Given",
    "gymnasium_id",
    "GymnasiumVecEnv",
    "HostRollout",
    "HostStep",
    "is_jax_native",
    "make",
    "make_gymnax",
    "make_vec",
    "MJX_IDS",
    "NormalizeObservation",
    "PROBE_IDS",
    "rollout",
    "rollout_init",
    "rollout_resampled",
    "RolloutState",
    "ScaleReward",
    "spaces",
    "Trajectory",
    "VecEnv",
)
