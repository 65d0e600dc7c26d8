"""Pretraining (``sft``): next-token cross-entropy on the corpus, as a pure
learner (:class:`~jaxrl_align.learner.Learner`).

``init`` starts from fresh parameters and measures the validation loss;
each ``update`` takes one AdamW step on a batch of training windows drawn
(with replacement) from ``data``; ``assess``, every ``eval_every`` steps,
measures the validation loss and keeps the parameters that reached the
lowest. The host side (:mod:`jaxrl_align.host.rlhf`) builds the tokenizer
and the windows, runs the learner through the runner and saves the kept
parameters.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxrl_align import _checks
from jaxrl_align import configs
from jaxrl_align import learner
from jaxrl_align import parallel
from jaxrl_align import sgd
from jaxrl_align.rlhf import _training
from jaxrl_align.rlhf import model as model_lib

Array = jax.Array
static = configs.static


@struct.dataclass
class SFTConfig:
  """Pretraining settings.

  Attributes:
    model: *static* the transformer's shape (its ``vocab_size`` is the
      tokenizer's).
    steps: *static* optimiser steps.
    batch_size: *static* sequences per step.
    learning_rate: *static* AdamW peak learning rate (linear warm-up, cosine
      decay; optax's schedule needs a Python number).
    warmup_steps: *static* linear warm-up steps.
    weight_decay: AdamW decoupled weight decay.
    max_grad_norm: global-norm gradient clip.
    eval_every: *static* steps between validation losses.
  """
  model: model_lib.TransformerConfig = static(
      model_lib.TransformerConfig(vocab_size=1024))
  steps: int = static(600)
  batch_size: int = static(32)
  learning_rate: float = static(1e-3)
  warmup_steps: int = static(50)
  weight_decay: Any = 0.1
  max_grad_norm: Any = 1.0
  eval_every: int = static(50)

  def __post_init__(self):
    if not isinstance(self.model, model_lib.TransformerConfig):
      raise ValueError(f"`SFTConfig.model` must be a TransformerConfig, got "
                       f"{type(self.model).__name__}.")
    configs.check_types(self, "SFTConfig")
    if self.model.max_len < 2:
      raise ValueError(f"`SFTConfig.model.max_len` must be at least 2, got "
                       f"{self.model.max_len}: a window of one token has no "
                       f"next token to learn.")
    _checks.check_positive_int("SFTConfig.steps", self.steps)
    _checks.check_positive_int("SFTConfig.warmup_steps", self.warmup_steps,
                               allow_zero=True)
    _checks.check_scalar_in_range("SFTConfig.warmup_steps", self.warmup_steps,
                                  0, self.steps, high_inclusive=False)
    _checks.check_positive_int("SFTConfig.eval_every", self.eval_every)
    _training.check_optimizer_fields(self, "SFTConfig")


class SFTData(NamedTuple):
  """Token windows of the training and validation documents.

  Attributes:
    train: ``[N, max_len]`` int32.
    valid: ``[M, max_len]`` int32.
  """
  train: Array
  valid: Array


class SFTState(NamedTuple):
  """Parameters, AdamW state (which counts the steps), the kept parameters.

  Attributes:
    params: current parameters.
    opt_state: AdamW state.
    key: batch-sampling key.
    step: int32 steps done.
    best_params: the parameters of the lowest validation loss so far.
    best_valid_loss: that loss.
    best_step: the step it was reached at (0: the initial parameters).
    initial_valid_loss: the validation loss before training.
  """
  params: Any
  opt_state: optax.OptState
  key: Array
  step: Array
  best_params: Any
  best_valid_loss: Array
  best_step: Array
  initial_valid_loss: Array


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


def _window_loss(config: SFTConfig, params, tokens: Array) -> Array:
  apply_fn = model_lib.Transformer(config.model).apply
  return next_token_loss(apply_fn, params, tokens,
                         jnp.ones(tokens.shape, bool))


def init(config: SFTConfig, key: Array, data: SFTData) -> SFTState:
  """Fresh parameters (Flax's default initialisers) and optimiser."""
  k_params, k_batches = jax.random.split(key)
  params = model_lib.Transformer(config.model).init(
      k_params, jnp.zeros((1, 2), jnp.int32))
  with sgd.optax_numerics():
    opt_state = optimizer(config).init(params)
  loss = _window_loss(config, params, data.valid)
  return SFTState(params, opt_state, k_batches, jnp.zeros((), jnp.int32),
                  params, loss, jnp.zeros((), jnp.int32), loss)


def step(config: SFTConfig, state: SFTState, tokens: Array, mask: Array):
  """One AdamW step on a ``[B, T]`` batch; returns ``(state, loss)``."""
  apply_fn = model_lib.Transformer(config.model).apply
  loss, grads = jax.value_and_grad(
      lambda p: next_token_loss(apply_fn, p, tokens, mask))(state.params)
  params, opt_state = sgd.apply_gradients(
      optimizer(config), grads, state.opt_state, state.params)
  return state._replace(params=params, opt_state=opt_state,
                        step=state.step + 1), loss


def update(config: SFTConfig, state: SFTState, data: SFTData):
  """A batch of ``batch_size`` training windows, drawn with replacement,
  and one :func:`step` on it."""
  key, sub = jax.random.split(state.key)
  tokens = parallel.shard_batch(data.train[jax.random.randint(
      sub, (config.batch_size,), 0, data.train.shape[0])])
  state, loss = step(config, state._replace(key=key), tokens,
                     jnp.ones(tokens.shape, bool))
  return state, {
      "train_loss": loss,
      "tokens": (state.step * config.batch_size
                 * config.model.max_len).astype(jnp.float32)}


def assess(config: SFTConfig, state: SFTState, data: SFTData):
  """The validation loss; keeps the parameters if it is the lowest yet."""
  loss = _window_loss(config, state.params, data.valid)
  state = _training.keep_best(state, loss < state.best_valid_loss,
                              best_valid_loss=loss)
  return state, {"valid_loss": loss}


def evaluate(config: SFTConfig, state: SFTState, key: Array, data: SFTData,
             size: int) -> dict[str, Array]:
  """The validation loss before training and the lowest reached, and the
  step of the kept parameters (``key`` and ``size`` unused)."""
  del config, key, data, size
  return {"valid_loss_initial": state.initial_valid_loss,
          "valid_loss_best": state.best_valid_loss,
          "best_step": state.best_step}


LEARNER = learner.Learner(
    name="sft", config_type=SFTConfig, init=init, update=update,
    evaluate=evaluate, assess=assess,
    assess_every=lambda config: config.eval_every,
    num_updates=lambda config: config.steps, units="tokens",
    units_per_update=lambda config: config.batch_size * config.model.max_len,
    finite_metrics=("train_loss",))
