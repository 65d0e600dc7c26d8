"""Trust Region Policy Optimization as one pure, jittable ``train(config, key)``.

The same shape as :mod:`jaxrl_align.agents.ppo` (``init``, ``learn``,
``update``, ``train``, ``evaluate``), with the policy moved by
:func:`jaxrl_align.trpo_step` (conjugate gradient on Fisher-vector products,
then a line search that checks the KL and the surrogate) and the critic by
Adam epochs on the GAE returns.

References:
  Schulman et al., 2015, "Trust Region Policy Optimization",
  https://arxiv.org/abs/1502.05477.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxrl_align import _checks
from jaxrl_align import envs
from jaxrl_align import losses
from jaxrl_align import trust_region
from jaxrl_align.agents import common

Array = jax.Array

PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(total_timesteps=100_000, num_envs=8, num_steps=128,
                        num_minibatches=4, update_epochs=10, gamma=0.99,
                        gae_lambda=0.98, max_kl=0.01, cg_iters=15),
    "Acrobot-v1": dict(total_timesteps=200_000, num_envs=8, num_steps=256,
                       normalize_obs=True, gae_lambda=0.95),
    "MountainCar-v0": dict(total_timesteps=1_000_000, num_envs=16,
                           num_steps=64, normalize_obs=True, gae_lambda=0.98),
    "MountainCarContinuous-v0": dict(total_timesteps=200_000, num_envs=4,
                                     num_steps=256, normalize_obs=True,
                                     gamma=0.9999, log_std_init=-1.0),
    "Pendulum-v1": dict(total_timesteps=200_000, num_envs=4, num_steps=512,
                        num_minibatches=8, update_epochs=10, gamma=0.9,
                        gae_lambda=0.95, max_kl=0.01),
}
PRESETS.update({probe: {} for probe in envs.PROBE_IDS})

DEFAULTS: dict[str, Any] = dict(
    total_timesteps=100_000, num_envs=8, num_steps=128, num_minibatches=4,
    update_epochs=10, hidden=(64, 64), normalize_obs=False,
    scale_reward=False, cg_iters=10, backtrack_iters=10, fisher_subsample=1,
    learning_rate=1e-3, gamma=0.99, gae_lambda=0.95, max_kl=0.01,
    cg_damping=0.1, backtrack_coeff=0.8, max_grad_norm=0.5, log_std_init=0.0)


def _static(default=None):
  return struct.field(pytree_node=False, default=default)


@struct.dataclass
class TRPOConfig:
  """TRPO settings; *static* fields fix shapes, the rest are leaves.
  ``None`` means "the task's preset" (see :data:`PRESETS`).

  Attributes:
    env_id: *static* task id.
    total_timesteps: *static* env steps in the run.
    num_envs: *static* parallel environments.
    num_steps: *static* steps per env per rollout.
    num_minibatches: *static* critic minibatches per epoch.
    update_epochs: *static* critic epochs per update.
    hidden: *static* hidden sizes.
    normalize_obs: *static* running observation normalisation.
    scale_reward: *static* reward scaling.
    cg_iters: *static* conjugate-gradient iterations.
    backtrack_iters: *static* line-search trials.
    fisher_subsample: *static* use every k-th sample for Fisher-vector
      products (1: all).
    learning_rate: critic Adam step size.
    gamma: discount in [0, 1].
    gae_lambda: GAE λ in [0, 1].
    max_kl: trust-region radius δ > 0.
    cg_damping: Fisher damping ≥ 0.
    backtrack_coeff: line-search shrink factor in (0, 1).
    max_grad_norm: critic global-norm gradient clip > 0.
    log_std_init: initial log-std of a Gaussian policy.
  """
  env_id: str = _static("CartPole-v1")
  total_timesteps: int = _static()
  num_envs: int = _static()
  num_steps: int = _static()
  num_minibatches: int = _static()
  update_epochs: int = _static()
  hidden: tuple = _static()
  normalize_obs: bool = _static()
  scale_reward: bool = _static()
  cg_iters: int = _static()
  backtrack_iters: int = _static()
  fisher_subsample: int = _static()
  learning_rate: Any = None
  gamma: Any = None
  gae_lambda: Any = None
  max_kl: Any = None
  cg_damping: Any = None
  backtrack_coeff: Any = None
  max_grad_norm: Any = None
  log_std_init: Any = None

  def __post_init__(self):
    common.fill_presets(self, PRESETS, DEFAULTS)
    common.check_batch(self)
    for name in ("cg_iters", "backtrack_iters", "fisher_subsample"):
      _checks.check_positive_int(name, getattr(self, name))
    inf = float("inf")
    common.check_range(self, "learning_rate", 0.0, inf, low_inclusive=False)
    common.check_range(self, "gamma", 0.0, 1.0)
    common.check_range(self, "gae_lambda", 0.0, 1.0)
    common.check_range(self, "max_kl", 0.0, inf, low_inclusive=False)
    common.check_range(self, "cg_damping", 0.0, inf)
    common.check_range(self, "backtrack_coeff", 0.0, 1.0,
                       low_inclusive=False, high_inclusive=False)
    common.check_range(self, "max_grad_norm", 0.0, inf, low_inclusive=False)
    common.check_range(self, "log_std_init", -20.0, 5.0)

  @property
  def num_updates(self) -> int:
    return common.num_updates(self)


class TRPOState(NamedTuple):
  """Everything that changes during training (arrays only).

  Attributes:
    params: network parameters (actor, log-std and critic).
    opt_state: the critic's Adam state.
    rollout: env state, current observation and rollout key.
    key: key for critic minibatch shuffling.
    update: int32 number of updates done.
    episodes: last mean episode return and length.
  """
  params: Any
  opt_state: Any
  rollout: envs.RolloutState
  key: Array
  update: Array
  episodes: common.EpisodeMetrics


def _split(params):
  """``(policy params, critic params)`` of an :class:`ActorCritic`."""
  inner = params["params"]
  policy = {"params": {k: v for k, v in inner.items() if k != "critic"}}
  return policy, inner["critic"]


def _merge(policy, critic):
  return {"params": dict(policy["params"], critic=critic)}


def _critic_optimizer(config):
  # Flat: Adam runs on one vector, not one small kernel per parameter array.
  return optax.flatten(optax.chain(
      optax.clip_by_global_norm(config.max_grad_norm),
      optax.scale_by_adam(eps=1e-5)))


def init(config: TRPOConfig, key: Array) -> TRPOState:
  """Initial parameters, critic optimiser and environments for one run."""
  env, env_params, network = common.setup(config)
  k_params, k_env, k_learn = jax.random.split(key, 3)
  params = common.init_params(config, network, env, env_params, k_params)
  with common.optax_numerics():
    opt_state = _critic_optimizer(config).init(_split(params)[1])
  zero = jnp.zeros((), jnp.float32)
  return TRPOState(params=params, opt_state=opt_state,
                   rollout=envs.rollout_init(env, env_params, k_env),
                   key=k_learn, update=jnp.zeros((), jnp.int32),
                   episodes=common.EpisodeMetrics(zero, zero))


def learn(config: TRPOConfig, state: TRPOState, trajectory: envs.Trajectory):
  """Learns from one ``[T, N]`` trajectory (JAX-native or host-stepped).

  GAE (bootstrapping from the true successors' values), then one
  :func:`~jaxrl_align.trpo_step` of the policy on the whole batch with
  normalised advantages, then ``update_epochs`` Adam epochs of the critic.

  Returns:
    ``(state, metrics)``, metrics a dict of scalars, among them the line
    search's ``kl``, ``accepted``, ``step_fraction`` and ``cg_residual``.
  """
  _, _, network = common.setup(config)
  t, n = trajectory.reward.shape
  advantage, target = common.advantages_and_targets(
      network, state.params, trajectory, config.gamma, config.gae_lambda)
  batch = common.flatten_batch(
      {"obs": trajectory.obs, "action": trajectory.action,
       "log_prob": trajectory.extras["log_prob"], "advantage": advantage,
       "target": target}, t, n)
  advantage = common.normalize(batch["advantage"])
  policy, critic = _split(state.params)
  old_out = jax.lax.stop_gradient(network.apply(state.params, batch["obs"])[0])

  def policy_out(p, obs):
    return network.apply(_merge(p, critic), obs)[0]

  def loss_fn(p):
    log_prob, _ = common.log_prob_entropy(network, policy_out(p, batch["obs"]),
                                          batch["action"])
    return -jnp.mean(jnp.exp(log_prob - batch["log_prob"]) * advantage)

  def kl_fn(p):
    return jnp.mean(common.policy_kl(network, old_out,
                                     policy_out(p, batch["obs"])))

  fisher_kl_fn = None
  if config.fisher_subsample > 1:
    every = config.fisher_subsample
    sub_obs = batch["obs"][::every]
    # Gaussian outputs are (mean [B, D], log_std [D]): only the mean is
    # per-sample.
    sub_old = (old_out[::every] if network.discrete
               else (old_out[0][::every], old_out[1]))

    def fisher_kl_fn(p):
      return jnp.mean(common.policy_kl(network, sub_old,
                                       policy_out(p, sub_obs)))

  new_policy, info = trust_region.trpo_step(
      loss_fn, kl_fn, policy, max_kl=config.max_kl, cg_iters=config.cg_iters,
      cg_damping=config.cg_damping, backtrack_coeff=config.backtrack_coeff,
      backtrack_iters=config.backtrack_iters, fisher_kl_fn=fisher_kl_fn)

  optimizer = _critic_optimizer(config)
  lr = jnp.asarray(config.learning_rate, jnp.float32)

  def critic_loss(c, minibatch):
    value = network.apply(_merge(new_policy, c), minibatch["obs"])[1]
    return losses.value_loss(value, minibatch["target"])

  def _update_minibatch(carry, minibatch):
    c, opt_state = carry
    loss, grads = jax.value_and_grad(critic_loss)(c, minibatch)
    with common.optax_numerics():
      updates, opt_state = optimizer.update(grads, opt_state, c)
    return (jax.tree.map(lambda p, u: p - lr * u, c, updates), opt_state), loss

  def _update_epoch(carry, epoch_key):
    return jax.lax.scan(_update_minibatch, carry, common.minibatches(
        epoch_key, {"obs": batch["obs"], "target": batch["target"]},
        config.num_minibatches))

  key, learn_key = jax.random.split(state.key)
  (critic, opt_state), value_losses = jax.lax.scan(
      _update_epoch, (critic, state.opt_state),
      jax.random.split(learn_key, config.update_epochs))

  _, entropy = common.log_prob_entropy(
      network, policy_out(new_policy, batch["obs"]), batch["action"])
  metrics = {
      "policy_loss": info.loss, "value_loss": value_losses.mean(),
      "entropy": entropy.mean(), "kl": info.kl,
      "accepted": info.accepted.astype(jnp.float32),
      "step_fraction": info.step_fraction, "cg_residual": info.cg_residual,
      "loss_improvement": info.loss_improvement,
      "backtracks": info.backtracks.astype(jnp.float32),
      "learning_rate": lr}
  new_state = state._replace(params=_merge(new_policy, critic),
                             opt_state=opt_state, key=key,
                             update=state.update + 1)
  return new_state, metrics


def update(config: TRPOConfig, state: TRPOState):
  """One JAX-native rollout of ``num_steps`` and :func:`learn` on it."""
  return common.update(config, state, learn)


def train(config: TRPOConfig, key: Array):
  """A whole run: ``init`` then ``lax.scan`` of ``update``.

  Returns:
    ``(state, metrics)`` with ``[num_updates]`` metric arrays.
  """
  state = init(config, key)
  return jax.lax.scan(lambda s, _: update(config, s), state, None,
                      length=config.num_updates)


def evaluate(config: TRPOConfig, state: TRPOState, key: Array,
             num_episodes: int) -> Array:
  """``[num_episodes]`` returns of the deterministic policy."""
  return common.evaluate(config, state, key, num_episodes)
