"""Probe environments: tiny tasks whose right answers are known exactly.

After Andy Jones, "Debugging RL, Without the Agonizing Pain" (2021). Each
isolates one piece of a learner, so a sign error, an indexing bug or wrong
bootstrapping shows as a wrong learned value or action:

==========================  ===================================================
id                          what is right
==========================  ===================================================
``ProbeConstant-v0``        obs 0, one step, reward 1: ``V = 1``
``ProbeObsReward-v0``       obs ±1, one step, reward = obs: ``V(±1) = ±1``
``ProbeTwoStep-v0``         obs 0 then 1, reward 1 at the end only:
                            ``V(0) = γ``, ``V(1) = 1``
``ProbeAction-v0``          obs 0, one step, reward +1 for action 1, -1 for 0
``ProbeActionObs-v0``       obs ±1, reward +1 if action = (obs > 0), else -1
``ProbeTimeLimit-v0``       obs 0, reward 1 every step, never terminates, cut
                            at 50 steps: ``V = 1/(1-γ)`` *only* if time limits
                            are bootstrapped
==========================  ===================================================

Continuous twins (``...Continuous-v0``) of the action probes take an action in
``[-1, 1]`` and pay ``1 - (a - a*)²`` with ``a* = 0.5`` (``ProbeAction``) or
``a* = 0.5·obs`` (``ProbeActionObs``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment
from gymnax.environments import spaces


@struct.dataclass
class ProbeState(environment.EnvState):
  obs: jax.Array
  time: int


@struct.dataclass
class ProbeParams(environment.EnvParams):
  max_steps_in_episode: int = 100


class _Probe(environment.Environment):
  """A one-dimensional-observation probe."""

  kind: str = ""
  continuous: bool = False
  time_limit: int = 100

  @property
  def default_params(self) -> ProbeParams:
    return ProbeParams(max_steps_in_episode=self.time_limit)

  def _first_obs(self, key):
    if self.kind in ("obs_reward", "action_obs"):
      return jnp.where(jax.random.bernoulli(key), 1.0, -1.0)
    return jnp.zeros(())

  def reset_env(self, key, params):
    state = ProbeState(obs=self._first_obs(key), time=0)
    return state.obs[None], state

  def step_env(self, key, state, action, params):
    obs = state.obs
    terminated = jnp.ones((), bool)
    next_obs = obs
    if self.kind == "constant":
      reward = jnp.ones(())
    elif self.kind == "obs_reward":
      reward = obs
    elif self.kind == "two_step":
      reward = jnp.where(obs > 0.5, 1.0, 0.0)
      terminated = obs > 0.5
      next_obs = jnp.ones(())
    elif self.kind == "time_limit":
      reward = jnp.ones(())
      terminated = jnp.zeros((), bool)
    elif self.continuous:
      target = 0.5 if self.kind == "action" else 0.5 * obs
      reward = 1.0 - (action[0] - target) ** 2
    else:
      correct = 1 if self.kind == "action" else (obs > 0).astype(jnp.int32)
      reward = jnp.where(action == correct, 1.0, -1.0)
    new_state = ProbeState(obs=next_obs, time=state.time + 1)
    return (new_state.obs[None], new_state, reward.astype(jnp.float32),
            terminated, {})

  def action_space(self, params=None):
    if self.continuous:
      return spaces.Box(-1.0, 1.0, (1,), jnp.float32)
    return spaces.Discrete(2 if self.kind in ("action", "action_obs") else 1)

  def observation_space(self, params=None):
    return spaces.Box(-1.0, 1.0, (1,), jnp.float32)


def _probe(kind, continuous=False, time_limit=100):
  cls = type(f"Probe_{kind}", (_Probe,), {"kind": kind,
                                          "continuous": continuous,
                                          "time_limit": time_limit})
  return cls


PROBES = {
    "ProbeConstant-v0": _probe("constant"),
    "ProbeObsReward-v0": _probe("obs_reward"),
    "ProbeTwoStep-v0": _probe("two_step"),
    "ProbeAction-v0": _probe("action"),
    "ProbeActionObs-v0": _probe("action_obs"),
    "ProbeTimeLimit-v0": _probe("time_limit", time_limit=50),
    "ProbeActionContinuous-v0": _probe("action", continuous=True),
    "ProbeActionObsContinuous-v0": _probe("action_obs", continuous=True),
}
