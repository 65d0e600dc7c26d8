"""Sampling from the transformer with a key-value cache, under ``lax.scan``.

:func:`generate` reads a left-padded batch of prompts once (filling the
cache), then draws one token per step for a fixed number of steps. After a
row emits the stop token it emits padding, and its response mask is false
from then on (the stop token itself is part of the response). Everything has
a fixed shape, so one compiled program serves every batch of that shape and
``jax.vmap`` adds more batch axes.

:func:`sequence_log_probs` scores given tokens without a cache (one forward
pass over prompt and response); generation's log-probs equal it, which is
what the tests check.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_align import _checks
from jaxrl_align.rlhf import model as model_lib

Array = jax.Array


class Generation(NamedTuple):
  """What :func:`generate` returns.

  Attributes:
    tokens: ``[B, P + N]`` prompt then response tokens.
    mask: ``[B, P + N]`` bool, real tokens (prompt padding and the padding
      after a stop token are false).
    response: ``[B, N]`` response tokens (``pad_token`` after a stop).
    response_mask: ``[B, N]`` bool, tokens the policy chose: up to and
      including the stop token.
    log_probs: ``[B, N]`` log-probability of each response token under the
      sampling distribution (temperature and top-k applied; 0 where
      ``response_mask`` is false).
  """
  tokens: Array
  mask: Array
  response: Array
  response_mask: Array
  log_probs: Array


def sampling_logits(logits: Array, temperature: float | Array,
                    top_k: int = 0, top_p: float = 1.0,
                    keep: Array | None = None) -> Array:
  """Logits of the distribution actually sampled: ``[..., V] -> [..., V]``.

  In the order of Hugging Face's logits warpers (temperature, top-k,
  top-p): the logits are divided by ``temperature``; ``top_k > 0`` keeps
  the k largest (ties at the k-th value are kept); ``top_p < 1`` then keeps
  the nucleus (Holtzman et al. 2020), the most likely tokens whose
  probability under the tempered, top-k distribution first reaches
  ``top_p`` (at least one token; ties at the smallest kept probability are
  kept). The rest are set to ``-inf``.

  Args:
    logits: ``[..., V]``.
    temperature: > 0.
    top_k: a Python int (0: off).
    top_p: a Python float in (0, 1] (1: off).
    keep: optional ``[...]`` int, a token kept in any case: the token that
      was sampled, when its log-probability is recomputed by another forward
      pass whose rounding could move it across the boundary.
  """
  logits = logits / temperature
  if not top_k and top_p >= 1.0:
    return logits
  kept = jnp.ones(logits.shape, bool)
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    kept = logits >= kth
  if top_p < 1.0:
    probs = jax.nn.softmax(jnp.where(kept, logits, -jnp.inf), axis=-1)
    desc = -jnp.sort(-probs, axis=-1)
    before = jnp.cumsum(desc, axis=-1) - desc      # mass of the more likely
    first = jnp.zeros(desc.shape, bool).at[..., 0].set(True)
    in_nucleus = (before < top_p) | first
    smallest = jnp.min(jnp.where(in_nucleus, desc, jnp.inf), axis=-1,
                       keepdims=True)
    kept = kept & (probs >= smallest)
  if keep is not None:
    kept = kept | jax.nn.one_hot(keep, logits.shape[-1], dtype=bool)
  return jnp.where(kept, logits, -jnp.inf)


def generate(apply_fn, params, config: model_lib.TransformerConfig,
             prompt: Array, prompt_mask: Array, key: Array, *,
             max_new_tokens: int, temperature: float | Array = 1.0,
             top_k: int = 0, top_p: float = 1.0,
             stop_token: int | None = None, pad_token: int = 0,
             greedy: bool = False) -> Generation:
  """Samples ``max_new_tokens`` tokens after each prompt.

  Args:
    apply_fn: ``Transformer(config).apply``.
    params: its parameters.
    config: the transformer's config.
    prompt: ``[B, P]`` int tokens, left-padded.
    prompt_mask: ``[B, P]`` bool, real prompt tokens (each row needs one).
    key: PRNG key.
    max_new_tokens: ``N``, a Python int (fixes shapes).
    temperature: divides the logits (> 0; a leaf, so it may be traced).
    top_k: sample among the k most likely tokens (0: all), a Python int.
    top_p: sample within the nucleus of this probability (1: all), a
      Python float (see :func:`sampling_logits`).
    stop_token: ends a row's response (``None``: never), a token id.
    pad_token: written after a row has stopped: a token id other than
      ``stop_token`` (unused, and may be None, without a stop token).
    greedy: take the most likely token instead of sampling (the limit of
      ``temperature -> 0``); ``log_probs`` are then under the
      temperature-1 distribution.

  Returns:
    A :class:`Generation`.
  """
  b, p = prompt.shape
  _checks.check_positive_int("max_new_tokens", max_new_tokens)
  _checks.check_positive_int("top_k", top_k, allow_zero=True)
  _checks.check_scalar_in_range("top_k", top_k, 0, config.vocab_size)
  _checks.check_scalar_in_range("top_p", top_p, 0, 1, low_inclusive=False)
  # Its limit at 0 is greedy=True.
  _checks.check_scalar_in_range("temperature", temperature, 0, math.inf,
                                low_inclusive=False)
  if stop_token is not None:
    for name, token in (("stop_token", stop_token), ("pad_token", pad_token)):
      _checks.check_positive_int(name, token, allow_zero=True)
      _checks.check_scalar_in_range(name, token, 0, config.vocab_size - 1)
    if pad_token == stop_token:
      raise ValueError(f"`pad_token` must differ from `stop_token` "
                       f"({stop_token}): padding would read as a stop.")
  if p + max_new_tokens > config.max_len:
    raise ValueError(f"prompt length {p} + max_new_tokens {max_new_tokens} "
                     f"exceeds the model's max_len {config.max_len}.")
  cache = model_lib.empty_cache(config, b, p + max_new_tokens)
  logits, _, cache = apply_fn(params, prompt, prompt_mask, cache=cache)
  last = logits[:, -1]
  temperature = 1.0 if greedy else temperature

  def _sample_step(carry, step_key):
    cache, last, done = carry
    scaled = sampling_logits(last, temperature, top_k, top_p)
    if greedy:
      token = jnp.argmax(scaled, axis=-1)
    else:
      token = jax.random.categorical(step_key, scaled, axis=-1)
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(scaled, axis=-1),
                                   token[:, None], axis=-1)[:, 0]
    live = ~done
    if stop_token is not None:  # without one, every row is live throughout
      token = jnp.where(live, token, pad_token)
    token = token.astype(prompt.dtype)
    log_prob = jnp.where(live, log_prob, 0.0)
    if stop_token is not None:
      done = done | (token == stop_token)
    logits, _, cache = apply_fn(params, token[:, None], live[:, None],
                                cache=cache)
    return (cache, logits[:, 0], done), (token, live, log_prob)

  keys = jax.random.split(key, max_new_tokens)
  _, (response, live, log_probs) = jax.lax.scan(
      _sample_step, (cache, last, jnp.zeros((b,), bool)), keys)
  response, live, log_probs = response.T, live.T, log_probs.T
  return Generation(
      tokens=jnp.concatenate([prompt, response], axis=1),
      mask=jnp.concatenate([prompt_mask.astype(bool), live], axis=1),
      response=response, response_mask=live, log_probs=log_probs)


def sequence_log_probs(apply_fn, params, tokens: Array, mask: Array,
                       num_response: int, *, temperature: float | Array = 1.0,
                       top_k: int = 0, top_p: float = 1.0) -> Array:
  """Log-probabilities of the last ``num_response`` tokens given the rest.

  Args:
    apply_fn: ``Transformer(config).apply``.
    params: its parameters.
    tokens: ``[B, P + N]`` prompt then response.
    mask: ``[B, P + N]`` bool, real tokens.
    num_response: ``N``.
    temperature, top_k, top_p: as in :func:`generate` (the sampled tokens
      are kept in the truncated distribution, see :func:`sampling_logits`).

  Returns:
    ``[B, N]`` log-probabilities (0 where the token is not real).
  """
  logits, _, _ = apply_fn(params, tokens, mask)
  n = num_response
  scaled = sampling_logits(logits[:, -n - 1:-1], temperature, top_k, top_p,
                           keep=tokens[:, -n:])
  log_probs = jnp.take_along_axis(jax.nn.log_softmax(scaled, axis=-1),
                                  tokens[:, -n:, None], axis=-1)[..., 0]
  return jnp.where(mask[:, -n:], log_probs, 0.0)
