"""PPO on the language model against a frozen reference (the RLHF step of
Ziegler et al. 2019 and Ouyang et al. 2022), as a pure learner.

The iteration is :mod:`jaxrl_align.rlhf.rl`'s; the update is PPO's: epochs of
shuffled minibatches, each one Adam step on the clipped surrogate
(:func:`jaxrl_align.ppo_clip_loss`) plus ``vf_coef`` times the clipped value
loss (:func:`jaxrl_align.clipped_value_loss`), over the policy and the
critic together (TRL's ``PolicyAndValueWrapper`` does the same), masked to
response tokens; with ``value_model="none"`` the surrogate alone. With ``target_kl > 0`` the epochs stop once the last
minibatch's approximate KL to the rollout policy exceeds it.

Metrics, named as TRL names them: ``policy/approxkl_avg`` (the mean of
``½ (log π - log π_old)²`` over response tokens), ``policy/clipfrac_avg``
(the fraction where the clipped surrogate term is the larger loss),
``loss/policy_avg``, ``loss/value_avg``, ``val/clipfrac_avg``,
``policy/entropy_avg``; averages over the minibatch steps that ran.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxrl_align import configs
from jaxrl_align import losses
from jaxrl_align.rlhf import rl
from jaxrl_align.rlhf import rollout

Array = jax.Array
masked_mean = losses.masked_mean


@struct.dataclass
class RLHFPPOConfig(rl.RLConfig):
  """PPO on the language model: :class:`~jaxrl_align.rlhf.rl.RLConfig`'s
  fields and these.

  Attributes:
    clip_eps: the surrogate's clipping ε.
    target_kl: stop an update's epochs once the approximate KL to the
      rollout policy exceeds this (0: never).
  """
  clip_eps: Any = 0.2
  target_kl: Any = 0.0

  def __post_init__(self):
    rl.check_config(self, "RLHFPPOConfig")
    configs.check_finite_positive(self, "clip_eps")
    configs.check_finite_nonnegative(self, "target_kl")


init_opt = rl.init_adam


def minibatch_loss(config: RLHFPPOConfig, trainable, mb: rollout.Experience):
  """PPO's loss on a minibatch, and its diagnostics."""
  params, critic = trainable
  logits, own_scalar = rollout.response_outputs(config, params, mb.tokens, mb.mask)
  live = mb.response_mask
  log_probs = rollout.token_log_probs(logits, mb.response, live)
  pg = losses.ppo_clip_loss(log_probs, mb.log_probs, mb.advantages,
                            clip_eps=config.clip_eps, mask=live)
  log_ratio = log_probs - mb.log_probs
  ratio = jnp.exp(log_ratio)
  eps = jnp.asarray(config.clip_eps, ratio.dtype)
  pg_clipped = (-mb.advantages * jnp.clip(ratio, 1 - eps, 1 + eps)
                > -mb.advantages * ratio)
  f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
  aux = {"policy/approxkl_avg": masked_mean(0.5 * log_ratio ** 2, live),
         "policy/clipfrac_avg": masked_mean(f32(pg_clipped), live),
         "loss/policy_avg": pg,
         "policy/entropy_avg": masked_mean(rollout.token_entropy(logits), live),
         "policy/ratio_max": jnp.max(jnp.where(live, ratio, 1.0))}
  if config.value_model == "none":
    return pg, aux
  vpred = (own_scalar if config.value_model == "policy" else
           rollout.response_outputs(config, critic, mb.tokens, mb.mask)[1])
  vf, aux["val/clipfrac_avg"] = rl.value_loss(config, vpred, mb)
  aux["loss/value_avg"] = vf
  return pg + config.vf_coef * vf, aux


def learn(config: RLHFPPOConfig, state: rl.RLState, exp: rollout.Experience,
          key: Array):
  """Epochs of minibatch Adam steps on the policy and the critic
  (:func:`jaxrl_align.rlhf.rl.minibatch_learn` on :func:`minibatch_loss`)."""
  return rl.minibatch_learn(config, state, exp, key,
                            functools.partial(minibatch_loss, config))


ALGORITHM = rl.Algorithm(init_opt=init_opt, learn=learn)
LEARNER = rl.make_learner("rlhf-ppo", RLHFPPOConfig, ALGORITHM,
                          ("loss/policy_avg", "loss/value_avg"))


# The old names: ``PPOConfig`` (the classic-control learner's config has
# that name) and ``update`` (a learner's ``update`` is the whole iteration;
# this is its ``learn``).
__getattr__ = rl.renamed(__name__, {"PPOConfig": "RLHFPPOConfig",
                                    "update": "learn"}, globals())
