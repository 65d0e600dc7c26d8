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
                    top_k: int = 0) -> Array:
  """Logits of the distribution actually sampled: ``[..., V] -> [..., V]``.

  ``top_k > 0`` keeps the k largest logits (ties at the k-th value are kept)
  and sets the rest to ``-inf``; then divides by ``temperature``.
  """
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits >= kth, logits, -jnp.inf)
  return logits / temperature


def generate(apply_fn, params, config: model_lib.TransformerConfig,
             prompt: Array, prompt_mask: Array, key: Array, *,
             max_new_tokens: int, temperature: float | Array = 1.0,
             top_k: int = 0, stop_token: int | None = None,
             pad_token: int = 0, greedy: bool = False) -> Generation:
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
    stop_token: ends a row's response (``None``: never).
    pad_token: written after a row has stopped.
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
  # Its limit at 0 is greedy=True.
  _checks.check_scalar_in_range("temperature", temperature, 0, math.inf,
                                low_inclusive=False)
  if p + max_new_tokens > config.max_len:
    raise ValueError(f"prompt length {p} + max_new_tokens {max_new_tokens} "
                     f"exceeds the model's max_len {config.max_len}.")
  cache = model_lib.empty_cache(config, b, p + max_new_tokens)
  logits, _, cache = apply_fn(params, prompt, prompt_mask, cache=cache)
  last = logits[:, -1]
  temperature = 1.0 if greedy else temperature

  def _sample_step(carry, step_key):
    cache, last, done = carry
    scaled = sampling_logits(last, temperature, top_k)
    if greedy:
      token = jnp.argmax(scaled, axis=-1)
    else:
      token = jax.random.categorical(step_key, scaled, axis=-1)
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(scaled, axis=-1),
                                   token[:, None], axis=-1)[:, 0]
    live = ~done
    token = jnp.where(live, token, pad_token).astype(prompt.dtype)
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
                       top_k: int = 0) -> Array:
  """Log-probabilities of the last ``num_response`` tokens given the rest.

  Args:
    apply_fn: ``Transformer(config).apply``.
    params: its parameters.
    tokens: ``[B, P + N]`` prompt then response.
    mask: ``[B, P + N]`` bool, real tokens.
    num_response: ``N``.
    temperature, top_k: as in :func:`generate`.

  Returns:
    ``[B, N]`` log-probabilities (0 where the token is not real).
  """
  logits, _, _ = apply_fn(params, tokens, mask)
  n = num_response
  scaled = sampling_logits(logits[:, -n - 1:-1], temperature, top_k)
  log_probs = jnp.take_along_axis(jax.nn.log_softmax(scaled, axis=-1),
                                  tokens[:, -n:, None], axis=-1)[..., 0]
  return jnp.where(mask[:, -n:], log_probs, 0.0)
