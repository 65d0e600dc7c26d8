"""Proximal Policy Optimization as one pure, jittable ``train(config, key)``.

``init`` builds the state, ``update`` runs one rollout and learns from it,
``train`` is ``init`` followed by ``lax.scan`` over ``update``::

    config = PPOConfig(env_id="CartPole-v1", total_timesteps=100_000)
    state, metrics = jax.jit(train)(config, key)
    states, metrics = jax.jit(jax.vmap(train, in_axes=(None, 0)))(config, keys)

``learn(config, state, trajectory)`` is the learning half alone, shared by
the JAX-native rollout and a host loop over
:class:`~jaxrl_align.envs.GymnasiumVecEnv`.

References:
  Schulman et al., 2017, "Proximal Policy Optimization Algorithms",
  https://arxiv.org/abs/1707.06347; Huang et al., 2022, "The 37
  Implementation Details of Proximal Policy Optimization", ICLR Blog Track.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxrl_align import envs
from jaxrl_align import kl_control
from jaxrl_align import losses
from jaxrl_align.agents import common

Array = jax.Array

# Settings that learn each task (see docs/agents.md for where they come from
# and what they reach). Any field passed explicitly overrides its preset.
PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(total_timesteps=100_000, num_envs=8, num_steps=32,
                        num_minibatches=1, update_epochs=20,
                        learning_rate=1e-3, gamma=0.98, gae_lambda=0.8,
                        ent_coef=0.0),
    "Acrobot-v1": dict(total_timesteps=200_000, num_envs=16, num_steps=256,
                       num_minibatches=64, update_epochs=4, normalize_obs=True,
                       ent_coef=0.0, gae_lambda=0.94),
    "MountainCar-v0": dict(total_timesteps=1_000_000, num_envs=16,
                           num_steps=16, num_minibatches=1, update_epochs=4,
                           normalize_obs=True, gae_lambda=0.98, ent_coef=0.0),
    "MountainCarContinuous-v0": dict(
        total_timesteps=200_000, num_envs=1, num_steps=8, num_minibatches=1,
        update_epochs=10, learning_rate=7.77e-5, gamma=0.9999,
        gae_lambda=0.9, clip_eps=0.1, ent_coef=0.00429, vf_coef=0.19,
        max_grad_norm=5.0, normalize_obs=True, log_std_init=-3.29),
    "Pendulum-v1": dict(total_timesteps=200_000, num_envs=16, num_steps=128,
                        num_minibatches=32, update_epochs=10,
                        learning_rate=1e-3, gamma=0.9, gae_lambda=0.95,
                        ent_coef=0.0),
}

PRESETS.update({probe: {} for probe in envs.PROBE_IDS})

DEFAULTS: dict[str, Any] = dict(
    total_timesteps=100_000, num_envs=8, num_steps=128, num_minibatches=4,
    update_epochs=4, hidden=(64, 64), normalize_obs=False, scale_reward=False,
    anneal_lr=True, objective="clip", clip_value=False, learning_rate=2.5e-4,
    gamma=0.99, gae_lambda=0.95, clip_eps=0.2, vf_clip_eps=0.2, ent_coef=0.01,
    vf_coef=0.5, max_grad_norm=0.5, target_kl=float("inf"), kl_target=0.01,
    kl_beta_init=1.0, log_std_init=0.0)


def _static(default=None):
  return struct.field(pytree_node=False, default=default)


@struct.dataclass
class PPOConfig:
  """PPO settings. Static fields (marked *static*) fix shapes and structure;
  the rest are pytree leaves, so a ``vmap`` over configs sweeps them.
  ``None`` means "the task's preset" (see :data:`PRESETS`).

  Attributes:
    env_id: *static* one of the five classic-control ids.
    total_timesteps: *static* env steps in the run.
    num_envs: *static* parallel environments.
    num_steps: *static* steps per env per rollout.
    num_minibatches: *static* minibatches per epoch (must divide the batch).
    update_epochs: *static* passes over each batch.
    hidden: *static* hidden sizes of the actor and critic MLPs.
    normalize_obs: *static* running observation normalisation.
    scale_reward: *static* reward scaling by the discounted-return std.
    anneal_lr: *static* linear learning-rate annealing to 0.
    objective: *static* ``"clip"`` or ``"kl_penalty"`` (adaptive β).
    clip_value: *static* PPO2-style value clipping.
    learning_rate: Adam step size (ε = 1e-5).
    gamma: discount in [0, 1].
    gae_lambda: GAE λ in [0, 1].
    clip_eps: clip range ε > 0 of the ratio.
    vf_clip_eps: clip range of the value (with ``clip_value``).
    ent_coef: entropy bonus coefficient ≥ 0.
    vf_coef: value-loss coefficient ≥ 0.
    max_grad_norm: global-norm gradient clip > 0.
    target_kl: stop the epochs once the approx. KL exceeds it (inf: never).
    kl_target: d_targ of the KL-penalty objective.
    kl_beta_init: initial β of the KL-penalty objective.
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
  anneal_lr: bool = _static()
  objective: str = _static()
  clip_value: bool = _static()
  learning_rate: Any = None
  gamma: Any = None
  gae_lambda: Any = None
  clip_eps: Any = None
  vf_clip_eps: Any = None
  ent_coef: Any = None
  vf_coef: Any = None
  max_grad_norm: Any = None
  target_kl: Any = None
  kl_target: Any = None
  kl_beta_init: Any = None
  log_std_init: Any = None

  def __post_init__(self):
    common.fill_presets(self, PRESETS, DEFAULTS)
    common.check_batch(self)
    if self.objective not in ("clip", "kl_penalty"):
      raise ValueError(f"`objective` must be 'clip' or 'kl_penalty', got "
                       f"{self.objective!r}.")
    inf = float("inf")
    common.check_range(self, "learning_rate", 0.0, inf, low_inclusive=False)
    common.check_range(self, "gamma", 0.0, 1.0)
    common.check_range(self, "gae_lambda", 0.0, 1.0)
    for name in ("clip_eps", "vf_clip_eps", "max_grad_norm", "target_kl",
                 "kl_target"):
      common.check_range(self, name, 0.0, inf, low_inclusive=False)
    for name in ("ent_coef", "vf_coef", "kl_beta_init"):
      common.check_range(self, name, 0.0, inf)
    common.check_range(self, "log_std_init", -20.0, 5.0)

  @property
  def num_updates(self) -> int:
    return common.num_updates(self)


class PPOState(NamedTuple):
  """Everything that changes during training (arrays only).

  Attributes:
    params: network parameters.
    opt_state: Adam state.
    rollout: the env state, current observation and rollout key.
    key: key for minibatch shuffling.
    update: int32 number of updates done.
    kl_coef: β of the KL-penalty objective.
    episodes: last mean episode return and length.
  """
  params: Any
  opt_state: Any
  rollout: envs.RolloutState
  key: Array
  update: Array
  kl_coef: Array
  episodes: common.EpisodeMetrics


def _optimizer(config):
  # Flat: Adam runs on one vector, not one small kernel per parameter array.
  return optax.flatten(optax.chain(
      optax.clip_by_global_norm(config.max_grad_norm),
      optax.scale_by_adam(eps=1e-5)))


def init(config: PPOConfig, key: Array) -> PPOState:
  """Initial parameters, optimiser and environments for one run."""
  env, env_params, network = common.setup(config)
  k_params, k_env, k_learn = jax.random.split(key, 3)
  params = common.init_params(config, network, env, env_params, k_params)
  with common.optax_numerics():
    opt_state = _optimizer(config).init(params)
  zero = jnp.zeros((), jnp.float32)
  return PPOState(
      params=params, opt_state=opt_state,
      rollout=envs.rollout_init(env, env_params, k_env), key=k_learn,
      update=jnp.zeros((), jnp.int32),
      kl_coef=jnp.asarray(config.kl_beta_init, jnp.float32),
      episodes=common.EpisodeMetrics(zero, zero))


def _loss(config, network, params, kl_coef, batch):
  """PPO loss on a minibatch and its diagnostics."""
  out, value = network.apply(params, batch["obs"])
  log_prob, entropy = common.log_prob_entropy(network, out, batch["action"])
  advantage = common.normalize(batch["advantage"])
  if config.objective == "clip":
    policy_loss = losses.ppo_clip_loss(log_prob, batch["log_prob"], advantage,
                                       clip_eps=config.clip_eps)
  else:
    kl = common.policy_kl(network, batch["old_out"], out)
    policy_loss = losses.ppo_kl_penalty_loss(
        log_prob, batch["log_prob"], advantage, kl, beta=kl_coef)
  if config.clip_value:
    value_loss = losses.clipped_value_loss(value, batch["value"],
                                           batch["target"],
                                           clip_eps=config.vf_clip_eps)
  else:
    value_loss = losses.value_loss(value, batch["target"])
  entropy_loss = losses.entropy_loss(entropy)
  total = (policy_loss + config.vf_coef * value_loss
           + config.ent_coef * entropy_loss)
  diagnostics = {
      "policy_loss": policy_loss, "value_loss": value_loss,
      "entropy": -entropy_loss,
      "approx_kl": losses.approx_kl(log_prob, batch["log_prob"]),
      "clip_fraction": losses.clip_fraction(log_prob, batch["log_prob"],
                                            clip_eps=config.clip_eps)}
  return total, diagnostics


def learn(config: PPOConfig, state: PPOState, trajectory: envs.Trajectory):
  """Learns from one ``[T, N]`` trajectory (JAX-native or host-stepped).

  GAE bootstraps from the value of ``trajectory.next_obs`` (the true
  successor), so truncated episodes are bootstrapped and terminated ones are
  not. Then ``update_epochs`` passes of ``num_minibatches`` Adam steps, each
  with per-minibatch advantage normalisation and global-norm clipping; once
  an epoch ends with approx. KL above ``target_kl`` the remaining steps are
  masked out (inside ``jit``).

  Returns:
    ``(state, metrics)``, metrics a dict of scalars.
  """
  _, _, network = common.setup(config)
  t, n = trajectory.reward.shape
  advantage, target = common.advantages_and_targets(
      network, state.params, trajectory, config.gamma, config.gae_lambda)
  batch = {"obs": trajectory.obs, "action": trajectory.action,
           "log_prob": trajectory.extras["log_prob"],
           "value": trajectory.extras["value"], "advantage": advantage,
           "target": target}
  batch = common.flatten_batch(batch, t, n)
  if config.objective == "kl_penalty":
    batch["old_out"] = network.apply(state.params, batch["obs"])[0]

  lr = jnp.asarray(config.learning_rate, jnp.float32)
  if config.anneal_lr:
    lr = common.linear_schedule(lr, state.update, config.num_updates)
  optimizer = _optimizer(config)
  grad_fn = jax.grad(lambda p, b: _loss(config, network, p, state.kl_coef, b),
                     has_aux=True)

  def _update_minibatch(carry, minibatch):
    params, opt_state = carry
    grads, diag = grad_fn(params, minibatch)
    with common.optax_numerics():
      updates, opt_state = optimizer.update(grads, opt_state, params)
    return (jax.tree.map(lambda p, u: p - lr * u, params, updates),
            opt_state), diag

  def _update_epoch(carry, epoch_key):
    # Early stopping by masking: once stopped, an epoch's results are
    # discarded (one select per epoch, not per minibatch).
    params, opt_state, stopped = carry
    (new_params, new_opt_state), diag = jax.lax.scan(
        _update_minibatch, (params, opt_state),
        common.minibatches(epoch_key, batch, config.num_minibatches))
    keep = lambda new, old: jax.tree.map(
        lambda a, b: jnp.where(stopped, b, a), new, old)
    params, opt_state = keep((new_params, new_opt_state), (params, opt_state))
    active = jnp.broadcast_to(~stopped, (config.num_minibatches,))
    stopped = stopped | (diag["approx_kl"][-1] > config.target_kl)
    return (params, opt_state, stopped), (diag, active)

  key, learn_key = jax.random.split(state.key)
  (params, opt_state, _), (diag, active) = jax.lax.scan(
      _update_epoch, (state.params, state.opt_state, jnp.zeros((), bool)),
      jax.random.split(learn_key, config.update_epochs))
  active = active.astype(jnp.float32)
  metrics = {k: (v * active).sum() / jnp.maximum(active.sum(), 1)
             for k, v in diag.items()}
  metrics["minibatch_updates"] = active.sum()
  metrics["learning_rate"] = lr

  kl_coef = state.kl_coef
  if config.objective == "kl_penalty":
    controller = kl_control.ppo_kl_controller(config.kl_beta_init,
                                              target=config.kl_target)
    kl_coef = controller.update(kl_control.KLControllerState(kl_coef),
                                metrics["approx_kl"]).coef
  metrics["kl_coef"] = kl_coef
  new_state = state._replace(params=params, opt_state=opt_state, key=key,
                             update=state.update + 1, kl_coef=kl_coef)
  return new_state, metrics


def update(config: PPOConfig, state: PPOState):
  """One JAX-native rollout of ``num_steps`` and :func:`learn` on it.

  Returns:
    ``(state, metrics)``: :func:`learn`'s metrics plus the mean return and
    length of the episodes that finished (the previous values when none
    did), their count, and the env steps so far.
  """
  return common.update(config, state, learn)


def train(config: PPOConfig, key: Array):
  """A whole run: ``init`` then ``lax.scan`` of ``update``.

  Returns:
    ``(state, metrics)``: the final :class:`PPOState` and a dict of
    ``[num_updates]`` metric arrays.
  """
  state = init(config, key)
  return jax.lax.scan(lambda s, _: update(config, s), state, None,
                      length=config.num_updates)


def evaluate(config: PPOConfig, state: PPOState, key: Array,
             num_episodes: int) -> Array:
  """``[num_episodes]`` returns of the deterministic policy, one episode per
  env, observations normalised with the run's statistics (frozen)."""
  return common.evaluate(config, state, key, num_episodes)
