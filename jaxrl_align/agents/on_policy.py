"""What the on-policy learners (PPO, TRPO) share, written once.

A learner is its config, its state, ``init`` and ``learn``; this module
turns those into ``update`` (one JAX-native rollout and ``learn`` on it),
``train`` (``init`` and ``lax.scan`` of ``update``), ``evaluate`` and the
:class:`~jaxrl_align.learner.Learner` the runner drives. The environment
and the :class:`Policy` are built once per program from the config's
static fields and handed to ``learn``; ``learn`` itself never builds an
environment, so host-stepped Gymnasium environments
(:mod:`jaxrl_align.agents.host`) pass the policy built from their own
spaces.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

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
from jaxrl_align import normalization
from jaxrl_align import parallel
from jaxrl_align.agents import presets
from jaxrl_align.agents import reporting

Array = jax.Array

OBS_CLIP = 10.0
REWARD_CLIP = 10.0


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
    normalize_obs: *static* running observation normalisation.
    scale_reward: *static* reward scaling by the discounted-return std.
    use_sde: *static* generalized state-dependent exploration (gSDE,
      Raffin et al. 2022) for a Box action space: a ``[hidden[-1], D]``
      log-std and exploration matrices held for ``sde_sample_freq`` steps.
    sde_sample_freq: *static* with gSDE, steps between exploration-matrix
      draws (-1: once per rollout; else it must divide ``num_steps``).
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
  normalize_obs: bool = configs.static()
  scale_reward: bool = configs.static()
  use_sde: bool = configs.static()
  sde_sample_freq: int = configs.static()
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
  coefficient must be finite.
  """
  envs.check_env_id(config.env_id)
  configs.fill_defaults(config, presets.preset(algo, config.env_id),
                        presets.DEFAULTS[algo])
  if not envs.is_jax_native(config.env_id):
    envs.spaces(config.env_id)  # refuses spaces the learners do not take
    if config.normalize_obs or config.scale_reward or config.use_sde:
      raise ValueError(f"`normalize_obs`, `scale_reward` and `use_sde` are "
                       f"JAX-native only; {config.env_id} is stepped on "
                       f"the host: set them to false.")
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
  if config.use_sde:  # Box actions only: refuses a Discrete space now
    heads.for_space(envs.spaces(config.env_id)[1], 1)
  freq = config.sde_sample_freq
  if not (isinstance(freq, int) and (freq == -1 or (
      0 < freq <= config.num_steps and config.num_steps % freq == 0))):
    raise ValueError(f"`sde_sample_freq` must be -1 or a divisor of "
                     f"`num_steps` ({config.num_steps}), got {freq!r}.")
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
  ``Discrete``), with ``config.hidden`` layers."""
  head = heads.for_space(action_space,
                         config.hidden[-1] if config.use_sde else None)
  return Policy(networks.ActorCritic(head, config.hidden, config.ortho_init),
                head,
                tuple(int(d) for d in observation_space.shape))


def make_env(config):
  """The config's JAX-native training vector env, with its wrappers."""
  if not envs.is_jax_native(config.env_id):
    raise ValueError(
        f"{config.env_id} is not a JAX-native task, so it cannot be stepped "
        f"inside `train` or `update`: train it on the host "
        f"(jaxrl_align.agents.host, or `jaxrl-align train --env "
        f"{config.env_id}`).")
  vec, params = envs.make_vec(config.env_id, config.num_envs)
  if config.normalize_obs:
    vec = envs.NormalizeObservation(vec, clip=OBS_CLIP)
  if config.scale_reward:
    vec = envs.ScaleReward(vec, gamma=config.gamma, clip=REWARD_CLIP)
  return vec, params


def _env_policy(config, env, env_params) -> Policy:
  return make_policy(config, env.observation_space(env_params),
                     env.action_space(env_params))


def task_policy(config) -> Policy:
  """The policy of the config's task, from its spaces (JAX-native or
  Gymnasium)."""
  return make_policy(config, *envs.spaces(config.env_id))


def obs_stats(config, env_state):
  """The observation statistics inside a training env state (or None)."""
  if not config.normalize_obs:
    return None
  if config.scale_reward:
    env_state = env_state.inner
  return env_state.obs_stats


# ------------------------------------------------------------------ state


def start(config, key: Array, policy: Policy | None = None):
  """``(policy, params, rollout, learn_key)`` of a fresh run.

  Without ``policy``: the config's JAX-native task, its policy and a reset
  rollout state. With one (host-stepped environments): the rollout state
  holds only the key the policy samples with (the environments live on the
  host).
  """
  k_params, k_env, k_learn = jax.random.split(key, 3)
  if policy is None:
    env, env_params = make_env(config)
    policy = _env_policy(config, env, env_params)
    rollout = _shard_envs(config, envs.rollout_init(env, env_params, k_env))
  else:
    rollout = envs.RolloutState(None, None, k_env)
  return policy, policy.init(k_params, config.log_std_init), rollout, k_learn


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


def update(config, state, learn):
  """One JAX-native rollout of ``num_steps`` and ``learn`` on it."""
  env, env_params = make_env(config)
  policy = _env_policy(config, env, env_params)
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


def evaluate(config, state, key: Array, num_episodes: int) -> Array:
  """Deterministic-policy returns of ``num_episodes`` episodes, one per env.

  Each env runs until its first episode ends (the task's time limit bounds
  the scan). Observations are normalised with the training run's statistics,
  frozen.
  """
  _checks.check_positive_int("num_episodes", num_episodes)
  env, env_params = envs.make_vec(config.env_id, num_episodes)
  policy = _env_policy(config, env, env_params)
  stats = obs_stats(config, state.rollout.env_state)
  horizon = int(env_params.max_steps_in_episode)
  key, reset_key = jax.random.split(key)
  obs, env_state = env.reset(reset_key, env_params)

  def _env_step(carry, step_key):
    obs, env_state, finished, returns = carry
    if stats is not None:
      obs = normalization.normalize(stats, obs, clip=OBS_CLIP)
    action = policy.mode(state.params, obs)
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
  ``learn``: the wrappers every on-policy learner shares."""

  def update_fn(config, state):
    """One JAX-native rollout of ``num_steps`` and ``learn`` on it.

    Returns:
      ``(state, metrics)``: ``learn``'s metrics plus the mean return and
      length of the episodes that ended in this update (NaN when none did),
      their count, and the env steps so far.
    """
    return update(config, state, learn)

  def train(config, key: Array):
    """A whole run: ``init`` then ``lax.scan`` of ``update``.

    Returns:
      ``(state, metrics)``: the final state and a dict of ``[num_updates]``
      metric arrays.
    """
    state = init(config, key)
    return jax.lax.scan(lambda s, _: update(config, s, learn), state, None,
                        length=num_updates(config))

  def evaluate_fn(config, state, key: Array, num_episodes: int) -> Array:
    """``[num_episodes]`` returns of the deterministic policy, one episode
    per env, observations normalised with the run's statistics (frozen)."""
    return evaluate(config, state, key, num_episodes)

  return update_fn, train, evaluate_fn


def make_learner(name: str, config_type: type, init: Callable,
                 update_fn: Callable, evaluate_fn: Callable,
                 finite_metrics: tuple[str, ...],
                 programs: Callable | None = None) -> learner.Learner:
  """The runner's :class:`~jaxrl_align.learner.Learner` of an on-policy
  algorithm (``data`` unused: the environment is part of the program;
  ``programs``: the host-stepped programs for tasks that are not JAX-native,
  :func:`jaxrl_align.agents.host.programs`)."""
  return learner.Learner(
      name=name, config_type=config_type, defaults=presets.DEFAULTS[name],
      init=lambda config, key, data: init(config, key),
      update=lambda config, state, data: update_fn(config, state),
      evaluate=lambda config, state, key, data, size: evaluate_fn(
          config, state, key, size),
      num_updates=num_updates, units="env_steps",
      units_per_update=lambda config: config.num_envs * config.num_steps,
      progress_metric="episode_return", finite_metrics=finite_metrics,
      summarize=reporting.summarize, report=reporting.report, programs=programs, notes=notes)

