"""The JAX-native tasks: Gymnasium's five classic-control tasks (gymnax
underneath), and its MuJoCo tasks stepped by MJX (``mjx/Hopper-v5``,
:mod:`jaxrl_align.envs.mujoco_tasks`, when ``mujoco-mjx`` is installed).

gymnax's dynamics are used as they are, with one exception that our parity
tests against Gymnasium found: gymnax's MountainCarContinuous zeroes a
negative velocity at the *goal* position, Gymnasium (and gymnax's own
discrete MountainCar) at the *left wall*. :class:`_MountainCarContinuous`
restores Gymnasium's rule and changes nothing else.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from gymnax.environments.classic_control import acrobot
from gymnax.environments.classic_control import cartpole
from gymnax.environments.classic_control import continuous_mountain_car
from gymnax.environments.classic_control import mountain_car
from gymnax.environments.classic_control import pendulum

from jaxrl_align.envs import foreign
from jaxrl_align.envs import probes

# Standard promotion for gymnax (and MJX): `with registry.foreign_numerics():`.
foreign_numerics = foreign.foreign_numerics


class _MountainCarContinuous(continuous_mountain_car.ContinuousMountainCar):
  """gymnax's MountainCarContinuous with Gymnasium's left-wall velocity rule."""

  def step_env(self, key, state, action, params):
    force = jnp.clip(action, params.min_action, params.max_action)
    velocity = (state.velocity + force * params.power
                - jnp.cos(3 * state.position) * params.gravity)
    velocity = jnp.clip(velocity, -params.max_speed, params.max_speed)
    position = jnp.clip(state.position + velocity, params.min_position,
                        params.max_position)
    # Gymnasium: `if position == min_position and velocity < 0: velocity = 0`.
    velocity = jnp.where((position == params.min_position) & (velocity < 0),
                         jnp.zeros_like(velocity), velocity)
    at_goal = (position >= params.goal_position) & (
        velocity >= params.goal_velocity)
    reward = -0.1 * action**2 + 100.0 * at_goal
    new_state = continuous_mountain_car.EnvState(
        position=position.squeeze(), velocity=velocity.squeeze(),
        time=state.time + 1)
    terminated = self.is_terminal(new_state, params)
    obs = jax.lax.stop_gradient(self.get_obs(new_state))
    return (obs, jax.lax.stop_gradient(new_state), reward.squeeze(), terminated,
            {"discount": self.discount(new_state, params)})


_ENVS = {
    "CartPole-v1": cartpole.CartPole,
    "Acrobot-v1": acrobot.Acrobot,
    "MountainCar-v0": mountain_car.MountainCar,
    "MountainCarContinuous-v0": _MountainCarContinuous,
    "Pendulum-v1": pendulum.Pendulum,
}

ENV_IDS: tuple[str, ...] = tuple(_ENVS)
PROBE_IDS: tuple[str, ...] = tuple(probes.PROBES)
# Gymnasium's MuJoCo tasks compiled with MJX (`mujoco_tasks`, imported on
# first use: it needs the optional `mujoco-mjx`).
MJX_IDS: tuple[str, ...] = tuple(
    "mjx/" + k for k in ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5",
                         "Swimmer-v5", "InvertedPendulum-v5",
                         "InvertedDoublePendulum-v5"))

# Tasks whose gymnax `step_env` uses its key (Acrobot's optional torque noise).
STOCHASTIC_STEP = frozenset({"Acrobot-v1"})


def make_gymnax(env_id: str):
  """The gymnax environment and default params for a Gymnasium id.

  Args:
    env_id: one of :data:`ENV_IDS`, :data:`MJX_IDS` (or a probe,
      :data:`PROBE_IDS`).

  Returns:
    ``(gymnax_env, gymnax_params)``.

  Raises:
    ValueError: unknown ``env_id`` (the message lists the known ones), or
      an MJX id without ``mujoco-mjx`` installed.
  """
  if env_id in MJX_IDS:
    try:
      from jaxrl_align.envs import mujoco_tasks  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ValueError(
          f"{env_id} needs mujoco-mjx ({e}): pip install "
          f"'jaxrl_align[mjx]'.") from None
    env = mujoco_tasks.make(env_id)
    return env, env.default_params
  if env_id in probes.PROBES:
    env = probes.PROBES[env_id]()
    return env, env.default_params
  if env_id not in _ENVS:
    raise ValueError(f"Unknown `env_id` {env_id!r}; known ids: "
                     f"{', '.join(ENV_IDS + MJX_IDS)} (and the probes "
                     f"{', '.join(PROBE_IDS)}).")
  env = _ENVS[env_id]()
  return env, env.default_params
