"""Gymnasium's MuJoCo tasks compiled: MJX (MuJoCo in JAX) under gymnax's API.

``mjx/Hopper-v5`` is Gymnasium's ``Hopper-v5`` with its physics stepped by
MJX (``mujoco-mjx``) instead of MuJoCo's C engine, so the whole training
loop is one program that ``vmap``s over seeds. Everything else is
Gymnasium's v5 code, transcribed:

* the model is Gymnasium's own (``gymnasium.make(id).unwrapped.model``,
  its XML and ``frame_skip``), put on the device with ``mjx.put_model``;
* ``reset``: ``qpos0`` and zero velocities plus the task's noise (uniform
  ``±reset_noise_scale``; HalfCheetah and InvertedDoublePendulum draw the
  velocity noise as ``reset_noise_scale · N(0, 1)``), then ``mj_forward``
  (Gymnasium's ``set_state``);
* ``step``: ``ctrl = action`` and ``frame_skip`` physics steps (MuJoCo
  clamps ``ctrl`` to the model's ``ctrlrange``), then the task's
  observation, reward and termination read from the same ``Data`` fields
  Gymnasium reads (after ``mj_step``, so ``site_xpos`` and
  ``qfrc_constraint`` are those of the last physics step's start, as in
  Gymnasium);
* time limit: 1,000 steps (Gymnasium's registration), as truncation.

Only the random numbers differ: JAX's generator, not NumPy's. The
dynamics are MJX's in float32 against the C engine's float64;
``tests/test_mujoco_tasks.py`` holds observations, rewards and
terminations to Gymnasium's from the same start state under the same
actions, and ``benchmarks/mjx_check.py`` measures how far the two engines
drift apart over whole episodes.

Why MJX rather than brax's or MuJoCo Playground's environments: those are
their own tasks (other models, rewards and observations, no Gymnasium ids),
so their returns could not be put beside the Zoo's or SB3's; MJX runs
Gymnasium's model as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
from typing import Any, Callable

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment
from gymnax.environments import spaces

from jaxrl_align.envs.foreign import foreign_numerics

with contextlib.redirect_stdout(io.StringIO()):  # its "no warp" notice
  from mujoco import mjx

Array = jax.Array
PREFIX = "mjx/"
MAX_EPISODE_STEPS = 1000  # every task here (Gymnasium's registration)


@struct.dataclass
class MjxState(environment.EnvState):
  """What carries over from one step to the next: positions, velocities
  and the constraint solver's warm start (the rest of MJX's ``Data`` is
  recomputed by every step; these models have no actuator activations),
  and the step count of the episode."""
  qpos: Array
  qvel: Array
  qacc_warmstart: Array
  time: Array


@struct.dataclass
class MjxParams(environment.EnvParams):
  max_steps_in_episode: int = MAX_EPISODE_STEPS


@dataclasses.dataclass(frozen=True)
class _Rules:
  """One task's Gymnasium v5 rules (defaults of its constructor).

  ``observe(data)``, and ``score(qpos_before, data, action, dt)`` giving
  ``(reward, terminated)``. ``observe_reads_forward``: the observation
  reads what ``mj_forward`` computes (InvertedDoublePendulum's constraint
  force), not only ``qpos`` and ``qvel``.
  """
  reset_noise: float
  normal_velocity_noise: bool
  observe: Callable[[Any], Array]
  score: Callable[..., tuple[Array, Array]]
  observe_reads_forward: bool = False


def _locomotion(skip_positions: int, clip_velocity: bool, ctrl_cost: float,
                healthy: Callable[[Any], Array] | None, reset_noise: float,
                normal_velocity_noise: bool) -> _Rules:
  """Hopper, Walker2d, HalfCheetah, Swimmer: observation ``qpos`` without
  its first ``skip_positions`` entries, then ``qvel`` (clipped to ±10 for
  the hoppers); reward ``Δx/dt + healthy - ctrl_cost·|a|²``; terminated
  when ``healthy`` (if any) fails."""

  def observe(data):
    velocity = jnp.clip(data.qvel, -10, 10) if clip_velocity else data.qvel
    return jnp.concatenate([data.qpos[skip_positions:], velocity])

  def score(qpos_before, data, action, dt):
    forward = (data.qpos[0] - qpos_before[0]) / dt
    cost = ctrl_cost * jnp.sum(jnp.square(action))
    if healthy is None:
      return forward - cost, jnp.zeros((), bool)
    ok = healthy(data)
    return forward + jnp.where(ok, 1.0, 0.0) - cost, ~ok

  return _Rules(reset_noise, normal_velocity_noise, observe, score)


def _hopper_healthy(data):
  z, angle = data.qpos[1], data.qpos[2]
  state = jnp.concatenate([data.qpos, data.qvel])[2:]
  return (jnp.all((-100.0 < state) & (state < 100.0)) & (0.7 < z)
          & (-0.2 < angle) & (angle < 0.2))


def _walker_healthy(data):
  z, angle = data.qpos[1], data.qpos[2]
  return (0.8 < z) & (z < 2.0) & (-1.0 < angle) & (angle < 1.0)


def _pendulum_observe(data):
  return jnp.concatenate([data.qpos, data.qvel])


def _pendulum_score(qpos_before, data, action, dt):
  del qpos_before, action, dt
  obs = _pendulum_observe(data)
  terminated = ~jnp.all(jnp.isfinite(obs)) | (jnp.abs(obs[1]) > 0.2)
  return jnp.where(terminated, 0.0, 1.0), terminated


def _double_pendulum_observe(data):
  return jnp.concatenate([
      data.qpos[:1], jnp.sin(data.qpos[1:]), jnp.cos(data.qpos[1:]),
      jnp.clip(data.qvel, -10, 10), jnp.clip(data.qfrc_constraint, -10, 10)[:1]])


def _double_pendulum_score(qpos_before, data, action, dt):
  del qpos_before, action, dt
  x, _, y = data.site_xpos[0]
  v1, v2 = data.qvel[1], data.qvel[2]
  terminated = y <= 1
  reward = (jnp.where(terminated, 0.0, 10.0) - (0.01 * x**2 + (y - 2)**2)
            - (1e-3 * v1**2 + 5e-3 * v2**2))
  return reward, terminated


RULES: dict[str, _Rules] = {
    "Hopper-v5": _locomotion(1, True, 1e-3, _hopper_healthy, 5e-3, False),
    "Walker2d-v5": _locomotion(1, True, 1e-3, _walker_healthy, 5e-3, False),
    "HalfCheetah-v5": _locomotion(1, False, 0.1, None, 0.1, True),
    "Swimmer-v5": _locomotion(2, False, 1e-4, None, 0.1, False),
    "InvertedPendulum-v5": _Rules(0.01, False, _pendulum_observe,
                                  _pendulum_score),
    "InvertedDoublePendulum-v5": _Rules(0.1, True, _double_pendulum_observe,
                                        _double_pendulum_score,
                                        observe_reads_forward=True),
}


class MjxEnv(environment.Environment[MjxState, MjxParams]):
  """One Gymnasium MuJoCo task stepped by MJX (see the module docstring).

  Build it with :func:`make` (one instance per id, so programs compiled for
  it are reused).
  """

  def __init__(self, env_id: str):
    super().__init__()
    self.env_id = env_id
    self.gymnasium_id = env_id.removeprefix(PREFIX)
    self.rules = RULES[self.gymnasium_id]
    env = gymnasium.make(self.gymnasium_id).unwrapped
    try:
      # Concrete arrays even when first built while a program is traced
      # (the instance is cached and outlives the trace).
      with jax.ensure_compile_time_eval(), foreign_numerics():
        self.model = mjx.put_model(env.model)
        self._data0 = mjx.make_data(self.model)
      self.frame_skip = int(env.frame_skip)
      self.dt = float(env.dt)
      self._qpos0 = np.asarray(env.init_qpos, np.float32)
      self._qvel0 = np.asarray(env.init_qvel, np.float32)
      self._low = np.asarray(env.action_space.low, np.float32)
      self._high = np.asarray(env.action_space.high, np.float32)
      self._obs_dim = int(env.observation_space.shape[0])
    finally:
      env.close()

  @property
  def default_params(self) -> MjxParams:
    return MjxParams()

  @property
  def name(self) -> str:
    return self.env_id

  @property
  def num_actions(self) -> int:
    return self._low.shape[0]

  def action_space(self, params=None) -> spaces.Box:
    return spaces.Box(self._low, self._high, self._low.shape, jnp.float32)

  def observation_space(self, params=None) -> spaces.Box:
    return spaces.Box(-jnp.inf, jnp.inf, (self._obs_dim,), jnp.float32)

  def set_state(self, qpos: Array, qvel: Array) -> tuple[Array, MjxState]:
    """Gymnasium's ``set_state``: the state at ``qpos``, ``qvel`` after
    ``mj_forward``, at the episode's first step; and its observation."""
    data = self._data0.replace(qpos=jnp.asarray(qpos, jnp.float32),
                               qvel=jnp.asarray(qvel, jnp.float32))
    with foreign_numerics():  # MJX's code: standard promotion
      data = mjx.forward(self.model, data)
    return self.rules.observe(data), self._carry(data, jnp.zeros((), jnp.int32))

  @staticmethod
  def _carry(data, time) -> MjxState:
    return MjxState(qpos=data.qpos, qvel=data.qvel,
                    qacc_warmstart=data.qacc_warmstart, time=time)

  def reset_env(self, key: Array, params: MjxParams):
    qpos_key, qvel_key = jax.random.split(key)
    scale = self.rules.reset_noise
    qpos = self._qpos0 + jax.random.uniform(
        qpos_key, self._qpos0.shape, minval=-scale, maxval=scale)
    if self.rules.normal_velocity_noise:
      noise = scale * jax.random.normal(qvel_key, self._qvel0.shape)
    else:
      noise = jax.random.uniform(qvel_key, self._qvel0.shape, minval=-scale,
                                 maxval=scale)
    qvel = self._qvel0 + noise
    if self.rules.observe_reads_forward:
      return self.set_state(qpos, qvel)
    # `mj_forward` changes nothing the next step starts from (that step
    # runs it again, and it leaves the warm start alone), so where the
    # observation reads only qpos and qvel the reset skips it: `Env`
    # computes a reset at every step of every env.
    data = self._data0.replace(qpos=qpos, qvel=qvel)
    return self.rules.observe(data), self._carry(data,
                                                 jnp.zeros((), jnp.int32))

  def step_env(self, key: Array, state: MjxState, action: Array,
               params: MjxParams):
    del key  # the dynamics are deterministic
    action = jnp.asarray(action, jnp.float32)
    data = self._data0.replace(qpos=state.qpos, qvel=state.qvel,
                               qacc_warmstart=state.qacc_warmstart,
                               ctrl=action)
    with foreign_numerics():
      data = jax.lax.fori_loop(0, self.frame_skip,
                               lambda _, d: mjx.step(self.model, d), data)
    reward, terminated = self.rules.score(state.qpos, data, action, self.dt)
    new_state = self._carry(data, state.time + 1)
    obs = self.rules.observe(data)
    return (jax.lax.stop_gradient(obs), jax.lax.stop_gradient(new_state),
            jnp.asarray(reward, jnp.float32), terminated, {})


@functools.lru_cache(maxsize=None)
def make(env_id: str) -> MjxEnv:
  """The :class:`MjxEnv` of ``mjx/`` and a task of :data:`RULES` (one
  instance per id)."""
  if not env_id.startswith(PREFIX) or env_id[len(PREFIX):] not in RULES:
    raise ValueError(f"Unknown MJX id {env_id!r}; known: "
                     f"{', '.join(PREFIX + k for k in RULES)}.")
  return MjxEnv(env_id)
