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
from jaxrl_align import configs
from jaxrl_align import envs
from jaxrl_align import losses
from jaxrl_align import normalization
from jaxrl_align import sgd
from jaxrl_align import trust_region
from jaxrl_align.agents import on_policy
from jaxrl_align.agents import tasks

Array = jax.Array
static = configs.static


@struct.dataclass
class TRPOConfig(on_policy.OnPolicyConfig):
  """TRPO settings: the fields of
  :class:`~jaxrl_align.agents.on_policy.OnPolicyConfig` (``learning_rate``,
  ``max_grad_norm``, ``num_minibatches`` and ``update_epochs`` are the
  critic's) and these.

  Attributes:
    cg_iters: *static* conjugate-gradient iterations.
    backtrack_iters: *static* line-search trials.
    fisher_subsample: *static* use every k-th sample for Fisher-vector
      products (1: all).
    max_kl: trust-region radius δ > 0.
    cg_damping: Fisher damping ≥ 0.
    backtrack_coeff: line-search shrink factor in (0, 1).
  """
  cg_iters: int = static()
  backtrack_iters: int = static()
  fisher_subsample: int = static()
  max_kl: Any = None
  cg_damping: Any = None
  backtrack_coeff: Any = None

  def __post_init__(self):
    on_policy.finish_config(self, "trpo")
    for name in ("cg_iters", "backtrack_iters", "fisher_subsample"):
      _checks.check_positive_int(name, getattr(self, name))
    configs.check_finite_positive(self, "max_kl")
    configs.check_finite_nonnegative(self, "cg_damping")
    configs.check_range(self, "backtrack_coeff", 0.0, 1.0,
                        low_inclusive=False, high_inclusive=False)


class TRPOState(NamedTuple):
  """Everything that changes during training (arrays only).

  Attributes:
    params: network parameters (actor, log-std and critic).
    opt_state: the critic's Adam state.
    rollout: env state, current observation and rollout key (only the key
      for host-stepped environments).
    key: key for critic minibatch shuffling.
    update: int32 number of updates done.
  """
  params: Any
  opt_state: Any
  rollout: envs.RolloutState
  key: Array
  update: Array


def _split(params):
  """``(policy params, critic params)`` of an :class:`ActorCritic`."""
  inner = params["params"]
  policy = {"params": {k: v for k, v in inner.items() if k != "critic"}}
  return policy, inner["critic"]


def _merge(policy, critic):
  return {"params": dict(policy["params"], critic=critic)}


def init(config: TRPOConfig, key: Array,
         task: tasks.Task | None = None) -> TRPOState:
  """Initial parameters, critic optimiser and environments for one run
  (``task``: as for :func:`jaxrl_align.agents.ppo.init`)."""
  _, params, rollout, k_learn = on_policy.start(config, key, task)
  with sgd.optax_numerics():
    opt_state = sgd.clipped_adam(config.max_grad_norm).init(_split(params)[1])
  return TRPOState(params=params, opt_state=opt_state, rollout=rollout,
                   key=k_learn, update=jnp.zeros((), jnp.int32))


def _fit_critic(config: TRPOConfig, policy, actor, critic, opt_state, batch,
                key: jax.Array):
  """``update_epochs`` Adam epochs of the critic on the value loss (the
  actor fixed): ``(critic, opt_state, losses, gradient norms)``, the last
  two per minibatch step."""
  optimizer = sgd.clipped_adam(config.max_grad_norm)
  lr = jnp.asarray(config.learning_rate, jnp.float32)

  def critic_loss(c, minibatch):
    value = policy.apply(_merge(actor, c), minibatch["obs"])[1]
    return losses.value_loss(value, minibatch["target"])

  def _update_minibatch(carry, minibatch):
    c, opt = carry
    loss, grads = jax.value_and_grad(critic_loss)(c, minibatch)
    return (sgd.descend(optimizer, grads, opt, c, lr),
            (loss, optax.global_norm(grads)))

  (critic, opt_state), (value_losses, grad_norms), _ = sgd.minibatch_epochs(
      _update_minibatch, (critic, opt_state),
      {"obs": batch["obs"], "target": batch["target"]}, key,
      epochs=config.update_epochs, num_minibatches=config.num_minibatches)
  return critic, opt_state, value_losses, grad_norms


def learn(config: TRPOConfig, state: TRPOState, trajectory: envs.Trajectory,
          policy: on_policy.Policy | None = None):
  """Learns from one ``[T, N]`` trajectory (JAX-native or host-stepped).

  GAE (bootstrapping from the true successors' values), then one
  :func:`~jaxrl_align.trpo_step` of the policy on the whole batch with
  normalised advantages, then ``update_epochs`` Adam epochs of the critic.

  Args:
    config: the settings.
    state: the learner state.
    trajectory: ``[T, N]`` transitions with ``extras["log_prob"]`` and
      ``extras["value"]``.
    policy: the network and head that produced it (default: the policy
      of ``tasks.make(config.env_id)``).

  Returns:
    ``(state, metrics)``, metrics a dict of scalars, among them the line
    search's ``kl``, ``accepted``, ``step_fraction`` and ``cg_residual``,
    and ``value_grad_norm``, the critic's gradient norm before clipping
    (mean over its minibatch steps).
  """
  if policy is None:
    policy = on_policy.task_policy(config)
  head = policy.head
  t, n = trajectory.reward.shape
  advantage, target = on_policy.advantages_and_targets(
      policy, state.params, trajectory, config.gamma, config.gae_lambda)
  batch = sgd.flatten_time(
      {"obs": trajectory.obs, "action": trajectory.action,
       "log_prob": trajectory.extras["log_prob"], "advantage": advantage,
       "target": target}, t, n)
  advantage = normalization.whiten(batch["advantage"],
                                   ddof=config.adv_norm_ddof)
  actor, critic = _split(state.params)
  old_out = jax.lax.stop_gradient(policy.apply(state.params, batch["obs"])[0])

  def policy_out(p, obs):
    return policy.apply(_merge(p, critic), obs)[0]

  def loss_fn(p):
    log_prob = head.log_prob(policy_out(p, batch["obs"]), batch["action"])
    return -jnp.mean(jnp.exp(log_prob - batch["log_prob"]) * advantage)

  def kl_fn(p):
    return jnp.mean(head.kl(old_out, policy_out(p, batch["obs"])))

  # Fisher-vector products in Gauss–Newton form through the head's outputs
  # on every `fisher_subsample`-th sample (exact at the old policy)
  every = config.fisher_subsample
  sub_obs = batch["obs"][::every]
  sub_old = head.every(old_out, every)
  fisher_output = (lambda p: policy_out(p, sub_obs),
                   lambda out: jnp.mean(head.kl(sub_old, out)))

  new_actor, info = trust_region.trpo_step(
      loss_fn, kl_fn, actor, max_kl=config.max_kl, cg_iters=config.cg_iters,
      cg_damping=config.cg_damping, backtrack_coeff=config.backtrack_coeff,
      backtrack_iters=config.backtrack_iters, fisher_output=fisher_output)

  key, learn_key = jax.random.split(state.key)
  critic, opt_state, value_losses, value_grad_norms = _fit_critic(
      config, policy, new_actor, critic, state.opt_state, batch, learn_key)

  entropy = head.entropy(policy_out(new_actor, batch["obs"]))
  metrics = {
      "policy_loss": info.loss, "value_loss": value_losses.mean(),
      "value_grad_norm": value_grad_norms.mean(),
      "entropy": entropy.mean(), "kl": info.kl,
      "accepted": info.accepted.astype(jnp.float32),
      "step_fraction": info.step_fraction, "cg_residual": info.cg_residual,
      "loss_improvement": info.loss_improvement,
      "backtracks": info.backtracks.astype(jnp.float32),
      "learning_rate": jnp.asarray(config.learning_rate, jnp.float32)}
  new_state = state._replace(params=_merge(new_actor, critic),
                             opt_state=opt_state, key=key,
                             update=state.update + 1)
  return new_state, metrics


update, train, evaluate = on_policy.functions(init, learn)

LEARNER = on_policy.make_learner(
    "trpo", TRPOConfig, init, learn, update, evaluate,
    finite_metrics=("policy_loss", "value_loss"))
