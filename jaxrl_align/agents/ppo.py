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

from jaxrl_align import configs
from jaxrl_align import envs
from jaxrl_align import kl_control
from jaxrl_align import losses
from jaxrl_align import normalization
from jaxrl_align import sgd
from jaxrl_align.agents import on_policy
from jaxrl_align.agents import tasks

Array = jax.Array
static = configs.static


@struct.dataclass
class PPOConfig(on_policy.OnPolicyConfig):
  """PPO settings: the fields of
  :class:`~jaxrl_align.agents.on_policy.OnPolicyConfig` and these.

  Attributes:
    anneal_lr: *static* linear learning-rate annealing to 0.
    objective: *static* ``"clip"`` or ``"kl_penalty"`` (adaptive β).
    clip_value: *static* clip the value loss (``vf_clip_eps``).
    vf_clip_form: *static* ``"max"`` (PPO2, CleanRL: the larger of the
      clipped and unclipped errors) or ``"prediction"`` (Stable-Baselines3:
      the clipped prediction's error only); see
      :func:`~jaxrl_align.losses.clipped_value_loss`.
    clip_eps: clip range ε > 0 of the ratio (inf: no clipping).
    vf_clip_eps: clip range of the value (with ``clip_value``; inf: none).
    ent_coef: entropy bonus coefficient ≥ 0.
    vf_coef: value-loss coefficient ≥ 0, weighing ``½·MSE`` (SB3's
      ``vf_coef`` weighs the MSE: its ``c`` is ``2c`` here).
    target_kl: stop the epochs once the approx. KL exceeds it (inf: never).
    kl_target: d_targ of the KL-penalty objective.
    kl_beta_init: initial β of the KL-penalty objective.
  """
  anneal_lr: bool = static()
  objective: str = static(choices=("clip", "kl_penalty"))
  clip_value: bool = static()
  vf_clip_form: str = static(choices=("max", "prediction"))
  clip_eps: Any = None
  vf_clip_eps: Any = None
  ent_coef: Any = None
  vf_coef: Any = None
  target_kl: Any = None
  kl_target: Any = None
  kl_beta_init: Any = None

  def __post_init__(self):
    on_policy.finish_config(self, "ppo")
    for name in ("clip_eps", "vf_clip_eps", "target_kl"):  # inf: off
      configs.check_range(self, name, 0.0, float("inf"), low_inclusive=False)
    configs.check_finite_positive(self, "kl_target")
    configs.check_finite_nonnegative(self, "ent_coef", "vf_coef",
                                     "kl_beta_init")


class PPOState(NamedTuple):
  """Everything that changes during training (arrays only).

  Attributes:
    params: network parameters.
    opt_state: Adam state.
    rollout: the env state, current observation and rollout key (only the
      key for host-stepped environments).
    key: key for minibatch shuffling.
    update: int32 number of updates done.
    kl_coef: β of the KL-penalty objective.
  """
  params: Any
  opt_state: Any
  rollout: envs.RolloutState
  key: Array
  update: Array
  kl_coef: Array


def init(config: PPOConfig, key: Array,
         task: tasks.Task | None = None) -> PPOState:
  """Initial parameters, optimiser and environments for one run.

  Args:
    config: the settings.
    key: PRNG key.
    task: the run's :class:`~jaxrl_align.agents.tasks.Task` (default:
      ``tasks.make(config.env_id)``); for one stepped on the host the
      state has no JAX-native rollout.
  """
  _, params, rollout, k_learn = on_policy.start(config, key, task)
  with sgd.optax_numerics():
    opt_state = sgd.clipped_adam(config.max_grad_norm).init(params)
  return PPOState(
      params=params, opt_state=opt_state, rollout=rollout, key=k_learn,
      update=jnp.zeros((), jnp.int32),
      kl_coef=jnp.asarray(config.kl_beta_init, jnp.float32))


def _loss(config, policy, params, kl_coef, batch):
  """PPO loss on a minibatch and its diagnostics."""
  out, value = policy.apply(params, batch["obs"])
  log_prob = policy.head.log_prob(out, batch["action"])
  entropy = policy.head.entropy(out)
  advantage = normalization.whiten(batch["advantage"],
                                   ddof=config.adv_norm_ddof)
  if config.objective == "clip":
    policy_loss = losses.ppo_clip_loss(log_prob, batch["log_prob"], advantage,
                                       clip_eps=config.clip_eps)
  else:
    kl = policy.head.kl(batch["old_out"], out)
    policy_loss = losses.ppo_kl_penalty_loss(
        log_prob, batch["log_prob"], advantage, kl, beta=kl_coef)
  if config.clip_value:
    value_loss = losses.clipped_value_loss(value, batch["value"],
                                           batch["target"],
                                           clip_eps=config.vf_clip_eps,
                                           form=config.vf_clip_form)
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


def learn(config: PPOConfig, state: PPOState, trajectory: envs.Trajectory,
          policy: on_policy.Policy | None = None):
  """Learns from one ``[T, N]`` trajectory (JAX-native or host-stepped).

  GAE bootstraps from the value of ``trajectory.next_obs`` (the true
  successor), so truncated episodes are bootstrapped and terminated ones are
  not. Then ``update_epochs`` passes of ``num_minibatches`` Adam steps, each
  with per-minibatch advantage normalisation and global-norm clipping; once
  an epoch ends with approx. KL above ``target_kl`` the remaining steps are
  masked out (inside ``jit``).

  Args:
    config: the settings.
    state: the learner state.
    trajectory: ``[T, N]`` transitions with ``extras["log_prob"]`` and
      ``extras["value"]`` recorded by the rollout's policy.
    policy: the network and head that produced it (default: the policy
      of ``tasks.make(config.env_id)``).

  Returns:
    ``(state, metrics)``, metrics a dict of scalars (means over the
    minibatch steps that ran), among them ``grad_norm``, the global norm of
    the gradient before clipping.
  """
  if policy is None:
    policy = on_policy.task_policy(config)
  t, n = trajectory.reward.shape
  advantage, target = on_policy.advantages_and_targets(
      policy, state.params, trajectory, config.gamma, config.gae_lambda)
  batch = {"obs": trajectory.obs, "action": trajectory.action,
           "log_prob": trajectory.extras["log_prob"],
           "value": trajectory.extras["value"], "advantage": advantage,
           "target": target}
  batch = sgd.flatten_time(batch, t, n)
  if config.objective == "kl_penalty":
    batch["old_out"] = policy.apply(state.params, batch["obs"])[0]

  lr = jnp.asarray(config.learning_rate, jnp.float32)
  if config.anneal_lr:
    lr = sgd.linear_schedule(lr, state.update, config.num_updates)
  optimizer = sgd.clipped_adam(config.max_grad_norm)
  grad_fn = jax.grad(lambda p, b: _loss(config, policy, p, state.kl_coef, b),
                     has_aux=True)

  def _update_minibatch(carry, minibatch):
    params, opt_state = carry
    grads, diag = grad_fn(params, minibatch)
    diag["grad_norm"] = optax.global_norm(grads)  # before clipping
    return sgd.descend(optimizer, grads, opt_state, params, lr), diag

  key, learn_key = jax.random.split(state.key)
  (params, opt_state), diag, active = sgd.minibatch_epochs(
      _update_minibatch, (state.params, state.opt_state), batch, learn_key,
      epochs=config.update_epochs, num_minibatches=config.num_minibatches,
      stop=lambda diag: diag["approx_kl"] > config.target_kl)
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


update, train, evaluate = on_policy.functions(init, learn)

LEARNER = on_policy.make_learner(
    "ppo", PPOConfig, init, learn, update, evaluate,
    finite_metrics=("policy_loss", "value_loss"))
