"""The Bradley–Terry reward model: the transformer's scalar head, read at the
last real token, trained on preference pairs.

``P(chosen ≻ rejected) = σ(r(chosen) - r(rejected))`` (Bradley & Terry 1952;
as in Ziegler et al. 2019 and Ouyang et al. 2022); the loss is its negative
log-likelihood. After training, rewards are normalised to mean 0 and
standard deviation 1 on reference-policy samples by folding the affine map
into the scalar head, so the saved model outputs normalised rewards.
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
class RMConfig:
  """Reward-model training settings (host-side Python values).

  Attributes:
    epochs: passes over the training pairs.
    batch_size: pairs per step.
    learning_rate: AdamW learning rate of the scalar head (constant after
      warm-up).
    body_learning_rate_scale: the rest of the network's learning rate as a
      fraction of ``learning_rate`` (in (0, 1]: the pretrained body moves
      more slowly than the fresh head).
    warmup_steps: linear warm-up steps.
    weight_decay: AdamW decoupled weight decay.
    max_grad_norm: global-norm gradient clip.
    dropout: dropout rate while training (the model's
      ``TransformerConfig.dropout`` is replaced by it; scoring never drops).
  """
  epochs: int = 3
  batch_size: int = 32
  learning_rate: float = 3e-4
  body_learning_rate_scale: float = 1.0
  warmup_steps: int = 20
  weight_decay: float = 0.01
  max_grad_norm: float = 1.0
  dropout: float = 0.1

  def __post_init__(self):
    _checks.check_positive_int("RMConfig.epochs", self.epochs)
    _checks.check_positive_int("RMConfig.warmup_steps", self.warmup_steps,
                               allow_zero=True)
    _training.check_optimizer_fields(self, "RMConfig")
    _checks.check_scalar_in_range("RMConfig.body_learning_rate_scale",
                                  self.body_learning_rate_scale, 0, 1,
                                  low_inclusive=False)
    _checks.check_scalar_in_range("RMConfig.dropout", self.dropout, 0, 1,
                                  high_inclusive=False)


class RMState(NamedTuple):
  params: dict
  opt_state: optax.OptState


def _param_labels(params):
  """``"head"`` for the scalar head's leaves, ``"body"`` for the rest."""
  return {**params, "params": {
      name: jax.tree.map(lambda _, n=name: "head" if n == "score" else "body",
                         sub) for name, sub in params["params"].items()}}


def optimizer(config: RMConfig) -> optax.GradientTransformation:
  """Global-norm clip, then AdamW with linear warm-up: the head at
  ``learning_rate``, the body at ``body_learning_rate_scale`` times it."""
  def adamw(peak):
    schedule = optax.linear_schedule(0.0, peak, max(config.warmup_steps, 1))
    return optax.adamw(schedule, weight_decay=config.weight_decay)

  lr = config.learning_rate
  return optax.chain(
      optax.clip_by_global_norm(config.max_grad_norm),
      optax.multi_transform(
          {"head": adamw(lr),
           "body": adamw(lr * config.body_learning_rate_scale)},
          _param_labels))


def rewards(apply_fn, params, tokens: Array, mask: Array) -> Array:
  """The scalar head at each row's last real token.

  Args:
    apply_fn: ``Transformer(config).apply``.
    params: its parameters.
    tokens: ``[B, T]`` int tokens (left- or right-padded).
    mask: ``[B, T]`` bool, real tokens (at least one per row).

  Returns:
    ``[B]`` rewards.
  """
  _, scalar, _ = apply_fn(params, tokens, mask)
  last = mask.shape[1] - 1 - jnp.argmax(mask[:, ::-1], axis=1)
  return jnp.take_along_axis(scalar, last[:, None], axis=1)[:, 0]


def bradley_terry_loss(r_chosen: Array, r_rejected: Array):
  """``(loss, accuracy)``: ``mean(-log σ(r_c - r_r))`` and the fraction of
  pairs with ``r_c > r_r``. Inputs ``[B]``; outputs scalars."""
  margin = r_chosen - r_rejected
  loss = jnp.mean(-jax.nn.log_sigmoid(margin))
  return loss, jnp.mean((margin > 0).astype(margin.dtype))


def init(params, config: RMConfig) -> RMState:
  """Starts from given (usually pretrained) parameters."""
  return RMState(params, optimizer(config).init(params))


def step(model_config: model_lib.TransformerConfig, config: RMConfig,
         state: RMState, chosen: Array, chosen_mask: Array, rejected: Array,
         rejected_mask: Array, key: Array):
  """One AdamW step on a batch of ``[B, T]`` pairs (``key`` draws the
  dropout masks); returns ``(state, loss, accuracy)``."""
  module = model_lib.Transformer(
      dataclasses.replace(model_config, dropout=config.dropout))

  def apply_fn(params, tokens, mask):
    return module.apply(params, tokens, mask, deterministic=False,
                        rngs={"dropout": key})

  def loss_fn(params):
    tokens = jnp.concatenate([chosen, rejected])
    mask = jnp.concatenate([chosen_mask, rejected_mask])
    r = rewards(apply_fn, params, tokens, mask)
    n = chosen.shape[0]
    return bradley_terry_loss(r[:n], r[n:])

  (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  params, opt_state = sgd.apply_gradients(
      optimizer(config), grads, state.opt_state, state.params)
  return RMState(params, opt_state), loss, accuracy


def normalize_head(params, mean: float, std: float):
  """Parameters whose rewards are ``(r - mean) / std`` (the scalar head's
  kernel and bias rescaled; nothing else changes)."""
  if not std > 0:
    raise ValueError(f"std must be > 0, got {std!r}.")
  head = params["params"]["score"]
  new_head = {"kernel": head["kernel"] / std,
              "bias": (head["bias"] - mean) / std}
  return {**params, "params": {**params["params"], "score": new_head}}
