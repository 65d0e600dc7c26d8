"""The same learners on host-stepped Gymnasium environments.

Any Gymnasium id whose observations are a ``Box`` and whose actions are a
``Box`` or ``Discrete`` trains through :class:`HostPrograms`: the rollout
runs on the host through :class:`~jaxrl_align.envs.GymnasiumVecEnv` (one per
seed), the policy is built from the run's
:class:`~jaxrl_align.agents.tasks.Task` (that environment's own spaces),
and the jitted ``learn`` is the one of the JAX-native path, vmapped over
seeds, so the learning is the same code. The runner uses these programs for
every environment that is not JAX-native. The environments' state lives in
Gymnasium, outside the learner state: a resumed run continues from the
checkpoint's parameters with freshly reset environments, so it is not
bit-identical to an uninterrupted one. Observation normalisation, reward
scaling and gSDE are JAX-env only, not available here (configs and the
task's check refuse them).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import envs
from jaxrl_align.agents import on_policy
from jaxrl_align.agents import tasks


def _env_seed(key: jax.Array) -> int:
  """A Gymnasium seed drawn from a run's key (so the run's seed fixes it)."""
  return int(jax.random.randint(jax.random.fold_in(key, 0x6e76), (), 0,
                                2 ** 31 - 1))


class HostPrograms:
  """``(init, chunk, evaluate)`` of an on-policy learner over seeds, with the
  environments stepped on the host: the runner's programs for an
  environment that is not JAX-native.

  The task is the ``data`` of :meth:`init` (a
  :class:`~jaxrl_align.agents.tasks.Task`; None: made from
  ``config.env_id``, stepped on the host), kept for the run.

  Args:
    init: the learner's ``init(config, key, task)``.
    learn: its ``learn(config, state, trajectory, policy)``.
    chunk: updates per :meth:`chunk` call.
    eval_episodes: episodes per seed in :meth:`evaluate`.
    env_seed: the Gymnasium seed of seed ``i``'s environments is
      ``env_seed + i * num_envs``; by default it is drawn from the run's key.
    env_kwargs: passed to each :class:`~jaxrl_align.envs.GymnasiumVecEnv`.
  """

  assess = None

  def __init__(self, init: Callable, learn: Callable, chunk: int,
               eval_episodes: int, *, env_seed: int | None = None,
               **env_kwargs: Any):
    self._init, self._learn = init, learn
    self._chunk, self._eval_episodes = chunk, eval_episodes
    self._env_seed = env_seed
    self._env_kwargs = env_kwargs
    self._envs: list[envs.GymnasiumVecEnv] = []
    self._compiled: dict[Any, Any] = {}
    self._task: tasks.Task | None = None

  def _policy(self, config):
    key = ("policy", config)
    if key not in self._compiled:
      self._compiled[key] = self._task.policy(config)
    return self._compiled[key]

  def _programs(self, config):
    """``(act, learn)`` jitted and vmapped over seeds, once per config."""
    key = ("programs", config)
    if key not in self._compiled:
      policy = self._policy(config)

      def act(params, key, obs):
        key, policy_key = jax.random.split(key)
        action, extras = policy.act(params)(policy_key, obs)
        return action, extras, key

      def learn(config, state, trajectory):
        return self._learn(config, state, trajectory, policy)

      self._compiled[key] = (jax.jit(jax.vmap(act)),
                             jax.jit(jax.vmap(learn, in_axes=(None, 0, 0))))
    return self._compiled[key]

  def init(self, config, keys: jax.Array, data=None):
    """Fresh learner states, and one Gymnasium vector env per seed
    (``data``: the run's task, or None)."""
    self._task = (tasks.make(config.env_id, host=True)
                  if data is None or data.jax_native else data)
    self._task.check(config)
    self.close()
    seeds = ([_env_seed(k) for k in keys] if self._env_seed is None else
             [self._env_seed + i * config.num_envs for i in range(len(keys))])
    self._envs = [envs.GymnasiumVecEnv(config.env_id, config.num_envs,
                                       seed=seed, **self._env_kwargs)
                  for seed in seeds]
    return jax.jit(jax.vmap(lambda k: self._init(config, k, self._task)))(
        keys)

  def chunk(self, config, states, data=None):
    """``chunk`` updates: a host rollout of ``num_steps`` per seed, then the
    jitted, seed-vmapped ``learn``. Returns ``(states, metrics)`` with
    ``[seeds, chunk]`` metrics, as the compiled chunk does."""
    del data
    act, learn = self._programs(config)
    rows = []
    for _ in range(self._chunk):
      trajectory, states = self._rollout(config, act, states)
      states, metrics = learn(config, states, trajectory)
      metrics = dict(metrics, **on_policy.finished_episodes(trajectory,
                                                            axis=(1, 2)))
      metrics["env_steps"] = (states.update * config.num_envs
                              * config.num_steps).astype(jnp.float32)
      rows.append(metrics)
    return states, jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *rows)

  def _rollout(self, config, act, states):
    keys = states.rollout.key
    steps, actions, extras = [], [], []
    for _ in range(config.num_steps):
      obs = jnp.asarray(np.stack([env.obs for env in self._envs]))
      action, extra, keys = act(states.params, keys, obs)
      host_action = np.asarray(action)
      steps.append([env.step(a) for env, a in zip(self._envs, host_action)])
      actions.append(action)
      extras.append(extra)
    fields = {name: jnp.asarray(np.stack([[s[name] for s in per_env]
                                          for per_env in steps], axis=1))
              for name in steps[0][0]}  # [seeds, T, N, ...]
    trajectory = envs.Trajectory(
        action=jnp.stack(actions, axis=1),
        extras=jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *extras),
        **fields)
    return trajectory, states._replace(
        rollout=states.rollout._replace(key=keys))

  def evaluate(self, config, states, keys: jax.Array, data=None):
    """``[seeds, eval_episodes]`` returns of the deterministic policy, one
    episode per env; NaN for an episode that did not end within the
    environment's time limit (or 10,000 steps without one)."""
    del data
    policy = self._policy(config)
    mode = jax.jit(policy.mode)
    returns = []
    for i, key in enumerate(keys):
      params = jax.tree.map(lambda x: x[i], states.params)
      env = envs.GymnasiumVecEnv(config.env_id, self._eval_episodes,
                                 seed=_env_seed(key), **self._env_kwargs)
      limit = env.envs.spec.max_episode_steps if env.envs.spec else None
      done = np.zeros(self._eval_episodes, bool)
      result = np.full(self._eval_episodes, np.nan)
      for _ in range(limit or 10_000):
        step = env.step(np.asarray(mode(params, jnp.asarray(env.obs))))
        ended = (step["terminated"] | step["truncated"]) & ~done
        result[ended] = step["episode_return"][ended]
        done |= ended
        if done.all():
          break
      env.close()
      returns.append(result)
    return np.stack(returns)

  def close(self) -> None:
    for env in self._envs:
      env.close()
    self._envs = []


def programs(init: Callable, learn: Callable):
  """The ``programs`` field of an on-policy :class:`~jaxrl_align.learner.
  Learner`: :class:`HostPrograms` for an environment that is not
  JAX-native, None (compile the learner) for one that is."""
  def for_run(config, chunk: int, eval_episodes: int):
    if envs.is_jax_native(config.env_id):
      return None
    return HostPrograms(init, learn, chunk, eval_episodes)
  return for_run


def train(algo: Any, config, key: jax.Array, *, env_id: str | None = None,
          seed: int = 0, **env_kwargs: Any):
  """Trains ``algo`` (:mod:`~jaxrl_align.agents.ppo` or ``trpo``) on the host.

  Args:
    algo: the learner module.
    config: its config (batch sizes, hyperparameters).
    key: PRNG key.
    env_id: the Gymnasium id to step (defaults to ``config.env_id``); the
      network is built from its observation and action spaces.
    seed: seed of the Gymnasium envs' first reset.
    **env_kwargs: passed to :class:`~jaxrl_align.envs.GymnasiumVecEnv`.

  Returns:
    ``(state, metrics)``: the final learner state and a list of per-update
    metric dicts (host floats; NaN episode statistics in an update where no
    episode ended).
  """
  if env_id is not None and env_id != config.env_id:
    config = config.replace(env_id=env_id)
  run = HostPrograms(algo.init, algo.learn, 1, 1, env_seed=seed,
                     **env_kwargs)
  states = run.init(config, key[None], tasks.make(config.env_id, host=True))
  history = []
  try:
    for _ in range(on_policy.num_updates(config)):
      states, metrics = run.chunk(config, states)
      history.append({k: float(v[0, 0]) for k, v in metrics.items()})
  finally:
    run.close()
  return jax.tree.map(lambda x: x[0], states), history
