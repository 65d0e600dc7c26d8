"""A task: what an environment id stands for, built once and handed down.

``task = tasks.make("CartPole-v1")`` builds, once, everything an id fixes:
the environment and its params (JAX-native ids), the observation and
action spaces (Gymnasium's own for an id stepped on the host), whether it
runs inside ``jit``, and from them the policy (:meth:`Task.policy`), the
training env's wrapper stack (:meth:`Task.training_env`, and
:meth:`Task.host_env` for an id stepped on the host) and how an
evaluation reads that stack's observation statistics
(:meth:`Task.observation_normalizer`). The boundary (the command line,
:func:`jaxrl_align.host.stepping.train`, a user's code) builds the task and
passes it down, as brax passes an environment to its trainer; a config
holds only the id, and building one never makes a Gymnasium environment.
``train``, ``init``, ``update`` and ``evaluate`` take the task as an
optional last argument (built from ``config.env_id`` when omitted).

A task is a pytree without leaves (all of it is static), so it can be an
argument of a jitted or vmapped function; two tasks are equal when they
have the same id, stepping, environment type, params and spaces, so
programs compiled for one serve the other.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from jaxrl_align import envs
from jaxrl_align import normalization
from jaxrl_align.agents import policy as policy_lib

OBS_CLIP = 10.0
REWARD_CLIP = 10.0


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
  """An environment id, resolved once.

  Attributes:
    env_id: the id.
    observation_space: one observation's space (gymnax's for a JAX-native
      id, Gymnasium's otherwise).
    action_space: one action's space.
    env: the JAX-native :class:`~jaxrl_align.envs.Env` (auto-resetting,
      one copy), or None when the task is stepped on the host.
    env_params: its gymnax params (None on the host).
  """
  env_id: str
  observation_space: Any
  action_space: Any
  env: Any = None
  env_params: Any = None

  @property
  def jax_native(self) -> bool:
    """True when the environment runs inside ``jit`` (else: on the host,
    through :class:`~jaxrl_align.envs.GymnasiumVecEnv`)."""
    return self.env is not None

  def _identity(self):
    kind = None if self.env is None else (type(self.env.gymnax_env),
                                          self.env.clip_action)
    params = tuple((x.dtype.str, x.shape, x.tobytes()) for x in map(
        np.asarray, jax.tree.leaves(self.env_params)))
    return (self.env_id, kind, params, repr(self.observation_space),
            repr(self.action_space))

  def __eq__(self, other) -> bool:
    return isinstance(other, Task) and self._identity() == other._identity()

  def __hash__(self) -> int:
    return hash(self._identity())

  def policy(self, config) -> policy_lib.Policy:
    """The actor-critic for this task's spaces and the config's network
    fields (:func:`~jaxrl_align.agents.policy.make_policy`)."""
    return policy_lib.make_policy(config, self.observation_space,
                                  self.action_space)

  def vec_env(self, num_envs: int) -> envs.VecEnv:
    """``num_envs`` copies of the JAX-native env, without wrappers."""
    if not self.jax_native:
      raise ValueError(
          f"{self.env_id} is not a JAX-native task, so it cannot be stepped "
          f"inside `train` or `update`: train it on the host "
          f"(jaxrl_align.host.stepping, or `jaxrl-align train --env "
          f"{self.env_id}`).")
    return envs.VecEnv(self.env, num_envs)

  def training_env(self, config):
    """The training vector env of ``config.num_envs`` copies, with the
    config's wrapper stack (:meth:`wrap`)."""
    return self.wrap(config, self.vec_env(config.num_envs))

  def host_env(self, config):
    """The config's wrapper stack (:meth:`wrap`) over
    :class:`~jaxrl_align.envs.Given`: what a run stepped on the host feeds
    each Gymnasium step and reset through (``step`` and ``restart``), so
    its observations and rewards are normalised by the JAX-native
    wrappers' own code, their statistics in the learner state."""
    return self.wrap(config, envs.Given())

  @staticmethod
  def wrap(config, env):
    """``env`` inside the config's wrappers: observation normalisation
    (clipped at :data:`OBS_CLIP`), then reward scaling (``config.gamma``,
    clipped at :data:`REWARD_CLIP`); SB3's ``VecNormalize`` order."""
    if config.normalize_obs:
      env = envs.NormalizeObservation(env, clip=OBS_CLIP)
    if config.scale_reward:
      env = envs.ScaleReward(env, gamma=config.gamma, clip=REWARD_CLIP)
    return env

  def observation_normalizer(self, config, env_state) -> Callable:
    """``obs -> obs`` as the training env sees it: normalised with the
    statistics held in ``env_state`` (the training env's state, or, for a
    task stepped on the host, the :meth:`host_env` state; frozen), or
    unchanged when the config does not normalise observations."""
    if not config.normalize_obs:
      return lambda obs: obs
    env = (self.training_env(config) if self.jax_native
           else self.host_env(config))
    stats = env.obs_stats(env_state)
    return lambda obs: normalization.normalize(stats, obs, clip=OBS_CLIP)

  @property
  def max_episode_steps(self) -> int:
    """The JAX-native env's time limit."""
    return int(self.env_params.max_steps_in_episode)

  def check(self, config) -> None:
    """Refuses a config this task cannot run, before anything is compiled:
    another id, gSDE on a task stepped on the host, gSDE on a ``Discrete``
    action space."""
    if config.env_id != self.env_id:
      raise ValueError(f"The config is for {config.env_id}, the task is "
                       f"{self.env_id}.")
    if not self.jax_native and config.use_sde:
      raise ValueError(f"`use_sde` is JAX-native only; {self.env_id} is "
                       f"stepped on the host: set it to false.")
    self.policy(config)  # its head refuses the spaces it does not take


jax.tree_util.register_static(Task)


def make(env_id: str, *, host: bool = False) -> Task:
  """The task of an id.

  Args:
    env_id: a JAX-native id (:data:`jaxrl_align.envs.ENV_IDS`, the probes)
      or any registered Gymnasium id.
    host: step it on the host even when it is JAX-native (its spaces are
      then still gymnax's, as the JAX-native policy's are).

  Returns:
    A :class:`Task`. For an id stepped on the host this makes one
    Gymnasium environment to read its spaces (cached per id).

  Raises:
    ValueError: an unknown id, a missing dependency, or spaces the learners
      do not take (Gymnasium ids).
  """
  envs.check_env_id(env_id)
  if not envs.is_jax_native(env_id):
    return Task(env_id, *envs.spaces(env_id))
  env, params = envs.make(env_id)
  spaces = env.observation_space(params), env.action_space(params)
  if host:
    return Task(env_id, *spaces)
  return Task(env_id, *spaces, env, params)


def for_config(config, *, host: bool = False) -> Task:
  """``make(config.env_id)``, checked against the config
  (:meth:`Task.check`): the boundary's one step that needs the
  environment."""
  task = make(config.env_id, host=host)
  task.check(config)
  return task
