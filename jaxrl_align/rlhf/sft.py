"""Pretraining (``sft``): next-token cross-entropy on the corpus.

Pure pieces: the loss, an ``(init, step)`` pair over :class:`SFTState`, and
a held-out loss. The host loop that feeds batches, logs and saves lives in
:mod:`jaxrl_align.rlhf_runs`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxrl_align import _checks
from jaxrl_align import sgd
from jaxrl_align.rlhf import _training
from jaxrl_align.rlhf import model as model_lib

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SFTConfig:
  """Pretraining settings (host-side: all plain Python values).

  Attributes:
    steps: optimiser steps.
    batch_size: sequences per step.
    learning_rate: AdamW peak learning rate (linear warm-up, cosine decay).
    warmup_steps: linear warm-up steps.
    weight_decay: AdamW decoupled weight decay.
    max_grad_norm: global-norm gradient clip.
  """
  steps: int = 600
  batch_size: int = 32
  learning_rate: float = 1e-3
  warmup_steps: int = 50
  weight_decay: float = 0.1
  max_grad_norm: float = 1.0

  def __post_init__(self):
    _checks.check_positive_int("SFTConfig.steps", self.steps)
    _checks.check_positive_int("SFTConfig.warmup_steps", self.warmup_steps,
                               allow_zero=True)
    _checks.check_scalar_in_range("SFTConfig.warmup_steps", self.warmup_steps,
                                  0, self.steps, high_inclusive=False)
    _training.check_optimizer_fields(self, "SFTConfig")


class SFTState(NamedTuple):
  """Parameters and AdamW state (which counts the steps)."""
  params: dict
  opt_state: optax.OptState


def optimizer(config: SFTConfig) -> optax.GradientTransformation:
  """Global-norm clip, then AdamW with warm-up and cosine decay."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, config.warmup_steps, config.steps,
      end_value=0.1 * config.learning_rate)
  return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                     optax.adamw(schedule, weight_decay=config.weight_decay))


def next_token_loss(apply_fn, params, tokens: Array, mask: Array) -> Array:
  """Mean cross-entropy of each real token given the ones before it.

  Args:
    apply_fn: ``Transformer(config).apply``.
    params: its parameters.
    tokens: ``[B, T]`` int tokens.
    mask: ``[B, T]`` bool, real tokens.

  Returns:
    Scalar: ``-mean log p(tokens[:, t] | tokens[:, :t])`` over positions
    ``t >= 1`` where both ``t`` and ``t - 1`` are real.
  """
  logits, _, _ = apply_fn(params, tokens, mask)
  valid = mask[:, 1:] & mask[:, :-1]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1],
                                                       tokens[:, 1:])
  count = jnp.maximum(jnp.sum(valid), 1).astype(ce.dtype)
  return jnp.sum(jnp.where(valid, ce, 0.0)) / count


def init(model_config: model_lib.TransformerConfig, config: SFTConfig,
         key: Array) -> SFTState:
  """Fresh parameters (Flax's default initialisers) and optimiser."""
  module = model_lib.Transformer(model_config)
  params = module.init(key, jnp.zeros((1, 2), jnp.int32))
  return SFTState(params, optimizer(config).init(params))


def step(model_config: model_lib.TransformerConfig, config: SFTConfig,
         state: SFTState, tokens: Array, mask: Array):
  """One AdamW step on a ``[B, T]`` batch; returns ``(state, loss)``."""
  apply_fn = model_lib.Transformer(model_config).apply
  loss, grads = jax.value_and_grad(
      lambda p: next_token_loss(apply_fn, p, tokens, mask))(state.params)
  params, opt_state = sgd.apply_gradients(
      optimizer(config), grads, state.opt_state, state.params)
  return SFTState(params, opt_state), loss
