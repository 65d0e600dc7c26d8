"""How one iteration's samples become advantages: the pluggable stage of RL
on the language model (step 3 and 4 of :mod:`jaxrl_align.rlhf.rl`'s
iteration).

A credit stage is ``(config, exp, kl_coef) -> exp``: it reads the samples'
scores, log-probabilities (policy and reference) and values of a
:class:`~jaxrl_align.rlhf.rollout.Experience`, and fills its ``kl``,
``rewards``, ``advantages`` and ``returns``. An algorithm names its stage in
its :class:`~jaxrl_align.rlhf.rl.Algorithm`:

- :func:`gae`: the per-token KL-penalised reward and GAE with a value
  model (PPO and TRPO, Ziegler et al. 2019);
- :func:`group_baseline`: the sequence-level KL-penalised reward and a
  baseline from the other responses to the same prompt (RLOO, GRPO), no
  value model.

Every array is batch-major ``[B, N]`` (``B`` responses of ``N`` tokens) and
zero at padding.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxrl_align import advantages as advantages_lib
from jaxrl_align import normalization
from jaxrl_align import sequences

Array = jax.Array


def penalized_rewards(config, score: Array, log_probs: Array,
                      ref_log_probs: Array, mask: Array, kl_coef: Array
                      ) -> tuple[Array, Array]:
  """``(reward, kl)``, each ``[B, N]``: ``reward_t = -β·kl_t`` plus the score
  at the last response token (:func:`jaxrl_align.kl_penalized_rewards` with
  ``config.kl_estimator``), optionally whitened (scale only) over response
  tokens with ``config.whiten_rewards``."""
  tm = sequences.time_major
  live = tm(mask)
  reward, kl = sequences.kl_penalized_rewards(
      score, tm(log_probs), tm(ref_log_probs), live, kl_coef=kl_coef,
      estimator=config.kl_estimator)
  if config.whiten_rewards:
    reward = jnp.where(live, normalization.whiten(
        reward, live, ddof=1, shift_mean=False), 0.0)
  bm = sequences.batch_major
  return bm(reward), bm(kl)


def gae_advantages(config, score: Array, log_probs: Array,
                   ref_log_probs: Array, value: Array, mask: Array,
                   kl_coef: Array):
  """Per-token rewards and GAE (batch-major in, batch-major out).

  Args:
    config: whitening, estimator, γ and λ.
    score: ``[B]``.
    log_probs, ref_log_probs, value: ``[B, N]``.
    mask: ``[B, N]`` bool, response tokens.
    kl_coef: β.

  Returns:
    ``(kl, rewards, advantages, returns)``, each ``[B, N]``, zero at
    padding; each response an episode that terminates at its last token;
    advantages whitened over response tokens (``ddof=1``, as TRL's
    ``masked_whiten``); returns are the advantages before whitening plus
    the values.
  """
  reward, kl = penalized_rewards(config, score, log_probs, ref_log_probs,
                                 mask, kl_coef)
  tm = sequences.time_major
  live = tm(mask)
  reward = tm(reward)
  value = jnp.where(live, tm(value), 0.0)
  next_value = jnp.concatenate([value[1:], jnp.zeros_like(value[:1])])
  advantage, returns = advantages_lib.gae(
      reward, value, next_value, sequences.last_step(live),
      jnp.zeros_like(live), gamma=config.gamma, lam=config.lam)
  white = jnp.where(live, normalization.whiten(advantage, live, ddof=1), 0.0)
  bm = sequences.batch_major
  return kl, bm(reward), bm(white), bm(jnp.where(live, returns, 0.0))


def critic_gae(config, exp, kl_coef: Array):
  """The credit stage of PPO and TRPO: :func:`gae_advantages` on the
  experience's score, log-probabilities and values."""
  kl, reward, advantage, returns = gae_advantages(
      config, exp.scores, exp.log_probs, exp.ref_log_probs, exp.values,
      exp.response_mask, kl_coef)
  return exp._replace(kl=kl, rewards=reward, advantages=advantage,
                      returns=returns)


def group_baseline(estimator: Callable[[Array], Array]):
  """A critic-free credit stage: each response's sequence reward, minus a
  baseline from the other responses to its prompt, as every token's
  advantage.

  The sequence reward is ``score - β·Σ_t kl_t`` (the sum of the per-token
  rewards of :func:`penalized_rewards`: the KL in the reward, at the
  sequence level). ``estimator`` maps ``[G, P]`` sequence rewards (the
  ``G = config.group_size`` responses of each of ``P`` prompts on axis 0)
  to ``[G, P]`` advantages: :func:`jaxrl_align.rloo_advantages`, or
  :func:`jaxrl_align.grpo_advantages` with its options bound. The batch
  holds the responses of a prompt in consecutive rows
  (:func:`jaxrl_align.rlhf.rl.iterate` draws them so). ``returns`` are 0:
  there is no value to fit.

  Args:
    estimator: ``[G, P] -> [G, P]``.

  Returns:
    The stage, ``(config, exp, kl_coef) -> exp``.
  """

  def stage(config, exp, kl_coef: Array):
    live = exp.response_mask
    reward, kl = penalized_rewards(config, exp.scores, exp.log_probs,
                                   exp.ref_log_probs, live, kl_coef)
    total = jnp.sum(reward, axis=1)                         # [B]
    g = config.group_size
    by_group = total.reshape(-1, g).T                       # [G, P]
    advantage = estimator(by_group).T.reshape(-1)           # [B]
    tokens = jnp.where(live, advantage[:, None], 0.0)
    return exp._replace(kl=kl, rewards=reward, advantages=tokens,
                        returns=jnp.zeros_like(tokens))

  return stage
