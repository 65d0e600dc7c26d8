"""The same learners on host-stepped Gymnasium environments.

The rollout runs on the host through
:class:`~jaxrl_align.envs.GymnasiumVecEnv` (any Gymnasium id); the policy is
built from that environment's own observation and action spaces, and the
jitted ``learn`` is the one of the JAX-native path, so the learning is the
same code. Observation normalisation and reward scaling are the JAX
wrappers' and are not available here yet: configs that ask for them are
refused.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from jaxrl_align import envs
from jaxrl_align.agents import on_policy


def train(algo: Any, config, key: jax.Array, *, env_id: str | None = None,
          seed: int = 0, **env_kwargs: Any):
  """Trains ``algo`` (:mod:`~jaxrl_align.agents.ppo` or ``trpo``) on the host.

  Args:
    algo: the learner module.
    config: its config (batch sizes, hyperparameters).
    key: PRNG key.
    env_id: the Gymnasium id to step (defaults to ``config.env_id``).
    seed: seed of the Gymnasium envs' first reset.
    **env_kwargs: passed to :class:`~jaxrl_align.envs.GymnasiumVecEnv`.

  Returns:
    ``(state, metrics)``: the final learner state and a list of per-update
    metric dicts (host floats).
  """
  if config.normalize_obs or config.scale_reward:
    raise ValueError("`normalize_obs` and `scale_reward` are JAX-env wrappers; "
                     "set them to False for host-stepped training.")
  host = envs.GymnasiumVecEnv(env_id or config.env_id, config.num_envs,
                              seed=seed, **env_kwargs)
  policy = on_policy.make_policy(config, host.observation_space,
                                 host.action_space)

  @jax.jit
  def act(params, key, obs):
    return policy.act(params)(key, obs)

  learn = jax.jit(functools.partial(algo.learn, config, policy=policy))
  state = algo.init(config, key, policy)
  episodes = state.episodes
  history = []
  for _ in range(config.num_updates):
    rollout_key, key = jax.random.split(key)
    _, trajectory = host.rollout(functools.partial(act, state.params),
                                 rollout_key, config.num_steps)
    state, metrics = learn(state, trajectory)
    episodes, finished = on_policy.episode_metrics(episodes, trajectory)
    metrics = dict(metrics, episode_return=episodes.last_return,
                   episodes_finished=finished)
    history.append({k: float(v) for k, v in metrics.items()})
  host.close()
  return state._replace(episodes=episodes), history
