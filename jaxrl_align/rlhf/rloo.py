"""RLOO on the language model (Ahmadian et al. 2024): REINFORCE with a
leave-one-out baseline over ``group_size`` responses per prompt, the KL to
the reference in each response's reward, no value model; a pure learner.

The iteration is :mod:`jaxrl_align.rlhf.rl`'s; what RLOO adds:

- **Credit** (:func:`credit_stage`): each response's reward is its score
  minus ``β·Σ_t kl_t`` (``k1`` by default: ``log π - log π_ref`` on its
  tokens, as TRL); its advantage is that reward minus the mean of the
  other ``G - 1`` rewards of its prompt
  (:func:`jaxrl_align.rloo_advantages`), then optionally standardised over
  the batch (``normalize_advantages``, ``ddof=1``, ``+1e-4``).
- **Loss** (:func:`minibatch_loss`): the clipped surrogate
  (:func:`jaxrl_align.clipped_surrogate`) on each response's ratio
  ``π(y)/π_old(y)`` (the product of its token ratios), averaged over
  responses (``ratio="sequence"``, TRL's ``RLOOTrainer``), or on each
  token's ratio, averaged over tokens (``ratio="token"``, PPO's).
- **Update**: ``epochs`` passes of ``num_minibatches`` Adam steps
  (:func:`jaxrl_align.rlhf.rl.minibatch_learn`).

With the KL in the reward, the expected update is the gradient of the
regularised objective E[r] - β·KL(π‖π_ref), so RLOO's fixed point is
π* ∝ π_ref·exp(r/β) (tested exactly, ``tests/test_rlhf_grpo.py``).

Metrics, as TRL's ``RLOOTrainer`` names them: ``clip_ratio/low_mean``,
``clip_ratio/high_mean``, ``clip_ratio/region_mean``, ``entropy``; and
``loss/policy_avg``, ``policy/approxkl_avg``, ``policy/ratio_max``.

Reference: TRL 1.16.0's ``trl/trainer/rloo_trainer.py``
(``_generate_and_score_completions``: ``rewards - self.beta * kl``,
``baselines = (grouped_sum - grouped_rewards) / (count - 1)``;
``_compute_loss``: ``log_ratio = logps - old_logps`` over the sequence,
``per_sequence_loss.mean()``).
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
from jaxrl_align import normalization
from jaxrl_align.rlhf import credit
from jaxrl_align.rlhf import grpo
from jaxrl_align.rlhf import rl
from jaxrl_align.rlhf import rollout

Array = jax.Array
static = configs.static


@struct.dataclass
class RLHFRLOOConfig(rl.RLConfig):
  """RLOO on the language model: :class:`~jaxrl_align.rlhf.rl.RLConfig`'s
  fields (``group_size`` 4, one epoch, no value model by default) and
  these.

  Attributes:
    ratio: *static* ``sequence`` (each response's ratio, TRL's) or
      ``token`` (each token's, PPO's).
    normalize_advantages: *static* standardise the advantages over the
      batch's responses.
    clip_eps: the clip range's lower ε (ratio ≥ 1 - ε).
    clip_eps_high: its upper ε (ratio ≤ 1 + ε).
  """
  group_size: int = static(4)
  value_model: str = static("none", choices=("none",))
  epochs: int = static(1)
  ratio: str = static("sequence", choices=grpo.RATIOS)
  normalize_advantages: bool = static(False)
  clip_eps: Any = 0.2
  clip_eps_high: Any = 0.2

  def __post_init__(self):
    rl.check_config(self, "RLHFRLOOConfig")
    configs.check_finite_positive(self, "clip_eps", "clip_eps_high")
    if self.group_size < 2:
      raise ValueError(f"`RLHFRLOOConfig.group_size` must be at least 2 (a "
                       f"leave-one-out baseline), got {self.group_size}.")


def credit_stage(config: RLHFRLOOConfig, exp: rollout.Experience,
                 kl_coef: Array) -> rollout.Experience:
  """The leave-one-out baseline on the KL-penalised sequence reward
  (:func:`jaxrl_align.rlhf.credit.group_baseline`), standardised over the
  batch with ``normalize_advantages``."""
  exp = credit.group_baseline(advantages.rloo_advantages)(config, exp,
                                                          kl_coef)
  if not config.normalize_advantages:
    return exp
  white = normalization.whiten(exp.advantages[:, 0], ddof=1, eps=1e-4)
  return exp._replace(advantages=jnp.where(exp.response_mask,
                                           white[:, None], 0.0))


def policy_loss(config: RLHFRLOOConfig, log_probs: Array,
                mb: rollout.Experience):
  """RLOO's loss as a function of the policy's ``[B, N]`` token
  log-probabilities (0 at padding) on a minibatch: ``(loss, metrics)``,
  TRL's ``_compute_loss`` with ``ratio="sequence"``."""
  live = mb.response_mask
  log_ratio = log_probs - mb.log_probs
  clip = dict(clip_low=config.clip_eps, clip_high=config.clip_eps_high)
  if config.ratio == "sequence":
    seq_ratio = jnp.sum(jnp.where(live, log_ratio, 0.0), axis=1)
    advantage = mb.advantages[:, 0]
    loss = jnp.mean(losses.clipped_surrogate(seq_ratio, advantage, **clip))
    clipped = grpo.clip_metrics(seq_ratio, advantage,
                                jnp.ones_like(advantage, bool),
                                config.clip_eps, config.clip_eps_high)
  else:
    loss = losses.aggregate_tokens(losses.clipped_surrogate(
        log_ratio, mb.advantages, **clip), live, "bnpo")
    clipped = grpo.clip_metrics(log_ratio, mb.advantages, live,
                                config.clip_eps, config.clip_eps_high)
  return loss, {
      **clipped, "loss/policy_avg": loss,
      "policy/approxkl_avg": losses.masked_mean(0.5 * log_ratio ** 2, live),
      "policy/ratio_max": jnp.max(jnp.where(live, jnp.exp(log_ratio), 1.0))}


def minibatch_loss(config: RLHFRLOOConfig, trainable,
                   mb: rollout.Experience):
  """:func:`policy_loss` of the policy's forward pass, and the entropy."""
  params, _ = trainable
  logits, _ = rollout.response_outputs(config, params, mb.tokens, mb.mask)
  live = mb.response_mask
  loss, aux = policy_loss(config, rollout.token_log_probs(
      logits, mb.response, live), mb)
  aux["entropy"] = losses.masked_mean(rollout.token_entropy(logits), live)
  return loss, aux


def learn(config: RLHFRLOOConfig, state: rl.RLState, exp: rollout.Experience,
          key: Array):
  """Epochs of minibatch Adam steps on :func:`minibatch_loss`."""
  return rl.minibatch_learn(config, state, exp, key,
                            functools.partial(minibatch_loss, config))


ALGORITHM = rl.Algorithm(init_opt=rl.init_adam, learn=learn,
                         credit=credit_stage)
LEARNER = rl.make_learner("rlhf-rloo", RLHFRLOOConfig, ALGORITHM,
                          ("loss/policy_avg",))
