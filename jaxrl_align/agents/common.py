"""Pieces shared by the PPO and TRPO learners.

Configs are frozen ``flax.struct`` dataclasses: fields marked static fix
shapes and program structure; the others are pytree leaves, so ``jax.vmap``
over a batch of configs sweeps hyperparameters. Hyperparameters left as
``None`` are filled from the task's preset when the config is built.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces

from jaxrl_align import _checks
from jaxrl_align import advantages
from jaxrl_align import distributions
from jaxrl_align import envs
from jaxrl_align import networks
from jaxrl_align import normalization

Array = jax.Array


# ------------------------------------------------------------------ configs


def fill_presets(config, presets: dict[str, dict[str, Any]],
                 defaults: dict[str, Any]) -> None:
  """Replaces ``None`` fields by the env's preset, then the global default."""
  if config.env_id not in presets:
    raise ValueError(f"Unknown `env_id` {config.env_id!r}; known ids: "
                     f"{', '.join(presets)}.")
  preset = presets[config.env_id]
  for field in dataclasses.fields(config):
    if getattr(config, field.name) is None:
      value = preset.get(field.name, defaults.get(field.name))
      object.__setattr__(config, field.name, value)


def is_python_number(x) -> bool:
  return (isinstance(x, (int, float, np.number)) and not isinstance(x, bool)
          ) or (isinstance(x, np.ndarray) and x.ndim == 0)


def check_range(config, name: str, low: float, high: float, *,
                low_inclusive: bool = True, high_inclusive: bool = True):
  """Range check of a hyperparameter leaf when it holds a Python number."""
  value = getattr(config, name)
  if is_python_number(value):
    _checks.check_scalar_in_range(name, value, low, high,
                                  low_inclusive=low_inclusive,
                                  high_inclusive=high_inclusive)


def check_batch(config) -> None:
  """Checks the static fields that fix the batch layout."""
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


def num_updates(config) -> int:
  """Number of rollout-and-learn iterations in a run."""
  return config.total_timesteps // (config.num_envs * config.num_steps)


# ------------------------------------------------- environment and network


OBS_CLIP = 10.0
REWARD_CLIP = 10.0


def make_env(config):
  """The config's training vector env, with its normalisation wrappers."""
  vec, params = envs.make_vec(config.env_id, config.num_envs)
  if config.normalize_obs:
    vec = envs.NormalizeObservation(vec, clip=OBS_CLIP)
  if config.scale_reward:
    vec = envs.ScaleReward(vec, gamma=config.gamma, clip=REWARD_CLIP)
  return vec, params


def obs_stats(config, env_state):
  """The observation statistics inside a training env state (or None)."""
  if not config.normalize_obs:
    return None
  if config.scale_reward:
    env_state = env_state.inner
  return env_state.obs_stats


def make_network(config, env, env_params) -> networks.ActorCritic:
  space = env.action_space(env_params)
  discrete = isinstance(space, spaces.Discrete)
  action_dim = int(space.n) if discrete else int(np.prod(space.shape))
  return networks.ActorCritic(action_dim=action_dim, discrete=discrete,
                              hidden=config.hidden)


def setup(config):
  """``(env, env_params, network)`` of a config (static: no arrays made)."""
  env, env_params = make_env(config)
  return env, env_params, make_network(config, env, env_params)


def init_params(config, network, env, env_params, key):
  obs_shape = tuple(env.observation_space(env_params).shape)
  params = network.init(key, jnp.zeros((1,) + obs_shape, jnp.float32))
  if not network.discrete:
    inner = dict(params["params"])
    inner["log_std"] = jnp.full_like(inner["log_std"], config.log_std_init)
    params = {"params": inner}
  return params


def sample_action(network, params, key, obs):
  """Samples from the policy; returns ``(action, log_prob, value)``."""
  out, value = network.apply(params, obs)
  if network.discrete:
    action = distributions.categorical_sample(key, out)
    return action, distributions.categorical_log_prob(out, action), value
  mean, log_std = out
  action = distributions.gaussian_sample(key, mean, log_std)
  return action, distributions.gaussian_log_prob(mean, log_std, action), value


def mode_action(network, params, obs):
  out, _ = network.apply(params, obs)
  if network.discrete:
    return distributions.categorical_mode(out)
  return distributions.gaussian_mode(*out)


def log_prob_entropy(network, out, action):
  """Log-probability of ``action`` and entropy, from the policy output."""
  if network.discrete:
    return (distributions.categorical_log_prob(out, action),
            distributions.categorical_entropy(out))
  mean, log_std = out
  return (distributions.gaussian_log_prob(mean, log_std, action),
          distributions.gaussian_entropy(mean, log_std))


def policy_kl(network, old_out, new_out):
  """Analytic ``KL(old || new)`` per state."""
  if network.discrete:
    return distributions.categorical_kl(old_out, new_out)
  return distributions.gaussian_kl(old_out[0], old_out[1], new_out[0],
                                   new_out[1])


# ------------------------------------------------------------------ learning


def compiler_options(backend: str | None = None) -> dict[str, Any]:
  """XLA options for compiling whole training programs.

  On CPU, LLVM optimisation level 1 instead of XLA's default (the highest):
  measured on a 2-core x86 machine (jax 0.10.2), it compiles the PPO and
  TRPO ``train`` programs in 0.57-0.67x the time and runs them as fast
  (``benchmarks/learners.py``). The code generated differs, so float results
  may differ in the last bits from a program compiled with the defaults
  (PPO's did not, TRPO's did); each program is still deterministic. Other
  backends get no options.

  Use: ``jax.jit(jax.vmap(ppo.train, in_axes=(None, 0)),
  compiler_options=compiler_options())``.

  Args:
    backend: ``"cpu"``, ``"gpu"``, ...; the default backend when None.

  Returns:
    A dict for ``jax.jit(..., compiler_options=...)``.
  """
  if (backend or jax.default_backend()) == "cpu":
    return {"xla_backend_optimization_level": 1}
  return {}


@contextlib.contextmanager
def optax_numerics():
  """optax's Adam computes ``decay ** count`` with an int32 count, which
  strict dtype promotion rejects; it is optax's arithmetic, so it runs
  under the standard rules."""
  with jax.numpy_dtype_promotion("standard"):
    yield


def advantages_and_targets(network, params, trajectory, gamma, lam):
  """GAE from the trajectory, bootstrapping from the true successors.

  Returns:
    ``(advantages [T, N], returns [T, N])``.
  """
  t, n = trajectory.reward.shape
  flat_next = trajectory.next_obs.reshape((t * n,) + trajectory.next_obs.shape[2:])
  next_value = network.apply(params, flat_next)[1].reshape(t, n)
  return advantages.gae(trajectory.reward, trajectory.extras["value"],
                        next_value, trajectory.terminated,
                        trajectory.truncated, gamma=gamma, lam=lam)


def flatten_batch(tree, t: int, n: int):
  return jax.tree.map(lambda x: x.reshape((t * n,) + x.shape[2:]), tree)


def permutation(key: Array, n: int) -> Array:
  """A uniformly random permutation of ``range(n)``, by one sort.

  ``jax.random.permutation`` sorts several rounds to break ties between the
  random sort keys; on CPU each sort of 2,048 keys costs ~0.4 ms, more than
  an epoch's gradient steps on small networks. One sort of 32-bit keys leaves
  two indices in their original order only when their keys tie
  (probability ≈ n² / 2³³ per call, 5e-4 at n = 2,048), which does not
  matter for minibatch shuffling.

  Returns:
    ``[n]`` int32.
  """
  bits = jax.random.bits(key, (n,), jnp.uint32)
  return jax.lax.sort_key_val(bits, jnp.arange(n, dtype=jnp.int32))[1]


def minibatches(key, batch, num_minibatches: int):
  """Shuffles a flat batch into ``[num_minibatches, size, ...]``.

  A single minibatch is the whole batch in its stored order: the losses are
  means over it, so shuffling would change nothing but summation order, and
  the sort costs as much as a gradient step on CPU.
  """
  size = jax.tree.leaves(batch)[0].shape[0]
  if num_minibatches == 1:
    return jax.tree.map(lambda x: x[None], batch)
  perm = permutation(key, size)
  return jax.tree.map(
      lambda x: x[perm].reshape((num_minibatches, size // num_minibatches)
                                + x.shape[1:]), batch)


def normalize(x: Array) -> Array:
  return (x - x.mean()) / (x.std() + 1e-8)


class EpisodeMetrics(NamedTuple):
  """Running summary of finished episodes, carried across updates."""
  last_return: Array
  last_length: Array


def episode_metrics(prev: EpisodeMetrics, trajectory):
  """Mean return/length of episodes finished in this trajectory, carrying the
  previous values forward when none finished (never NaN)."""
  done = (trajectory.terminated | trajectory.truncated).astype(jnp.float32)
  count = done.sum()
  mean_ret = (trajectory.episode_return * done).sum() / jnp.maximum(count, 1)
  mean_len = (trajectory.episode_length.astype(jnp.float32) * done).sum(
  ) / jnp.maximum(count, 1)
  new = EpisodeMetrics(jnp.where(count > 0, mean_ret, prev.last_return),
                       jnp.where(count > 0, mean_len, prev.last_length))
  return new, count


def evaluate_policy(config, network, params, obs_stats, key, num_episodes: int):
  """Deterministic-policy returns of ``num_episodes`` episodes, one per env.

  Each env runs until its first episode ends (the task's time limit bounds
  the scan). Observations are normalised with the training run's statistics,
  frozen (``obs_stats`` is ignored unless ``config.normalize_obs``).
  """
  _checks.check_positive_int("num_episodes", num_episodes)
  env, env_params = envs.make_vec(config.env_id, num_episodes)
  horizon = int(env_params.max_steps_in_episode)
  key, reset_key = jax.random.split(key)
  obs, env_state = env.reset(reset_key, env_params)

  def _env_step(carry, step_key):
    obs, env_state, finished, returns = carry
    if config.normalize_obs:
      obs = normalization.normalize(obs_stats, obs, clip=OBS_CLIP)
    action = mode_action(network, params, obs)
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


def linear_schedule(start: Array, update: Array, total: int) -> Array:
  """``start · (1 - update / total)``, the linear annealing of Huang et al."""
  return start * (1.0 - update.astype(jnp.float32) / total)



# ------------------------------------------------------------ update loop


def rollout_policy(network, params):
  """The rollout's policy: samples and records log-prob and value."""
  def policy_fn(key, obs):
    action, log_prob, value = sample_action(network, params, key, obs)
    return action, {"log_prob": log_prob, "value": value}
  return policy_fn


def update(config, state, learn_fn):
  """One JAX-native rollout of ``num_steps`` and ``learn_fn`` on it.

  ``state`` is a learner state with ``params``, ``rollout``, ``update`` and
  ``episodes`` fields.
  """
  env, env_params, network = setup(config)
  rollout, trajectory = envs.rollout(rollout_policy(network, state.params),
                                     env, env_params, state.rollout,
                                     config.num_steps)
  state, metrics = learn_fn(config, state._replace(rollout=rollout),
                            trajectory)
  episodes, finished = episode_metrics(state.episodes, trajectory)
  metrics.update(episode_return=episodes.last_return,
                 episode_length=episodes.last_length,
                 episodes_finished=finished,
                 env_steps=(state.update * config.num_envs
                            * config.num_steps).astype(jnp.float32))
  return state._replace(episodes=episodes), metrics


def evaluate(config, state, key, num_episodes):
  """Deterministic-policy returns of a learner state (see evaluate_policy)."""
  _, _, network = setup(config)
  return evaluate_policy(config, network, state.params,
                         obs_stats(config, state.rollout.env_state), key,
                         num_episodes)
