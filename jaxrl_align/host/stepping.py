"""Learners on host-stepped Gymnasium environments.

Any Gymnasium id whose observations are a ``Box`` and whose actions are a
``Box`` or ``Discrete`` trains through :class:`HostPrograms`: the rollout
runs on the host through one :class:`~jaxrl_align.envs.GymnasiumVecEnv` of
every seed's environments, and the learner's
:class:`~jaxrl_align.learner.Stepping` does the rest, so the learning is
the code of the JAX-native path and the host never reads a learner's
state. A rollout launches two programs, jitted and vmapped over seeds:
``prepare`` before its steps (the actor's arrays, the sampling noise drawn
beforehand) and ``replay`` after them; each step in between is acted by
the learner's host ``actor`` in NumPy, because a program launched per step
cost more than the MuJoCo step itself (docs/agents.md). ``replay`` feeds
the raw steps through the JAX-native wrappers (observation normalisation,
reward scaling, over :class:`~jaxrl_align.envs.Given`, ``Task.host_env``),
their statistics in the learner state, and computes the values and
log-probabilities of the actions taken, so ``learn`` gets the trajectory a
JAX-native rollout would have recorded. The runner uses these programs
for every environment that is not JAX-native. The environments' state
lives in Gymnasium, outside the learner state: a resumed run continues
from the checkpoint's parameters and statistics with freshly reset
environments, so it is not bit-identical to an uninterrupted one. gSDE
is JAX-env only (configs and the task's check refuse it here).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import envs
from jaxrl_align import parallel
from jaxrl_align.agents import tasks
from jaxrl_align.learner import Learner


def _env_seed(key: jax.Array) -> int:
  """A Gymnasium seed drawn from a run's key (so the run's seed fixes it)."""
  return int(jax.random.randint(jax.random.fold_in(key, 0x6e76), (), 0,
                                2 ** 31 - 1))


def _whole_here(x: jax.Array) -> jax.Array:
  """A replicated array (the run's keys, made under its mesh) as this
  process's copy of it."""
  if x.is_fully_addressable:
    return x
  if not x.sharding.is_fully_replicated:
    raise ValueError("expected the run's keys replicated on every process.")
  return x.addressable_data(0)


def host_stepped(learner: Learner, config, data=None) -> bool:
  """Whether a run of ``learner`` steps its environments on the host:
  it has :class:`~jaxrl_align.learner.Stepping` and its task (``data``,
  else ``config.env_id``) is not JAX-native."""
  if learner.stepping is None:
    return False
  if isinstance(data, tasks.Task):
    return not data.jax_native
  return not envs.is_jax_native(config.env_id)


@functools.lru_cache(maxsize=None)
def _jitted(stepping, task: tasks.Task):
  """The host loop's programs of one learner and task, vmapped over seeds
  and jitted (``mode``: one seed): one set per learner and task (tasks
  compare by what they are), so the runs of one process (:func:`train` per
  seed, runs one after another) compile them once; jit keys them on the
  config's static fields. A rollout launches two: ``prepare`` before its
  steps, ``replay`` after them; every step in between is the host
  actor's."""
  restart = stepping.restart or (lambda c, s, o, d: (o, s))
  over_seeds = lambda fn, *axes: jax.jit(jax.vmap(  # noqa: E731
      fn, in_axes=(None,) + axes))
  return dict(
      prepare=over_seeds(lambda c, s: stepping.prepare(c, s, task), 0),
      replay=over_seeds(lambda c, s, r: stepping.replay(c, s, r, task), 0, 0),
      learn=over_seeds(lambda c, s, t: stepping.learn(c, s, t, task), 0, 0),
      restart=over_seeds(lambda c, s, o: restart(c, s, o, task), 0, 0),
      mode=jax.jit(lambda c, s, o: stepping.mode(c, s, o, task)))


class HostPrograms:
  """``(init, chunk, evaluate)`` of a learner over seeds, with the
  environments stepped on the host: the runner's programs for an
  environment that is not JAX-native.

  The task is the ``data`` of :meth:`init` (a
  :class:`~jaxrl_align.agents.tasks.Task`; None: made from
  ``config.env_id``, stepped on the host), kept for the run.

  Over several processes (a ``jax.distributed`` job, ``mesh`` given), the
  seeds are spread over the processes: each steps the environments of its
  own seeds and runs their programs on its one device of the mesh, with
  no communication between processes; the states, metrics and evaluation
  it returns are the whole run's (arrays over the mesh, and the
  evaluation gathered on every process), as the runner expects of any
  programs. A Python loop drives one core, so a job of one process per
  core trains that many seeds at once on one machine.

  Args:
    learner: a learner with :class:`~jaxrl_align.learner.Stepping`.
    chunk: updates per :meth:`chunk` call.
    eval_episodes: episodes per seed in :meth:`evaluate`.
    env_seed: the Gymnasium seed of seed ``i``'s environments is
      ``env_seed + i * num_envs``; by default it is drawn from the run's key.
    mesh: over several processes, a mesh of one device of each, with
      one ``seeds`` axis (``host.settings.device_mesh``); None in one
      process.
    env_kwargs: passed to the :class:`~jaxrl_align.envs.GymnasiumVecEnv`
      (one of every seed's environments, stepped in one call).
  """

  assess = None

  def __init__(self, learner: Learner, chunk: int, eval_episodes: int, *,
               env_seed: int | None = None,
               mesh: jax.sharding.Mesh | None = None, **env_kwargs: Any):
    if learner.stepping is None:
      raise ValueError(f"{learner.name} cannot learn from host-stepped "
                       f"environments (it has no `stepping`).")
    self._learner, self._stepping = learner, learner.stepping
    self._chunk, self._eval_episodes = chunk, eval_episodes
    self._env_seed = env_seed
    self._env_kwargs = env_kwargs
    self._env: envs.GymnasiumVecEnv | None = None  # all seeds' envs
    self._compiled: dict[Any, Any] = {}
    self._task: tasks.Task | None = None
    self._obs = None  # [seeds, N, ...], as the learners see them
    self._seeds = 0  # this process's
    self._spread = (None if mesh is None else jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(parallel.SEEDS)))
    self._here = slice(None)  # this process's seeds of the run's
    self._device = None  # this process's device of the mesh
    self._total = 0  # the run's seeds

  def _programs(self, config):
    """The jitted programs (:func:`_jitted`) and the host actor, once per
    config."""
    key = ("programs", config)
    if key not in self._compiled:
      self._compiled[key] = dict(
          _jitted(self._stepping, self._task),
          actor=self._stepping.actor(config, self._task))
    return self._compiled[key]

  def init(self, config, keys: jax.Array, data=None):
    """Fresh learner states, and one Gymnasium vector env of every seed's
    environments (``data``: the run's task, or None). The envs' first
    observations go
    through the learner's ``restart`` at the first :meth:`rollout`, with the
    states it is given then (fresh or restored)."""
    self._task = (tasks.make(config.env_id, host=True)
                  if data is None or data.jax_native else data)
    self._task.check(config)
    self.close()
    self._total = len(keys)
    if self._spread is not None:
      mine = self._spread.addressable_devices_indices_map((self._total,))
      (self._device, (self._here,)), = mine.items()  # one device each
      size = self._total // jax.process_count()
      first = jax.process_index() * size
      if range(self._total)[self._here] != range(first, first + size):
        raise ValueError("the mesh must hold one device of each process, "
                         "in process order (host.settings.device_mesh).")
    index = range(self._total)[self._here]
    init, task = self._learner.init, self._task
    with self._on_mine():
      keys = self._my_keys(keys)
      seeds = ([_env_seed(k) for k in keys] if self._env_seed is None else
               [self._env_seed + i * config.num_envs for i in index])
      self._seeds = len(seeds)
      # One vector env of every seed's envs, seed i's seeded as its own
      # vector env would be (env j: seeds[i] + j), stepped in one call.
      self._env = envs.GymnasiumVecEnv(
          config.env_id, len(seeds) * config.num_envs,
          seed=[seed + j for seed in seeds for j in range(config.num_envs)],
          **self._env_kwargs)
      states = jax.jit(jax.vmap(lambda k: init(config, k, task)))(keys)
    return self._whole(states)

  def _my_keys(self, keys: jax.Array) -> jax.Array:
    """This process's seeds' keys of the run's (under :meth:`_on_mine`)."""
    keys = _whole_here(keys)
    if self._device is not None:
      keys = jax.device_put(keys, self._device)
    return keys[self._here]

  def _on_mine(self):
    """Over several processes, the context of this process's programs: a
    mesh of its one device (the run's mesh spans every process's)."""
    if self._device is None:
      return contextlib.nullcontext()
    return jax.set_mesh(parallel.mesh(devices=[self._device]))

  def _whole(self, tree):
    """This process's seeds' arrays -> the run's (over the mesh); as they
    are in one process."""
    if self._spread is None:
      return tree
    return jax.tree.map(
        lambda x: jax.make_array_from_single_device_arrays(
            (self._total,) + x.shape[1:], self._spread,
            [jax.device_put(x, self._device)]), tree)

  def _mine(self, tree):
    """The run's arrays -> this process's seeds'; as they are in one
    process."""
    if self._spread is None:
      return tree
    return jax.tree.map(lambda x: x.addressable_data(0), tree)

  def chunk(self, config, states, data=None):
    """``chunk`` updates: a host rollout of ``num_steps`` per seed, then the
    jitted, seed-vmapped ``learn``. Returns ``(states, metrics)`` with
    ``[seeds, chunk]`` metrics, as the compiled chunk does."""
    del data
    programs = self._programs(config)
    states = self._mine(states)
    rows = []
    with self._on_mine():
      for _ in range(self._chunk):
        trajectory, states = self.rollout(config, states)
        states, metrics = programs["learn"](config, states, trajectory)
        rows.append(metrics)
      metrics = jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *rows)
    return self._whole((states, metrics))

  def rollout(self, config, states):
    """``(trajectory, states)``: ``num_steps`` host steps of every seed,
    no update (:meth:`chunk` learns from them). The learner's ``prepare``
    gives the actor its arrays; each step's observations go through the
    actor's ``observe`` and ``act`` on the host, no program launched; the
    raw steps then go through the learner's ``replay`` (normalised as the
    learner sees them, with the values and log-probabilities of the
    actions taken). The envs' first observations go through its
    ``restart``, with the states given then (fresh or restored)."""
    programs = self._programs(config)
    if self._obs is None:
      self._obs, states = programs["restart"](
          config, states, self._per_seed(self._env.obs))
    arrays, states = programs["prepare"](config, states)
    actor = programs["actor"]
    actor.load(jax.device_get(arrays))
    first = np.asarray(self._obs)

    def policy(obs, t):
      if t:
        obs = actor.observe(self._per_seed(obs))
      else:  # the learner's restart or replay normalised it already
        obs = first
      action = actor.act(obs, t)
      return action.reshape((-1,) + action.shape[2:])

    steps = self._env.collect(policy, config.num_steps)
    field = lambda name: jnp.asarray(  # noqa: E731
        self._per_seed_time(steps[name]))
    rollout = envs.HostRollout(
        obs=self._obs, action=field("action"),
        steps=envs.HostStep(
            obs=jnp.asarray(self._per_seed_time(steps["obs"][1:])),
            reward=field("reward"), terminated=field("terminated"),
            truncated=field("truncated"),
            final_observation=field("next_obs")),
        episode_return=field("episode_return"),
        episode_length=field("episode_length"))
    trajectory, self._obs, states = programs["replay"](config, states,
                                                       rollout)
    return trajectory, states

  def _per_seed_time(self, x: np.ndarray) -> np.ndarray:
    """``[T, seeds * N, ...]`` -> ``[seeds, T, N, ...]``."""
    x = x.reshape((x.shape[0], self._seeds, -1) + x.shape[2:])
    return np.moveaxis(x, 0, 1)

  def _per_seed(self, x: np.ndarray) -> np.ndarray:
    """``[seeds * N, ...]`` -> ``[seeds, N, ...]``."""
    return x.reshape((self._seeds, -1) + x.shape[1:])

  def evaluate(self, config, states, keys: jax.Array, data=None):
    """``[seeds, eval_episodes]`` returns of the deterministic policy, one
    episode per env; NaN for an episode that did not end within the
    environment's time limit (or 10,000 steps without one). Over several
    processes each evaluates its own seeds, and every process gets all."""
    del data
    mode = _jitted(self._stepping, self._task)["mode"]
    states = self._mine(states)
    with self._on_mine():
      returns = self._evaluate(config, states, self._my_keys(keys), mode)
    return self._gathered(np.stack(returns))

  def _evaluate(self, config, states, keys, mode) -> list[np.ndarray]:
    returns = []
    for i, key in enumerate(keys):
      state = jax.tree.map(lambda x: x[i], states)
      env = envs.GymnasiumVecEnv(config.env_id, self._eval_episodes,
                                 seed=_env_seed(key), **self._env_kwargs)
      limit = env.envs.spec.max_episode_steps if env.envs.spec else None
      done = np.zeros(self._eval_episodes, bool)
      result = np.full(self._eval_episodes, np.nan)
      for _ in range(limit or 10_000):
        step = env.step(np.asarray(mode(config, state, jnp.asarray(env.obs))))
        ended = (step["terminated"] | step["truncated"]) & ~done
        result[ended] = step["episode_return"][ended]
        done |= ended
        if done.all():
          break
      env.close()
      returns.append(result)
    return returns

  def _gathered(self, mine: np.ndarray) -> np.ndarray:
    """Every process's float64 rows, in seed order, on every process
    (sent as their bits: JAX without x64 would round them to float32)."""
    if self._spread is None:
      return mine
    from jax.experimental import multihost_utils

    bits = multihost_utils.process_allgather(mine.view(np.uint32),
                                             tiled=True)
    return np.ascontiguousarray(np.asarray(bits)).view(np.float64)

  def close(self) -> None:
    if self._env is not None:
      self._env.close()
    self._env = None
    self._obs = None


def train(learner: Any, config, key: jax.Array, *, env_id: str | None = None,
          seed: int = 0, **env_kwargs: Any):
  """Trains a learner on host-stepped Gymnasium environments, from Python
  (the runner does the same with progress, checkpoints and evaluation).

  Args:
    learner: a :class:`~jaxrl_align.learner.Learner` with ``stepping``, or
      a learner module with one as ``LEARNER``
      (:mod:`~jaxrl_align.agents.ppo`, :mod:`~jaxrl_align.agents.trpo`).
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
  learner = getattr(learner, "LEARNER", learner)
  if env_id is not None and env_id != config.env_id:
    config = config.replace(env_id=env_id)
  run = HostPrograms(learner, 1, 1, env_seed=seed, **env_kwargs)
  states = run.init(config, key[None], tasks.make(config.env_id, host=True))
  history = []
  try:
    for _ in range(learner.num_updates(config)):
      states, metrics = run.chunk(config, states)
      history.append({k: float(v[0, 0]) for k, v in metrics.items()})
  finally:
    run.close()
  return jax.tree.map(lambda x: x[0], states), history
