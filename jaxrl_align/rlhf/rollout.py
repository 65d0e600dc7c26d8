"""One iteration's experience on the language model: the forward passes,
the rollout and the metrics of the samples (steps 1 and 2 of
:mod:`jaxrl_align.rlhf.rl`'s iteration; an algorithm's credit stage,
:mod:`jaxrl_align.rlhf.credit`, does steps 3 and 4).

Every function is pure; ``config``, ``data`` and ``state`` are
:class:`~jaxrl_align.rlhf.rl.RLConfig`, :class:`~jaxrl_align.rlhf.rl.RLData`
and :class:`~jaxrl_align.rlhf.rl.RLState`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_align import distributions
from jaxrl_align.rlhf import credit as credit_lib
from jaxrl_align.rlhf import generation
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import rl_config

Array = jax.Array


# -------------------------------------------------------------- the model


def model(config) -> model_lib.TransformerConfig:
  """The transformer the run's passes use: ``config.model`` with the
  config's ``matmul_dtype`` (every RL config and DPO's has one)."""
  return dataclasses.replace(config.model, matmul_dtype=config.matmul_dtype)


def _apply(config):
  return model_lib.Transformer(model(config)).apply


def response_outputs(config, params, tokens: Array, mask: Array
                     ) -> tuple[Array, Array]:
  """One forward pass: the sampling distribution's logits for each
  response token and the scalar head before it.

  Args:
    config: the run's config (model, temperature, top_k, top_p,
      response_length).
    params: a transformer's parameters.
    tokens: ``[B, P + N]`` prompt then response.
    mask: ``[B, P + N]`` real tokens.

  Returns:
    ``(logits [B, N, V], scalar [B, N])``: logits divided by the temperature
    (``-inf`` outside the top k and the nucleus, the response token itself
    always kept), predicting response token ``t``; the
    scalar head at the position before it (the value of the state in which
    token ``t`` is chosen).
  """
  n = config.response_length
  logits, scalar, _ = _apply(config)(params, tokens, mask)
  return (generation.sampling_logits(logits[:, -n - 1:-1], config.temperature,
                                     config.top_k, config.top_p,
                                     keep=tokens[:, -n:]),
          scalar[:, -n - 1:-1])


def token_log_probs(logits: Array, tokens: Array, mask: Array) -> Array:
  """``[B, N]`` log-probability of each token (0 where ``mask`` is false)."""
  log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1),
                                  tokens[..., None], axis=-1)[..., 0]
  return jnp.where(mask, log_probs, 0.0)


def token_entropy(logits: Array) -> Array:
  """``[B, N]`` entropy of each token's distribution (``-inf`` logits are
  outside the support)."""
  log_p = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(log_p)
  return -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1)


def values(config, params, critic, tokens: Array,
           mask: Array) -> Array:
  """``[B, N]`` value of the state before each response token: the critic's
  scalar head, the policy's with ``value_model="policy"``, 0 with
  ``"none"`` (no forward pass)."""
  if config.value_model == "none":
    n = config.response_length
    return jnp.zeros((tokens.shape[0], n), jnp.float32)
  source = params if config.value_model == "policy" else critic
  return response_outputs(config, source, tokens, mask)[1]


# ---------------------------------------------------------------- rollout


class Experience(NamedTuple):
  """One iteration's samples and what the update needs of them
  (batch-major, ``[B, ...]``).

  Attributes:
    tokens: ``[B, P + N]`` prompt then response.
    mask: ``[B, P + N]`` real tokens.
    response: ``[B, N]`` response tokens (padding after the stop token).
    response_mask: ``[B, N]`` tokens the policy chose (the stop token
      included).
    log_probs: ``[B, N]`` under the sampling policy (0 at padding).
    ref_log_probs: ``[B, N]`` under the reference (0 at padding).
    values: ``[B, N]`` value estimates (0 at padding, and everywhere with
      ``value_model="none"``).
    scores: ``[B]`` scores, after the missing-stop penalty.
    stopped: ``[B]`` bool, the response emitted the stop token.
    kl: ``[B, N]`` per-token KL estimate (the reward's).
    rewards: ``[B, N]`` per-token rewards.
    advantages: ``[B, N]`` advantages (0 at padding).
    returns: ``[B, N]`` value targets (0 without a value model).
    kl_exact: ``[B]`` the exact sequence KL to the reference (Σ over
      response tokens of the categorical KL over the whole vocabulary),
      where the rollout had both models' logits (a policy pass and a
      reference pass ran: :func:`~jaxrl_align.rlhf.rl_config.policy_pass`);
      else None.

  ``kl``, ``rewards``, ``advantages`` and ``returns`` are the credit
  stage's (:mod:`jaxrl_align.rlhf.credit`): ``None`` in what
  :func:`experience` returns.
  """
  tokens: Array
  mask: Array
  response: Array
  response_mask: Array
  log_probs: Array
  ref_log_probs: Array
  values: Array
  scores: Array
  stopped: Array
  kl: Array
  rewards: Array
  advantages: Array
  returns: Array
  kl_exact: Array | None = None


def sample(config, params, prompt: Array, prompt_mask: Array,
           key: Array) -> generation.Generation:
  """Responses of the policy to ``[B, P]`` prompts (the cached sampler)."""
  return generation.generate(
      _apply(config), params, model(config), prompt, prompt_mask, key,
      max_new_tokens=config.response_length, temperature=config.temperature,
      top_k=config.top_k, top_p=config.top_p, stop_token=config.stop_token,
      pad_token=config.pad_token)


def stopped(config, response: Array, response_mask: Array) -> Array:
  """``[B]`` bool: the response emitted the stop token (always true when
  there is none)."""
  if config.stop_token is None:
    return jnp.ones(response.shape[:1], bool)
  return jnp.any((response == config.stop_token) & response_mask, axis=1)


def scores(config, data, tokens: Array, mask: Array,
           response: Array, response_mask: Array
           ) -> tuple[Array, Array, Array]:
  """``(score [B], proxy [B], stopped [B])``: ``proxy`` is
  ``data.score_fn`` of each sequence (the reward model's score), ``score``
  the same minus ``missing_eos_penalty`` where the response never stopped
  (the reward the policy is trained on, TRL's ``scores``)."""
  done = stopped(config, response, response_mask)
  raw = data.score_fn(data.reward_params, tokens, mask).astype(jnp.float32)
  penalty = jnp.asarray(config.missing_eos_penalty, raw.dtype)
  return raw - jnp.where(done, 0.0, penalty), raw, done


def experience(config, state, data, prompt: Array, prompt_mask: Array,
               key: Array) -> Experience:
  """Steps 1 and 2: sample, the forward passes, score; the credit stage's
  fields are None.

  The passes: the policy's only where
  :func:`~jaxrl_align.rlhf.rl_config.policy_pass` (else the sampler's
  log-probabilities are the behaviour policy's); the reference's unless β
  is a concrete 0 (:func:`~jaxrl_align.rlhf.rl_config.uses_reference`: the
  reference's log-probabilities are then the policy's, so every KL
  estimate is 0); the critic's unless ``value_model`` is ``"policy"``
  (the policy pass's scalar head) or ``"none"``. With both the policy's
  and the reference's logits at hand, the exact KL is taken from them."""
  gen = sample(config, state.params, prompt, prompt_mask, key)
  live = gen.response_mask
  logits = None
  if rl_config.policy_pass(config):
    logits, own_scalar = response_outputs(config, state.params, gen.tokens,
                                          gen.mask)
  if config.behaviour_log_probs == "forward":
    log_probs = token_log_probs(logits, gen.response, live)
  else:
    log_probs = jnp.where(live, gen.log_probs, 0.0)
  ref_log_probs, kl_exact = log_probs, None
  if rl_config.uses_reference(config):
    ref_logits, _ = response_outputs(config, data.ref_params, gen.tokens,
                                     gen.mask)
    ref_log_probs = token_log_probs(ref_logits, gen.response, live)
    if logits is not None:
      kl_exact = masked_kl(logits, ref_logits, live)
  value = (own_scalar if config.value_model == "policy" else
           values(config, state.params, state.critic, gen.tokens, gen.mask))
  value = jnp.where(live, value, 0.0)
  score, _, done = scores(config, data, gen.tokens, gen.mask, gen.response,
                          live)
  return Experience(gen.tokens, gen.mask, gen.response, live, log_probs,
                    ref_log_probs, value, score, done, None, None, None, None,
                    kl_exact)


def rollout(config, state, data, prompt: Array, prompt_mask: Array,
            key: Array, credit=credit_lib.critic_gae) -> Experience:
  """Steps 1–4: :func:`experience`, then the ``credit`` stage (GAE with the
  value model by default) at the KL controller's coefficient."""
  exp = experience(config, state, data, prompt, prompt_mask, key)
  return credit(config, exp, state.kl.coef)


# ---------------------------------------------------------------- metrics


def distinct_n(tokens: Array, mask: Array, n: int, vocab_size: int) -> Array:
  """Distinct-n (Li et al. 2016): distinct n-grams over all n-grams of the
  batch's responses (NaN when there are none).

  Args:
    tokens: ``[B, N]`` response tokens.
    mask: ``[B, N]`` real tokens.
    n: n-gram length (static).
    vocab_size: to encode an n-gram as one int32 (``vocab_size ** n <
      2 ** 31``).

  Returns:
    Scalar in (0, 1].
  """
  if vocab_size ** n >= 2 ** 31:
    raise ValueError(f"distinct-{n} over {vocab_size} tokens needs more than "
                     f"31 bits per n-gram.")
  length = tokens.shape[1] - n + 1
  code = jnp.zeros((tokens.shape[0], length), jnp.int32)
  valid = jnp.ones((tokens.shape[0], length), bool)
  for i in range(n):
    code = code * vocab_size + tokens[:, i:i + length].astype(jnp.int32)
    valid = valid & mask[:, i:i + length]
  code = jnp.sort(jnp.where(valid, code, -1).reshape(-1))
  new = (code[1:] != code[:-1]) & (code[1:] >= 0)
  count = jnp.sum(new, dtype=jnp.int32) + (code[0] >= 0).astype(jnp.int32)
  total = jnp.sum(valid, dtype=jnp.int32)
  return jnp.where(total > 0, count / jnp.maximum(total, 1), jnp.nan
                   ).astype(jnp.float32)


def masked_kl(logits: Array, ref_logits: Array, response_mask: Array
              ) -> Array:
  """``[B]`` Σ over response tokens of the categorical ``KL(π || π_ref)``
  between two ``[B, N, V]`` sampling logits."""
  per_token = distributions.categorical_kl(logits, ref_logits)
  return jnp.sum(jnp.where(response_mask, per_token, 0.0), axis=1)


def exact_kl(config, params, ref_params, tokens: Array,
             mask: Array, response_mask: Array) -> Array:
  """``[B]`` Σ over response tokens of the exact ``KL(π(·|context) ||
  π_ref(·|context))`` over the whole vocabulary (the sampling
  distributions): an unbiased, low-variance estimate of the sequence KL
  ``KL(π || π_ref)``."""
  logits, _ = response_outputs(config, params, tokens, mask)
  ref_logits, _ = response_outputs(config, ref_params, tokens, mask)
  return masked_kl(logits, ref_logits, response_mask)


def gold(data, tokens: Array, mask: Array) -> Array:
  """Mean gold score of the batch (NaN without ``data.gold_fn``)."""
  if data.gold_fn is None:
    return jnp.full((), jnp.nan, jnp.float32)
  return jnp.mean(data.gold_fn(tokens, mask))


def sample_metrics(exp: Experience, kl_coef: Array) -> dict[str, Array]:
  """The metrics of a batch's arithmetic (TRL's names where they overlap:
  sums over a response, means over the batch; padding enters none)."""
  live = exp.response_mask
  per_seq = lambda x: jnp.sum(jnp.where(live, x, 0.0), axis=1)  # noqa: E731
  kl = per_seq(exp.kl)
  non_score = -kl_coef * kl
  return {
      "objective/kl": jnp.mean(kl),
      "objective/entropy": jnp.mean(per_seq(-exp.log_probs)),
      "objective/non_score_reward": jnp.mean(non_score),
      "objective/scores": jnp.mean(exp.scores),
      "objective/rlhf_reward": jnp.mean(exp.scores) + jnp.mean(non_score),
      "objective/kl_coef": jnp.asarray(kl_coef, jnp.float32),
      "response_length": jnp.mean(jnp.sum(live, axis=1).astype(jnp.float32)),
      "stop_fraction": jnp.mean(exp.stopped.astype(jnp.float32)),
  }


def rollout_metrics(config, state, data,
                    exp: Experience) -> dict[str, Array]:
  """:func:`sample_metrics`, the reward model's score before the
  missing-stop penalty (``objective/proxy``), the gold score, distinct-1/2
  of the responses, and the exact KL to the reference where the rollout
  took it (``exp.kl_exact``: no pass runs for it alone; the held-out
  assessment measures it every ``eval_every`` iterations); without a
  reference pass (β a concrete 0) no KL: it was not measured."""
  live = exp.response_mask
  vocab = config.model.vocab_size
  penalty = jnp.asarray(config.missing_eos_penalty, exp.scores.dtype)
  metrics = {
      **sample_metrics(exp, state.kl.coef),
      "objective/proxy": jnp.mean(exp.scores + jnp.where(exp.stopped, 0.0,
                                                         penalty)),
      "objective/gold": gold(data, exp.tokens, exp.mask),
      "distinct_1": distinct_n(exp.response, live, 1, vocab),
      "distinct_2": distinct_n(exp.response, live, 2, vocab),
  }
  if not rl_config.uses_reference(config):
    del metrics["objective/kl"]
  if exp.kl_exact is not None:
    metrics["objective/kl_exact"] = jnp.mean(exp.kl_exact)
  return metrics
