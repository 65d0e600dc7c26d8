"""What the on-policy learners (PPO, TRPO) share, written once.

A learner is its config, its state, ``init`` and ``learn``; this module
turns those into ``update`` (one JAX-native rollout and ``learn`` on it),
``train`` (``init`` and ``lax.scan`` of ``update``), ``evaluate`` and the
:class:`~jaxrl_align.learner.Learner` the runner drives. The environment
and the policy come from one :class:`~jaxrl_align.agents.tasks.Task`,
built once per run (by the caller, else from ``config.env_id``) and handed
to each of them; ``learn`` takes the :class:`~jaxrl_align.agents.policy.
Policy` and never builds an environment, so host-stepped Gymnasium
environments (:mod:`jaxrl_align.host.stepping`) pass the policy of their own
task.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from jaxrl_align import _checks
from jaxrl_align import advantages
from jaxrl_align import configs
from jaxrl_align import envs
from jaxrl_align import heads
from jaxrl_align import learner
from jaxrl_align import networks
from jaxrl_align import parallel
from jaxrl_align.agents import host_actor
from jaxrl_align.agents import policy as policy_lib
from jaxrl_align.agents import presets
from jaxrl_align.agents import tasks

Array = jax.Array


# ------------------------------------------------------------------ configs


@struct.dataclass
class OnPolicyConfig:
  """The fields every on-policy learner's config has (PPO's and TRPO's
  configs extend it). *Static* fields fix shapes and structure; the rest are
  pytree leaves, so a ``vmap`` over configs sweeps them. ``None`` means "the
  task's preset, else the algorithm's default" (see
  :mod:`jaxrl_align.agents.presets`).

  Attributes:
    env_id: *static* a JAX-native task (the five classic-control ids, the
      probes) or any registered Gymnasium id (stepped on the host).
    total_timesteps: *static* env steps in the run, in whole batches of
      ``num_envs * num_steps``: a remainder is not run (the runner says so
      before it starts, and records both numbers).
    num_envs: *static* parallel environments.
    num_steps: *static* steps per env per rollout.
    num_minibatches: *static* minibatches per epoch (must divide the batch).
    update_epochs: *static* passes over each batch.
    hidden: *static* hidden sizes of the actor and critic MLPs.
    ortho_init: *static* orthogonal init of both MLPs (false: PyTorch's
      default uniform init, SB3's ``ortho_init=False``).
    activation: *static* the MLPs' hidden activation, ``"tanh"`` or
      ``"relu"`` (SB3's ``activation_fn``).
    normalize_obs: *static* running observation normalisation (on the host
      too: :meth:`~jaxrl_align.agents.tasks.Task.host_env`).
    scale_reward: *static* reward scaling by the discounted-return std
      (likewise).
    use_sde: *static* generalized state-dependent exploration (gSDE,
      Raffin et al. 2022) for a Box action space: a ``[hidden[-1], D]``
      log-std and exploration matrices held for ``sde_sample_freq`` steps.
    sde_sample_freq: *static* with gSDE, steps between exploration-matrix
      draws (-1: once per rollout; else it must divide ``num_steps``).
    adv_norm_ddof: *static* 0 or 1, the degrees of freedom of the
      advantage standard deviation in its normalisation (PPO: per
      minibatch; TRPO: over the batch; SB3, sb3-contrib, CleanRL: 1).
    learning_rate: Adam step size (ε = 1e-5).
    gamma: discount in [0, 1].
    gae_lambda: GAE λ in [0, 1].
    max_grad_norm: global-norm gradient clip > 0 (inf: none).
    log_std_init: initial log-std of a Gaussian policy.
  """
  env_id: str = configs.static("CartPole-v1")
  total_timesteps: int = configs.static()
  num_envs: int = configs.static()
  num_steps: int = configs.static()
  num_minibatches: int = configs.static()
  update_epochs: int = configs.static()
  hidden: tuple = configs.static()
  ortho_init: bool = configs.static()
  activation: str = configs.static(choices=tuple(networks.ACTIVATIONS))
  normalize_obs: bool = configs.static()
  scale_reward: bool = configs.static()
  use_sde: bool = configs.static()
  sde_sample_freq: int = configs.static()
  adv_norm_ddof: int = configs.static()
  learning_rate: Any = None
  gamma: Any = None
  gae_lambda: Any = None
  max_grad_norm: Any = None
  log_std_init: Any = None

  @property
  def num_updates(self) -> int:
    return num_updates(self)


def finish_config(config, algo: str) -> None:
  """``__post_init__`` work common to PPO and TRPO configs: presets, the
  task id, the static fields that fix the batch layout, ranges, choices.

  ``inf`` is accepted only where it means "off" (``max_grad_norm``, and
  the algorithms' clip ranges and ``target_kl``); a learning rate or a
  coefficient must be finite. The id is looked up in the registries, but
  no Gymnasium environment is made: what needs one (its spaces) is
  checked where the task is built (:func:`jaxrl_align.agents.tasks.make`,
  :meth:`~jaxrl_align.agents.tasks.Task.check`).
  """
  envs.check_env_id(config.env_id)
  configs.fill_defaults(config, presets.preset(algo, config.env_id),
                        presets.DEFAULTS[algo])
  if not envs.is_jax_native(config.env_id) and config.use_sde:
    raise ValueError(f"`use_sde` is JAX-native only; {config.env_id} is "
                     f"stepped on the host: set it to false.")
  for name in ("total_timesteps", "num_envs", "num_steps", "update_epochs",
               "num_minibatches"):
    _checks.check_positive_int(name, getattr(config, name))
  batch = config.num_envs * config.num_steps
  if batch % config.num_minibatches:
    raise ValueError(
        f"`num_minibatches` ({config.num_minibatches}) must divide the batch "
        f"num_envs * num_steps = {batch}.")
  if config.total_timesteps < batch:
    raise ValueError(
        f"`total_timesteps` ({config.total_timesteps}) must be at least one "
        f"batch, num_envs * num_steps = {batch}.")
  if not (isinstance(config.hidden, tuple) and config.hidden and all(
      isinstance(h, int) and h > 0 for h in config.hidden)):
    raise ValueError(f"`hidden` must be a non-empty tuple of positive ints, "
                     f"got {config.hidden!r}.")
  if config.use_sde:  # JAX-native here (gymnax's spaces): Box actions only
    heads.for_space(envs.spaces(config.env_id)[1], 1)
  freq = config.sde_sample_freq
  if not (isinstance(freq, int) and (freq == -1 or (
      0 < freq <= config.num_steps and config.num_steps % freq == 0))):
    raise ValueError(f"`sde_sample_freq` must be -1 or a divisor of "
                     f"`num_steps` ({config.num_steps}), got {freq!r}.")
  if config.adv_norm_ddof not in (0, 1):
    raise ValueError(f"`adv_norm_ddof` must be 0 or 1, got "
                     f"{config.adv_norm_ddof!r}.")
  configs.check_choices(config)
  configs.check_finite_positive(config, "learning_rate")
  configs.check_range(config, "gamma", 0.0, 1.0)
  configs.check_range(config, "gae_lambda", 0.0, 1.0)
  configs.check_range(config, "max_grad_norm", 0.0, float("inf"),
                      low_inclusive=False)
  configs.check_range(config, "log_std_init", -20.0, 5.0)


def num_updates(config) -> int:
  """Rollout-and-learn iterations in a run: ``total_timesteps`` rounded
  down to whole batches of ``num_envs * num_steps``."""
  return config.total_timesteps // (config.num_envs * config.num_steps)


def env_steps(config) -> int:
  """The env steps a run takes: ``num_updates * num_envs * num_steps``."""
  return num_updates(config) * config.num_envs * config.num_steps


def notes(config) -> list[str]:
  """What a user should know before a run: a ``total_timesteps`` that is
  not whole batches."""
  batch = config.num_envs * config.num_steps
  if config.total_timesteps % batch == 0:
    return []
  return [f"total_timesteps {config.total_timesteps:,} is not a whole number "
          f"of batches of num_envs * num_steps = {batch}: the run takes "
          f"{env_steps(config):,} env steps ({num_updates(config)} updates)"]


# ------------------------------------------------------ environment, policy
# The policy and the task live in `policy.py` and `tasks.py`; these names
# stay here for the callers that know them.

Policy = policy_lib.Policy
make_policy = policy_lib.make_policy
OBS_CLIP = tasks.OBS_CLIP
REWARD_CLIP = tasks.REWARD_CLIP


def _task(config, task):
  return tasks.make(config.env_id) if task is None else task


def make_env(config, task: tasks.Task | None = None):
  """``(vec_env, params)``: the config's JAX-native training vector env,
  with its wrappers (:meth:`~jaxrl_align.agents.tasks.Task.training_env`)."""
  task = _task(config, task)
  return task.training_env(config), task.env_params


def task_policy(config, task: tasks.Task | None = None) -> Policy:
  """The policy of the config's task, from its spaces (JAX-native or
  Gymnasium)."""
  return _task(config, task).policy(config)


def obs_stats(config, env_state, task: tasks.Task | None = None):
  """The observation statistics inside a training env state (or None)."""
  if not config.normalize_obs:
    return None
  return _task(config, task).training_env(config).obs_stats(env_state)


def deterministic_policy(config, state, task: tasks.Task | None = None
                         ) -> Callable[[Array], Array]:
  """A state's deterministic policy, ``obs [B, *obs_shape] -> action``,
  with observations normalised as in training (the run's statistics,
  frozen): what an evaluation needs, without reading the state's layout."""
  task = _task(config, task)
  policy = task.policy(config)
  normalize = task.observation_normalizer(config, state.rollout.env_state)
  return lambda obs: policy.mode(state.params, normalize(obs))


# ------------------------------------------------------------------ state


def start(config, key: Array, task: tasks.Task | None = None):
  """``(policy, params, rollout, learn_key)`` of a fresh run.

  A JAX-native task (by default the config's) gets a reset rollout state;
  for one stepped on the host the rollout state holds the key the policy
  samples with and the state of the config's wrappers over the host's
  environments (:meth:`~jaxrl_align.agents.tasks.Task.host_env`: fresh
  statistics, not yet updated with a reset's observations), the
  environments themselves living on the host.
  """
  task = _task(config, task)
  k_params, k_env, k_learn = jax.random.split(key, 3)
  policy = task.policy(config)
  if task.jax_native:
    rollout = _shard_envs(config, envs.rollout_init(
        task.training_env(config), task.env_params, k_env))
  else:
    rollout = envs.RolloutState(_host_env_state(config, task), None, k_env)
  return policy, policy.init(k_params, config.log_std_init), rollout, k_learn


def _host_env_state(config, task: tasks.Task):
  """The host wrapper stack's state before any observation: its
  ``reset`` with the statistics left as initialised (zeros do not
  count)."""
  obs = jnp.zeros((config.num_envs,) + tuple(task.observation_space.shape),
                  jnp.float32)
  return _frozen(task.host_env(config)).reset(None, obs)[1]


def _frozen(env):
  """The wrapper stack with ``update_stats`` off in every layer."""
  if isinstance(env, envs.Given):
    return env
  return dataclasses.replace(env, env=_frozen(env.env), update_stats=False)


def finished_episodes(trajectory, axis=(0, 1)) -> dict[str, Array]:
  """Statistics of the episodes that ended in a trajectory.

  Returns:
    ``episode_return`` and ``episode_length``, their means, NaN when no
    episode ended (no value: nothing is carried over from earlier
    updates), and ``episodes_finished``, their count; reduced over
    ``axis`` (the time and env axes).
  """
  done = (trajectory.terminated | trajectory.truncated).astype(jnp.float32)
  count = done.sum(axis)
  some = count > 0

  def mean(x):
    total = (x.astype(jnp.float32) * done).sum(axis)
    return jnp.where(some, total / jnp.maximum(count, 1), jnp.nan)

  return {"episode_return": mean(trajectory.episode_return),
          "episode_length": mean(trajectory.episode_length),
          "episodes_finished": count}


# ---------------------------------------------------------------- learning


def advantages_and_targets(policy: Policy, params, trajectory, gamma, lam):
  """GAE from the trajectory, bootstrapping from the true successors.

  Returns:
    ``(advantages [T, N], returns [T, N])``.
  """
  t, n = trajectory.reward.shape
  flat_next = trajectory.next_obs.reshape((t * n,) + trajectory.next_obs.shape[2:])
  next_value = policy.apply(params, flat_next)[1].reshape(t, n)
  return advantages.gae(trajectory.reward, trajectory.extras["value"],
                        next_value, trajectory.terminated,
                        trajectory.truncated, gamma=gamma, lam=lam)


def rollout_and_learn(config, state, learn, task: tasks.Task | None = None):
  """One JAX-native rollout of ``num_steps`` and ``learn`` on it."""
  task = _task(config, task)
  env, env_params = task.training_env(config), task.env_params
  policy = task.policy(config)
  state = state._replace(rollout=_shard_envs(config, state.rollout))
  if config.use_sde:
    every = (config.num_steps if config.sde_sample_freq == -1
             else config.sde_sample_freq)
    rollout, trajectory = envs.rollout_resampled(
        lambda key: policy.explore(state.params, key, config.num_envs), env,
        env_params, state.rollout, config.num_steps, every)
  else:
    rollout, trajectory = envs.rollout(policy.act(state.params), env,
                                       env_params, state.rollout,
                                       config.num_steps)
  trajectory = parallel.shard_batch(trajectory, axis=1, size=config.num_envs)
  state, metrics = learn(config, state._replace(
      rollout=_shard_envs(config, rollout)), trajectory, policy)
  metrics.update(finished_episodes(trajectory),
                 env_steps=(state.update * config.num_envs
                            * config.num_steps).astype(jnp.float32))
  return state, metrics


def _shard_envs(config, rollout):
  """The per-environment leaves of a rollout state over the ``data``
  devices (running statistics and keys stay whole)."""
  return parallel.shard_batch(rollout, size=config.num_envs)


def evaluate(config, state, key: Array, num_episodes: int,
             task: tasks.Task | None = None) -> Array:
  """Deterministic-policy returns of ``num_episodes`` episodes, one per env.

  Each env runs until its first episode ends (the task's time limit bounds
  the scan). Observations are normalised with the training run's statistics,
  frozen.
  """
  _checks.check_positive_int("num_episodes", num_episodes)
  task = _task(config, task)
  env, env_params = task.vec_env(num_episodes), task.env_params
  act = deterministic_policy(config, state, task)
  horizon = task.max_episode_steps
  key, reset_key = jax.random.split(key)
  obs, env_state = env.reset(reset_key, env_params)

  def _env_step(carry, step_key):
    obs, env_state, finished, returns = carry
    action = act(obs)
    obs, env_state, _, terminated, truncated, info = env.step(
        step_key, env_state, action, env_params)
    done = terminated | truncated
    returns = jnp.where(done & ~finished, info["episode_return"], returns)
    return (obs, env_state, finished | done, returns), None

  init = (obs, env_state, jnp.zeros(num_episodes, bool),
          jnp.zeros(num_episodes, jnp.float32))
  (_, _, _, returns), _ = jax.lax.scan(
      _env_step, init, jax.random.split(key, horizon))
  return returns


# ----------------------------------------------------- the runner's view


def functions(init: Callable, learn: Callable):
  """``(update, train, evaluate)`` of a learner given its ``init`` and
  ``learn``: the wrappers every on-policy learner shares. Each takes the
  run's :class:`~jaxrl_align.agents.tasks.Task` as an optional last
  argument (default: built from ``config.env_id``)."""

  def update_fn(config, state, task: tasks.Task | None = None):
    """One JAX-native rollout of ``num_steps`` and ``learn`` on it.

    Returns:
      ``(state, metrics)``: ``learn``'s metrics plus the mean return and
      length of the episodes that ended in this update (NaN when none did),
      their count, and the env steps so far.
    """
    return rollout_and_learn(config, state, learn, task)

  def train(config, key: Array, task: tasks.Task | None = None):
    """A whole run: ``init`` then ``lax.scan`` of ``update``, on one task.

    Returns:
      ``(state, metrics)``: the final state and a dict of ``[num_updates]``
      metric arrays.
    """
    task = _task(config, task)
    state = init(config, key, task)
    return jax.lax.scan(
        lambda s, _: rollout_and_learn(config, s, learn, task), state, None,
        length=num_updates(config))

  def evaluate_fn(config, state, key: Array, num_episodes: int,
                  task: tasks.Task | None = None) -> Array:
    """``[num_episodes]`` returns of the deterministic policy, one episode
    per env, observations normalised with the run's statistics (frozen)."""
    return evaluate(config, state, key, num_episodes, task)

  return update_fn, train, evaluate_fn


def _host_prepare(config, state, task):
  """The actor's arrays for one rollout of ``num_steps``: its layers, the
  head's parameters, the observation statistics and the head's noise for
  every step, drawn with the state's rollout key (advanced)."""
  task = _task(config, task)
  policy = task.policy(config)
  key, noise_key = jax.random.split(state.rollout.key)
  layers, extra = policy.network.actor_arrays(state.params)
  stats = (task.host_env(config).obs_stats(state.rollout.env_state)
           if config.normalize_obs else None)
  arrays = host_actor.ActorArrays(
      layers=layers, extra=extra, obs_stats=stats,
      noise=policy.head.noise(noise_key, (config.num_steps,
                                          config.num_envs)))
  return arrays, state._replace(rollout=state.rollout._replace(key=key))


def _host_actor(config, task):
  """The NumPy actor of a host-stepped run (built once per config)."""
  policy = _task(config, task).policy(config)
  return host_actor.HostActor(
      policy.head, config.activation,
      OBS_CLIP if config.normalize_obs else None)


def _host_replay(config, state, rollout, task):
  """A host rollout through the config's wrappers, step by step (as the
  JAX-native training env steps: observations normalised, rewards
  scaled, statistics updated), then the policy's values and
  log-probabilities of the actions taken, for the whole rollout at once:
  ``(trajectory, last obs, state)``."""
  task = _task(config, task)
  env, policy = task.host_env(config), task.policy(config)

  def one(env_state, step):
    obs, env_state, reward, _, _, info = env.step(None, env_state, None,
                                                  step)
    return env_state, (obs, reward, info["final_observation"])

  env_state, (seen, reward, final) = jax.lax.scan(
      one, state.rollout.env_state, rollout.steps)
  obs = jnp.concatenate([rollout.obs[None], seen[:-1]])
  t, n = reward.shape
  flat = lambda x: x.reshape((t * n,) + x.shape[2:])  # noqa: E731
  out, value = policy.apply(state.params, flat(obs))
  log_prob = policy.head.log_prob(out, flat(rollout.action))
  trajectory = envs.Trajectory(
      obs=obs, action=rollout.action, reward=reward,
      terminated=rollout.steps.terminated,
      truncated=rollout.steps.truncated, next_obs=final,
      extras={"log_prob": log_prob.reshape(t, n),
              "value": value.reshape(t, n)},
      episode_return=rollout.episode_return,
      episode_length=rollout.episode_length)
  return trajectory, seen[-1], state._replace(
      rollout=state.rollout._replace(env_state=env_state))


def stepping(learn: Callable) -> learner.Stepping:
  """The :class:`~jaxrl_align.learner.Stepping` of an on-policy learner
  given its ``learn``: for environments stepped on the host
  (:mod:`jaxrl_align.host.stepping`), which thereby never read the state.
  ``data`` is the run's task (its policy is built from that environment's
  own spaces). The host acts with :class:`~jaxrl_align.agents.host_actor.
  HostActor` (NumPy) and the trajectory is the rollout replayed through
  the config's wrappers (:meth:`~jaxrl_align.agents.tasks.Task.host_env`),
  as the JAX-native rollout records it."""

  def learn_trajectory(config, state, trajectory, task):
    """``learn`` on a host trajectory ``[T, N, ...]``, with the episode
    statistics and env-step count the JAX-native ``update`` reports."""
    state, metrics = learn(config, state, trajectory,
                           _task(config, task).policy(config))
    metrics = dict(metrics, **finished_episodes(trajectory))
    metrics["env_steps"] = (state.update * config.num_envs
                            * config.num_steps).astype(jnp.float32)
    return state, metrics

  def mode(config, state, obs, task):
    return deterministic_policy(config, state, task)(obs)

  def restart(config, state, obs, task):
    """The host envs' reset observations through the config's wrappers
    (statistics kept): ``(obs, state)``."""
    env = _task(config, task).host_env(config)
    obs, env_state = env.restart(state.rollout.env_state, obs)
    return obs, state._replace(rollout=state.rollout._replace(
        env_state=env_state))

  return learner.Stepping(prepare=_host_prepare, actor=_host_actor,
                          replay=_host_replay, learn=learn_trajectory,
                          mode=mode, restart=restart)


def make_learner(name: str, config_type: type, init: Callable,
                 learn: Callable, update_fn: Callable, evaluate_fn: Callable,
                 finite_metrics: tuple[str, ...]) -> learner.Learner:
  """The runner's :class:`~jaxrl_align.learner.Learner` of an on-policy
  algorithm (``data``: the run's :class:`~jaxrl_align.agents.tasks.Task`,
  or None to build it from ``config.env_id`` in each program), with its
  :func:`stepping` for tasks that are not JAX-native."""
  return learner.Learner(
      name=name, config_type=config_type,
      init=lambda config, key, data: init(config, key, data),
      update=lambda config, state, data: update_fn(config, state, data),
      evaluate=lambda config, state, key, data, size: evaluate_fn(
          config, state, key, size, data),
      num_updates=num_updates, units="env_steps",
      units_per_update=lambda config: config.num_envs * config.num_steps,
      finite_metrics=finite_metrics, stepping=stepping(learn))
