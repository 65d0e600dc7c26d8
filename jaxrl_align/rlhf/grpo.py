"""GRPO on the language model (Shao et al. 2024) with the variants users
reach for, as a pure learner: no value model, ``group_size`` responses per
prompt, each response's advantage its reward against its group's.

The iteration is :mod:`jaxrl_align.rlhf.rl`'s; what GRPO adds:

- **Credit** (:func:`credit_stage`): the sequence reward is the score (KL
  as a loss term, ``kl_in="loss"``, GRPO's and TRL's placement) or the
  score minus ``β·Σ_t kl_t`` (``kl_in="reward"``, RLOO's and the RLHF
  papers'); its advantage is the reward minus its group's mean, divided by
  the group's standard deviation (``scale_rewards="group"``), the batch's
  (``"batch"``) or nothing (``"none"``, Dr. GRPO), always with ``ddof=1``
  and ``+1e-4`` as TRL (:func:`jaxrl_align.grpo_advantages`).
- **Loss** (:func:`minibatch_loss`): the clipped surrogate with an
  asymmetric range (``clip_eps``, ``clip_eps_high``: DAPO's clip-higher)
  and a dual clip (:func:`jaxrl_align.clipped_surrogate`), on the token
  ratio or on the sequence's (``ratio="sequence"``: the geometric mean of
  the token ratios, GSPO); plus ``β·kl_t`` per token with ``kl_in="loss"``
  (``kl_estimator``, ``k3`` by default as TRL); aggregated over tokens as
  ``loss_type`` says (:func:`jaxrl_align.aggregate_tokens`: ``grpo``,
  ``bnpo``, ``dr_grpo``, ``dapo``).
- **Update**: ``epochs`` passes of ``num_minibatches`` Adam steps
  (:func:`jaxrl_align.rlhf.rl.minibatch_learn`; TRL's ``num_iterations``
  is ``epochs``).

Which of these settings reach the KL-regularised optimum π* ∝
π_ref·exp(r/β), and what the others converge to, is measured exactly in
``tests/test_rlhf_grpo.py`` and said in docs/rlhf.md.

Metrics, as TRL's ``GRPOTrainer`` names them: ``clip_ratio/low_mean``,
``clip_ratio/high_mean``, ``clip_ratio/region_mean``, ``entropy``, ``kl``
(the mean per-token KL estimate of the loss, with ``kl_in="loss"``); and
``loss/policy_avg``, ``policy/approxkl_avg``, ``policy/ratio_max``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxrl_align import advantages
from jaxrl_align import configs
from jaxrl_align import losses
from jaxrl_align import sequences
from jaxrl_align.rlhf import credit
from jaxrl_align.rlhf import rl
from jaxrl_align.rlhf import rl_config
from jaxrl_align.rlhf import rollout

Array = jax.Array
static = configs.static

KL_PLACEMENTS = ("loss", "reward")
RATIOS = ("token", "sequence")
KL_FNS = {"k1": losses.kl_k1, "k2": losses.kl_k2, "k3": losses.kl_k3}


@struct.dataclass
class RLHFGRPOConfig(rl.RLConfig):
  """GRPO on the language model: :class:`~jaxrl_align.rlhf.rl.RLConfig`'s
  fields (``group_size`` 4, ``kl_estimator`` ``k3``, one epoch, no value
  model by default) and these.

  Attributes:
    kl_in: *static* where the KL to the reference enters: ``loss`` (a
      per-token term of the loss, GRPO's) or ``reward`` (in each
      response's reward, summed over its tokens).
    scale_rewards: *static* ``group`` (divide by the group's standard
      deviation), ``batch`` (by the batch's) or ``none``.
    loss_type: *static* how per-token losses become one:
      ``grpo``, ``bnpo``, ``dr_grpo`` or ``dapo`` (TRL's).
    ratio: *static* ``token`` (each token's ratio) or ``sequence`` (each
      response's geometric-mean ratio, GSPO).
    clip_eps: the clip range's lower ε (ratio ≥ 1 - ε).
    clip_eps_high: its upper ε (ratio ≤ 1 + ε; DAPO uses 0.28).
    dual_clip: cap on the ratio of a negative-advantage token (0: none;
      else > 1 + clip_eps_high; TRL's ``delta``).
  """
  group_size: int = static(4)
  kl_estimator: str = static("k3", choices=sequences.KL_ESTIMATORS)
  value_model: str = static("none", choices=("none",))
  epochs: int = static(1)
  kl_in: str = static("loss", choices=KL_PLACEMENTS)
  scale_rewards: str = static("group", choices=advantages.GRPO_SCALES)
  loss_type: str = static("dapo", choices=losses.AGGREGATIONS)
  ratio: str = static("token", choices=RATIOS)
  clip_eps: Any = 0.2
  clip_eps_high: Any = 0.2
  dual_clip: Any = 0.0

  def __post_init__(self):
    rl.check_config(self, "RLHFGRPOConfig")
    check_clip(self, "RLHFGRPOConfig")
    if self.group_size < 2:
      raise ValueError(f"`RLHFGRPOConfig.group_size` must be at least 2 (a "
                       f"group baseline), got {self.group_size}.")


def check_clip(config, owner: str) -> None:
  """``clip_eps`` and ``clip_eps_high`` finite and positive; ``dual_clip``
  0 or above ``1 + clip_eps_high``."""
  configs.check_finite_positive(config, "clip_eps", "clip_eps_high")
  configs.check_finite_nonnegative(config, "dual_clip")
  if configs.is_python_number(config.dual_clip) and configs.is_python_number(
      config.clip_eps_high) and 0 < config.dual_clip <= (
          1 + config.clip_eps_high):
    raise ValueError(f"`{owner}.dual_clip` must be 0 or above 1 + "
                     f"clip_eps_high ({1 + config.clip_eps_high}), got "
                     f"{config.dual_clip}.")


def credit_stage(config: RLHFGRPOConfig, exp: rollout.Experience,
                 kl_coef: Array) -> rollout.Experience:
  """The group baseline (:func:`jaxrl_align.rlhf.credit.group_baseline`)
  with GRPO's scaling; the KL in the reward only with ``kl_in="reward"``
  (``exp.kl`` holds the per-token estimate either way)."""
  estimator = functools.partial(advantages.grpo_advantages,
                                scale=config.scale_rewards)
  coef = kl_coef if config.kl_in == "reward" else jnp.zeros_like(kl_coef)
  return credit.group_baseline(estimator)(config, exp, coef)


def clip_metrics(log_ratio: Array, advantage: Array, live: Array, low,
                 high) -> dict[str, Array]:
  """TRL's clip fractions over response tokens: the ratio below ``1 - low``
  with a negative advantage, above ``1 + high`` with a positive one, and
  either."""
  ratio = jnp.exp(log_ratio)
  below = (ratio < 1 - low) & (advantage < 0)
  above = (ratio > 1 + high) & (advantage > 0)
  f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
  return {"clip_ratio/low_mean": losses.masked_mean(f32(below), live),
          "clip_ratio/high_mean": losses.masked_mean(f32(above), live),
          "clip_ratio/region_mean": losses.masked_mean(f32(below | above),
                                                       live)}


def sequence_log_ratio(log_ratio: Array, live: Array) -> Array:
  """``[B, N]``: each response's mean token log-ratio on its tokens (GSPO's
  sequence ratio, in logs), 0 at padding."""
  count = jnp.maximum(jnp.sum(live, axis=1, keepdims=True), 1).astype(
      log_ratio.dtype)
  mean = jnp.sum(jnp.where(live, log_ratio, 0.0), axis=1,
                 keepdims=True) / count
  return jnp.where(live, mean, 0.0)


def policy_loss(config: RLHFGRPOConfig, kl_coef: Array, tokens: Array,
                log_probs: Array, mb: rollout.Experience):
  """GRPO's loss as a function of the policy's ``[B, N]`` token
  log-probabilities (0 at padding) on a minibatch (``tokens``: ``dapo``'s
  normaliser, the batch's response tokens per minibatch): ``(loss,
  metrics)``, TRL's ``_compute_loss`` (``tests/test_rlhf_grpo.py`` runs
  TRL's own on the same log-probabilities)."""
  live = mb.response_mask
  log_ratio = log_probs - mb.log_probs
  weight = (log_ratio if config.ratio == "token" else
            sequence_log_ratio(log_ratio, live))
  per_token = losses.clipped_surrogate(
      weight, mb.advantages, clip_low=config.clip_eps,
      clip_high=config.clip_eps_high, dual_clip=config.dual_clip)
  aux = {}
  if config.kl_in == "loss" and rl_config.uses_reference(config):
    kl = jnp.where(live, KL_FNS[config.kl_estimator](mb.ref_log_probs,
                                                      log_probs), 0.0)
    per_token = per_token + jnp.asarray(kl_coef, per_token.dtype) * kl
    aux["kl"] = losses.masked_mean(kl, live)
  loss = losses.aggregate_tokens(per_token, live, config.loss_type,
                                 max_length=config.response_length,
                                 tokens=tokens)
  if config.ratio == "token":
    aux.update(clip_metrics(weight, mb.advantages, live, config.clip_eps,
                            config.clip_eps_high))
  else:  # one ratio per response: fractions of responses, as TRL
    aux.update(clip_metrics(weight[:, 0], mb.advantages[:, 0],
                            jnp.ones(live.shape[:1], bool), config.clip_eps,
                            config.clip_eps_high))
  aux.update({
      "loss/policy_avg": loss,
      "policy/approxkl_avg": losses.masked_mean(0.5 * log_ratio ** 2, live),
      "policy/ratio_max": jnp.max(jnp.where(live, jnp.exp(log_ratio), 1.0))})
  return loss, aux


def minibatch_loss(config: RLHFGRPOConfig, kl_coef: Array, tokens: Array,
                   trainable, mb: rollout.Experience):
  """:func:`policy_loss` of the policy's forward pass, and the entropy."""
  params, _ = trainable
  logits, _ = rollout.response_outputs(config, params, mb.tokens, mb.mask)
  live = mb.response_mask
  log_probs = rollout.token_log_probs(logits, mb.response, live)
  loss, aux = policy_loss(config, kl_coef, tokens, log_probs, mb)
  aux["entropy"] = losses.masked_mean(rollout.token_entropy(logits), live)
  return loss, aux


def learn(config: RLHFGRPOConfig, state: rl.RLState, exp: rollout.Experience,
          key: Array):
  """Epochs of minibatch Adam steps on :func:`minibatch_loss`."""
  tokens = jnp.maximum(jnp.sum(exp.response_mask).astype(jnp.float32)
                       / config.num_minibatches, 1.0)
  return rl.minibatch_learn(config, state, exp, key, functools.partial(
      minibatch_loss, config, state.kl.coef, tokens))


ALGORITHM = rl.Algorithm(init_opt=rl.init_adam, learn=learn,
                         credit=credit_stage)
LEARNER = rl.make_learner("rlhf-grpo", RLHFGRPOConfig, ALGORITHM,
                          ("loss/policy_avg",))
