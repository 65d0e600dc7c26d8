"""The actor-critic policy of an on-policy learner, built once per task.

:func:`make_policy` chooses the network and its head from a task's spaces
(:func:`jaxrl_align.heads.for_space`) and the config's static fields;
every program of a run (rollout, ``learn``, evaluation) uses that one
:class:`Policy`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_align import heads
from jaxrl_align import networks

Array = jax.Array


class Policy(NamedTuple):
  """The actor-critic network and its head, built once (static, hashable).

  Attributes:
    network: :class:`~jaxrl_align.networks.ActorCritic`.
    head: its policy head (:mod:`jaxrl_align.heads`).
    obs_shape: one observation's shape.
  """
  network: Any
  head: Any
  obs_shape: tuple[int, ...]

  def init(self, key: Array, log_std_init) -> Any:
    params = self.network.init(key, jnp.zeros((1,) + self.obs_shape,
                                              jnp.float32))
    return self.head.with_log_std(params, log_std_init)

  def apply(self, params, obs: Array):
    """``(policy_out, value [B])`` for ``obs [B, *obs_shape]``."""
    return self.network.apply(params, obs)

  def act(self, params) -> Callable:
    """The rollout's policy: ``(key, obs) -> (action, {log_prob, value})``."""
    def policy_fn(key, obs):
      out, value = self.apply(params, obs)
      action = self.head.sample(key, out)
      return action, {"log_prob": self.head.log_prob(out, action),
                      "value": value}
    return policy_fn

  def explore(self, params, key: Array, num_envs: int) -> Callable:
    """gSDE's rollout policy: ``act`` with the action ``mean + θᵀf(s)``
    for exploration matrices ``θ`` (one per env) drawn from ``key``."""
    matrix = self.head.exploration_matrix(key, params, num_envs)

    def policy_fn(key, obs):
      del key
      out, value = self.apply(params, obs)
      action = self.head.explore(out, matrix)
      return action, {"log_prob": self.head.log_prob(out, action),
                      "value": value}
    return policy_fn

  def mode(self, params, obs: Array) -> Array:
    return self.head.mode(self.apply(params, obs)[0])


def make_policy(config, observation_space, action_space) -> Policy:
  """The policy for a task's spaces (gymnax or Gymnasium ``Box`` /
  ``Discrete``), with ``config.hidden`` layers of ``config.activation``
  (gSDE's head with
  ``config.use_sde``)."""
  head = heads.for_space(action_space,
                         config.hidden[-1] if config.use_sde else None)
  return Policy(networks.ActorCritic(head, config.hidden, config.ortho_init,
                                     config.activation),
                head,
                tuple(int(d) for d in observation_space.shape))
