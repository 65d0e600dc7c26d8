"""TRPO on the language model against a frozen reference, as a pure learner.

The iteration is :mod:`jaxrl_align.rlhf.rl`'s; the update moves the policy by
one :func:`jaxrl_align.trpo_step` on the whole batch: the surrogate
``mean[π/π_old · A]`` over response tokens, inside a trust region on the
exact categorical ``KL(π_old || π)`` over the whole vocabulary (the sampling
distributions, temperature and top-k applied), averaged over response
tokens; Fisher-vector products on the KL of the first ``fisher_fraction``
of the responses (cheaper, an estimate of the same matrix). The step is
capped short of the trust region's edge where the KL-regularised objective
stops rising along it (``optimum_fraction``, :func:`kl_penalty`): without
the cap every step has the trust region's size, and near π* the policy
jumps across it and back (docs/rlhf.md, "The RL step near the optimum").
The value — the critic, or the policy's scalar head alone — then takes
epochs of Adam steps on the clipped value loss (none with
``value_model="none"``).

Two KLs are reported: ``objective/kl`` (to the reference: the penalty in
the reward) and ``policy/trust_region_kl`` (to the rollout policy: the
constraint, at most ``max_kl`` when a step is taken).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxrl_align import _checks
from jaxrl_align import configs
from jaxrl_align import distributions
from jaxrl_align import losses
from jaxrl_align import sgd
from jaxrl_align import trust_region
from jaxrl_align.rlhf import rl
from jaxrl_align.rlhf import rollout

Array = jax.Array
static = configs.static
masked_mean = losses.masked_mean


@struct.dataclass
class RLHFTRPOConfig(rl.RLConfig):
  """TRPO on the language model: :class:`~jaxrl_align.rlhf.rl.RLConfig`'s
  fields (``learning_rate``, ``epochs`` and ``num_minibatches`` are the
  value's) and these.

  Attributes:
    cg_iters: *static* conjugate-gradient iterations.
    backtrack_iters: *static* line-search trials.
    fisher_fraction: *static* share of the batch's responses (the first
      ones) whose KL gives the Fisher-vector products, in (0, 1]: an
      unbiased estimate of the same matrix at a fraction of the cost (the
      TRPO paper sub-samples 10%).
    max_kl: trust-region radius δ (mean per-token KL to the rollout
      policy).
    cg_damping: Fisher damping ≥ 0.
    backtrack_coeff: line-search shrink factor in (0, 1).
    optimum_fraction: κ ≥ 0: the step goes at most this fraction of the
      way to the maximiser, along the search direction, of the regularised
      objective's quadratic model (the surrogate in reward units, less
      ``β·KL(π || π_ref)`` with its curvature ``≈ β·F``): a natural step
      of at most ``κ/β`` (:func:`policy_step`). 1 is the whole way (soft
      policy iteration for a tabular policy); below 1 each step keeps part
      of the last policy and so averages the sampling noise of several
      batches; 0 turns the cap off, leaving the trust region alone
      (Schulman et al.'s step, which cycles about π*: docs/rlhf.md).
  """
  cg_iters: int = static(10)
  backtrack_iters: int = static(10)
  fisher_fraction: float = static(0.25)
  max_kl: Any = 0.01
  cg_damping: Any = 0.1
  backtrack_coeff: Any = 0.8
  optimum_fraction: Any = 0.25

  def __post_init__(self):
    rl.check_config(self, "RLHFTRPOConfig")
    for name in ("cg_iters", "backtrack_iters"):
      _checks.check_positive_int(f"RLHFTRPOConfig.{name}",
                                 getattr(self, name))
    _checks.check_scalar_in_range("RLHFTRPOConfig.fisher_fraction",
                                  self.fisher_fraction, 0, 1,
                                  low_inclusive=False)
    configs.check_finite_positive(self, "max_kl")
    configs.check_finite_nonnegative(self, "cg_damping")
    configs.check_range(self, "backtrack_coeff", 0.0, 1.0,
                        low_inclusive=False, high_inclusive=False)
    configs.check_finite_nonnegative(self, "optimum_fraction")


def _value_params(config, params, critic):
  """What the value's optimiser moves: the critic, or the policy's scalar
  head alone (the trust region moves the rest)."""
  return params["params"]["score"] if config.value_model == "policy" \
      else critic


def _with_head(params, head):
  return {**params, "params": {**params["params"], "score": head}}


def init_opt(config, params, critic):
  if config.value_model == "none":  # nothing for the optimiser to move
    return ()
  with sgd.optax_numerics():
    return rl.optimizer(config).init(_value_params(config, params, critic))


def fisher_rows(config: RLHFTRPOConfig) -> int:
  """Responses in the Fisher-vector products (at least one)."""
  return max(1, round(config.fisher_fraction * config.batch_size))


def objectives(config: RLHFTRPOConfig, params, exp: rollout.Experience):
  """What the trust-region step reads, at the rollout policy ``params``:
  ``(surrogate, kl, fisher_kl)``, each ``params -> scalar``: the negated
  surrogate advantage and the mean per-token ``KL(π_old || π)`` over the
  whole batch, and the KL over the Fisher sub-sample (``None`` when that is
  the whole batch).

  The ratio's denominator is the rollout policy's log-probability from the
  same forward pass as the KL's ``π_old`` (computed here in any case), not
  the sampler's (``exp.log_probs``): the ratio is then exactly 1 at
  ``params``, and the step does not carry the sampler's rounding (with it,
  the parameters after two steps on 8 devices ended 14 times further from
  one device's: tests/test_parallel.py)."""
  live = exp.response_mask
  old_logits = jax.lax.stop_gradient(
      rollout.response_outputs(config, params, exp.tokens, exp.mask)[0])
  old_log_probs = rollout.token_log_probs(old_logits, exp.response, live)

  def surrogate(p):
    logits, _ = rollout.response_outputs(config, p, exp.tokens, exp.mask)
    log_probs = rollout.token_log_probs(logits, exp.response, live)
    return -masked_mean(jnp.exp(log_probs - old_log_probs) * exp.advantages,
                        live)

  def kl_over(p, rows):
    logits, _ = rollout.response_outputs(config, p, exp.tokens[rows],
                                    exp.mask[rows])
    return masked_mean(distributions.categorical_kl(old_logits[rows], logits),
                       live[rows])

  fisher = None
  rows = fisher_rows(config)
  if rows < config.batch_size:
    fisher = lambda p: kl_over(p, slice(0, rows))  # noqa: E731
  return surrogate, lambda p: kl_over(p, slice(None)), fisher


def advantage_scale(exp: rollout.Experience) -> Array:
  """The reward units of one whitened advantage: the standard deviation
  (``ddof=1``) of the advantages before whitening, ``returns - values``,
  over response tokens (what :func:`jaxrl_align.rlhf.credit.critic_gae`
  divided them by)."""
  live = exp.response_mask
  raw = exp.returns - exp.values
  mean = masked_mean(raw, live)
  count = jnp.sum(live.astype(raw.dtype))
  var = jnp.sum(jnp.where(live, (raw - mean) ** 2, 0.0)) / jnp.maximum(
      count - 1, 1)
  return jnp.sqrt(var)


def kl_penalty(config: RLHFTRPOConfig, exp: rollout.Experience,
               kl_coef: Array) -> Array:
  """The KL-to-reference penalty's coefficient in the surrogate's units,
  over ``optimum_fraction``: ``β / (κ·σ)``, with ``σ`` the
  :func:`advantage_scale` (0, no cap, when κ, β or σ is 0).

  The surrogate ``mean[π/π_old · A]`` has fixed advantages: the
  ``-β·log(π/π_ref)`` in the reward enters at the rollout policy's value, so
  the surrogate is linear along the search direction and has no maximiser
  short of the trust region's edge. The regularised objective has one:
  ``β·KL(π || π_ref)`` curves by ``≈ β·F`` (``F`` the Fisher matrix), and
  the whitened advantages are the reward's divided by ``σ``. The step of
  :func:`jaxrl_align.trpo_step` with this ``kl_penalty`` is then at most
  ``κ`` times the maximiser's, a natural-gradient step of ``κ/β`` in
  reward units (Cen et al. 2021: ``1/β`` is soft policy iteration).
  """
  sigma = advantage_scale(exp)
  kappa = jnp.asarray(config.optimum_fraction, jnp.float32)
  beta = jnp.asarray(kl_coef, jnp.float32)
  on = (kappa > 0) & (beta > 0) & (sigma > 0)
  return jnp.where(on, beta / jnp.where(on, kappa * sigma, 1.0), 0.0)


def policy_step(config: RLHFTRPOConfig, params, exp: rollout.Experience,
                kl_coef: Array | None = None):
  """The trust-region step on the whole batch, capped by
  :func:`kl_penalty` (``kl_coef``: the β of the rollout's rewards,
  ``config.kl_coef`` when None): ``(params, TRPOInfo)``."""
  if kl_coef is None:
    kl_coef = config.kl_coef
  surrogate, kl, fisher = objectives(config, params, exp)
  return trust_region.trpo_step(
      surrogate, kl, params, max_kl=config.max_kl,
      cg_iters=config.cg_iters, cg_damping=config.cg_damping,
      backtrack_coeff=config.backtrack_coeff,
      backtrack_iters=config.backtrack_iters, fisher_kl_fn=fisher,
      kl_penalty=kl_penalty(config, exp, kl_coef))


def value_step(config: RLHFTRPOConfig, params, critic, opt_state,
               exp: rollout.Experience, key: Array, lr: Array):
  """Epochs of Adam on the clipped value loss: ``(params, critic,
  opt_state, loss, clip fraction)``."""
  tx = rl.optimizer(config)

  def value_of(v, mb):
    if config.value_model == "policy":
      return rollout.values(config, _with_head(params, v), None, mb.tokens,
                       mb.mask)
    return rollout.values(config, None, v, mb.tokens, mb.mask)

  def step(carry, mb):
    v, opt = carry

    (loss, frac), grads = jax.value_and_grad(
        lambda v: rl.value_loss(config, value_of(v, mb), mb), has_aux=True)(v)
    v, opt = sgd.descend(tx, grads, opt, v, lr)
    return (v, opt), (loss, frac)

  (v, opt_state), (loss, frac), _ = sgd.minibatch_epochs(
      step, (_value_params(config, params, critic), opt_state), exp, key,
      epochs=config.epochs, num_minibatches=config.num_minibatches)
  if config.value_model == "policy":
    params = _with_head(params, v)
  else:
    critic = v
  return params, critic, opt_state, jnp.mean(loss), jnp.mean(frac)


def learn(config: RLHFTRPOConfig, state: rl.RLState, exp: rollout.Experience,
           key: Array):
  """The trust-region step on the policy, then the value's epochs (none
  with ``value_model="none"``)."""
  params, info = policy_step(config, state.params, exp, state.kl.coef)
  critic, opt_state, metrics = state.critic, state.opt_state, {}
  if config.value_model != "none":
    params, critic, opt_state, value_loss, value_clipfrac = value_step(
        config, params, state.critic, state.opt_state, exp, key,
        rl.learning_rate(config, state))
    metrics = {"loss/value_avg": value_loss,
               "val/clipfrac_avg": value_clipfrac}
  metrics.update({
      "loss/policy_avg": info.loss,
      "policy/trust_region_kl": info.kl,
      "policy/accepted": info.accepted.astype(jnp.float32),
      "policy/step_fraction": info.step_fraction,
      "policy/loss_improvement": info.loss_improvement,
      "policy/expected_improvement": info.expected_improvement,
      "policy/cg_residual": info.cg_residual,
      "policy/backtracks": info.backtracks.astype(jnp.float32)})
  return params, critic, opt_state, metrics


ALGORITHM = rl.Algorithm(init_opt=init_opt, learn=learn)
LEARNER = rl.make_learner("rlhf-trpo", RLHFTRPOConfig, ALGORITHM,
                          ("loss/policy_avg", "loss/value_avg"))


# The old names: ``TRPOConfig`` (the classic-control learner's config has
# that name) and ``update`` (a learner's ``update`` is the whole iteration;
# this is its ``learn``).
__getattr__ = rl.renamed(__name__, {"TRPOConfig": "RLHFTRPOConfig",
                                    "update": "learn"}, globals())
