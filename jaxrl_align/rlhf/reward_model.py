"""The Bradley–Terry reward model: the transformer's scalar head, read at the
last real token, trained on preference pairs as a pure learner
(:class:`~jaxrl_align.learner.Learner`).

``P(chosen ≻ rejected) = σ(r(chosen) - r(rejected))`` (Bradley & Terry 1952;
as in Ziegler et al. 2019 and Ouyang et al. 2022); the loss is its negative
log-likelihood (:func:`jaxrl_align.bradley_terry_loss`). ``init`` starts from
given (pretrained) parameters; each ``update`` is one AdamW step on the next
batch of a per-epoch shuffle of the training pairs; ``assess``, every
``eval_every`` steps, keeps the parameters of the best accuracy on a
development split; ``evaluate`` scores the held-out pairs and every
response of the data set with the kept parameters, so the host can
normalise the saved model's rewards to mean 0 and standard deviation 1 on
these reference-policy samples (:func:`normalize_head`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxrl_align import _checks
from jaxrl_align import configs
from jaxrl_align import learner
from jaxrl_align import parallel
from jaxrl_align import preferences
from jaxrl_align import sgd
from jaxrl_align.rlhf import _training
from jaxrl_align.rlhf import model as model_lib

Array = jax.Array
static = configs.static

SCORE_BATCH = 256  # sequences per forward pass when scoring many


@struct.dataclass
class RMConfig(_training.PairEpochs):
  """Reward-model training settings.

  Attributes:
    model: *static* the transformer's shape (the pretrained model's).
    train_pairs: *static* training pairs (from the data: fixes the steps).
    epochs: *static* passes over the training pairs.
    batch_size: *static* pairs per step.
    learning_rate: AdamW learning rate of the scalar head (constant after
      warm-up).
    body_learning_rate_scale: the rest of the network's learning rate as a
      fraction of ``learning_rate`` (in (0, 1]: the pretrained body moves
      more slowly than the fresh head).
    warmup_steps: *static* linear warm-up steps.
    weight_decay: AdamW decoupled weight decay.
    max_grad_norm: global-norm gradient clip.
    dropout: *static* dropout rate while training (the model's
      ``TransformerConfig.dropout`` is replaced by it; scoring never drops).
    eval_every: *static* steps between development-set accuracies.
  """
  model: model_lib.TransformerConfig = static(derived=True)
  train_pairs: Any = static(derived=True)
  epochs: int = static(3)
  batch_size: int = static(32)
  learning_rate: Any = 3e-4
  body_learning_rate_scale: Any = 1.0
  warmup_steps: int = static(20)
  weight_decay: Any = 0.01
  max_grad_norm: Any = 1.0
  dropout: float = static(0.1)
  eval_every: int = static(50)

  def __post_init__(self):
    if self.model is not None and not isinstance(
        self.model, model_lib.TransformerConfig):
      raise ValueError(f"`RMConfig.model` must be a TransformerConfig, got "
                       f"{type(self.model).__name__}.")
    configs.check_types(self, "RMConfig")
    if self.train_pairs is not None:
      _checks.check_positive_int("RMConfig.train_pairs", self.train_pairs)
    _checks.check_positive_int("RMConfig.epochs", self.epochs)
    _checks.check_positive_int("RMConfig.warmup_steps", self.warmup_steps,
                               allow_zero=True)
    _checks.check_positive_int("RMConfig.eval_every", self.eval_every)
    _training.check_optimizer_fields(self, "RMConfig")
    configs.check_range(self, "body_learning_rate_scale", 0, 1,
                        low_inclusive=False)
    _checks.check_scalar_in_range("RMConfig.dropout", self.dropout, 0, 1,
                                  high_inclusive=False)



class Pairs(NamedTuple):
  """Left-padded preference pairs, ``[N, T]`` each."""
  chosen: Array
  chosen_mask: Array
  rejected: Array
  rejected_mask: Array


class RMData(NamedTuple):
  """What the reward model learns from.

  Attributes:
    start_params: the pretrained parameters training starts from.
    train: the training pairs.
    dev: the development pairs (choose the parameters).
    valid: the held-out pairs (report only).
    valid_gold_margin: ``[N_valid]`` gold reward of chosen minus rejected.
  """
  start_params: Any
  train: Pairs
  dev: Pairs
  valid: Pairs
  valid_gold_margin: Array


class RMState(NamedTuple):
  """Parameters, AdamW state, keys and the kept parameters.

  Attributes:
    params: current parameters.
    opt_state: AdamW state.
    key: dropout key (split every step).
    shuffle_key: each epoch's order is ``fold_in(shuffle_key, epoch)``.
    step: int32 steps done.
    best_params: the parameters of the best development accuracy so far.
    best_dev_accuracy: that accuracy.
    best_step: the step it was reached at (0: the pretrained parameters).
  """
  params: Any
  opt_state: optax.OptState
  key: Array
  shuffle_key: Array
  step: Array
  best_params: Any
  best_dev_accuracy: Array
  best_step: Array


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


def scores(model: model_lib.TransformerConfig, params, tokens: Array,
           mask: Array, batch: int = SCORE_BATCH) -> Array:
  """:func:`rewards` of ``[N, T]`` sequences, ``batch`` at a time (the
  last batch padded with copies of the first row)."""
  apply_fn = model_lib.Transformer(model).apply
  n = tokens.shape[0]
  batches = -(-n // batch)
  pad = batches * batch - n
  tokens = jnp.concatenate([tokens, jnp.repeat(tokens[:1], pad, 0)])
  mask = jnp.concatenate([mask, jnp.repeat(mask[:1], pad, 0)])
  out = jax.lax.map(lambda tm: rewards(apply_fn, params, *tm),
                    (tokens.reshape((batches, batch) + tokens.shape[1:]),
                     mask.reshape((batches, batch) + mask.shape[1:])))
  return out.reshape(-1)[:n]


def accuracy(chosen_reward: Array, rejected_reward: Array) -> Array:
  """Fraction of pairs the rewards order as the labels do (ties count as
  wrong)."""
  return jnp.mean((chosen_reward > rejected_reward).astype(jnp.float32))


def pair_accuracy(model, params, pairs: Pairs) -> Array:
  return accuracy(scores(model, params, pairs.chosen, pairs.chosen_mask),
                  scores(model, params, pairs.rejected, pairs.rejected_mask))


def step(config: RMConfig, params, opt_state, chosen: Array,
         chosen_mask: Array, rejected: Array, rejected_mask: Array,
         key: Array):
  """One AdamW step on a batch of ``[B, T]`` pairs (``key`` draws the
  dropout masks); returns ``(params, opt_state, loss, accuracy)``."""
  module = model_lib.Transformer(
      dataclasses.replace(config.model, dropout=config.dropout))

  def apply_fn(params, tokens, mask):
    return module.apply(params, tokens, mask, deterministic=False,
                        rngs={"dropout": key})

  def loss_fn(params):
    tokens = jnp.concatenate([chosen, rejected])
    mask = jnp.concatenate([chosen_mask, rejected_mask])
    r = rewards(apply_fn, params, tokens, mask)
    n = chosen.shape[0]
    return (preferences.bradley_terry_loss(r[:n], r[n:]),
            accuracy(r[:n], r[n:]))

  (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  params, opt_state = sgd.apply_gradients(optimizer(config), grads,
                                          opt_state, params)
  return params, opt_state, loss, acc


def init(config: RMConfig, key: Array, data: RMData) -> RMState:
  """Starts from ``data.start_params``; measures their development
  accuracy (the parameters to beat)."""
  if config.model is None or config.train_pairs != data.train.chosen.shape[0]:
    raise ValueError(f"RMConfig.model and train_pairs must describe the data "
                     f"({data.train.chosen.shape[0]} training pairs), got "
                     f"{config.train_pairs}.")
  params = data.start_params
  with sgd.optax_numerics():
    opt_state = optimizer(config).init(params)
  k_dropout, k_shuffle = jax.random.split(key)
  zero = jnp.zeros((), jnp.int32)
  return RMState(params, opt_state, k_dropout, k_shuffle, zero, params,
                 pair_accuracy(config.model, params, data.dev), zero)


def update(config: RMConfig, state: RMState, data: RMData):
  """One step on the next ``batch_size`` pairs of this epoch's shuffle (the
  last partial batch of an epoch is left out, as a whole epoch of fewer
  pairs than a batch is topped up from its start)."""
  n, b = data.train.chosen.shape[0], config.batch_size
  epoch = state.step // config.steps_per_epoch
  offset = state.step % config.steps_per_epoch * b
  order = sgd.permutation(jax.random.fold_in(state.shuffle_key, epoch), n)
  idx = order[(offset + jnp.arange(b)) % n]
  key, dropout_key = jax.random.split(state.key)
  params, opt_state, loss, acc = step(
      config, state.params, state.opt_state,
      *parallel.shard_batch([x[idx] for x in data.train]), dropout_key)
  state = state._replace(params=params, opt_state=opt_state, key=key,
                         step=state.step + 1)
  return state, {"train_loss": loss, "train_accuracy": acc,
                 "pairs": (state.step * b).astype(jnp.float32)}


def assess(config: RMConfig, state: RMState, data: RMData):
  """The development accuracy; keeps the parameters if it is the best yet."""
  dev = pair_accuracy(config.model, state.params, data.dev)
  state = _training.keep_best(state, dev > state.best_dev_accuracy,
                              best_dev_accuracy=dev)
  return state, {"dev_accuracy": dev}


def evaluate(config: RMConfig, state: RMState, key: Array, data: RMData,
             size: int) -> dict[str, Array]:
  """With the kept parameters: the held-out pairs' rewards and the mean
  and standard deviation of the rewards of every response in the data set
  (the reference policy's samples); the kept parameters' development
  accuracy and step."""
  del key, size
  params, model = state.best_params, config.model
  every = jnp.concatenate([
      scores(model, params, tokens, mask)
      for pairs in (data.train, data.dev, data.valid)
      for tokens, mask in ((pairs.chosen, pairs.chosen_mask),
                           (pairs.rejected, pairs.rejected_mask))])
  valid = data.valid
  return {"valid_chosen": scores(model, params, valid.chosen,
                                 valid.chosen_mask),
          "valid_rejected": scores(model, params, valid.rejected,
                                   valid.rejected_mask),
          "valid_gold_margin": data.valid_gold_margin,
          "reference_mean": jnp.mean(every), "reference_std": jnp.std(every),
          "dev_accuracy": state.best_dev_accuracy,
          "best_step": state.best_step}


def normalize_head(params, mean: float, std: float):
  """Parameters whose rewards are ``(r - mean) / std`` (the scalar head's
  kernel and bias rescaled; nothing else changes)."""
  if not std > 0:
    raise ValueError(f"std must be > 0, got {std!r}.")
  head = params["params"]["score"]
  new_head = {"kernel": head["kernel"] / std,
              "bias": (head["bias"] - mean) / std}
  return {**params, "params": {**params["params"], "score": new_head}}


LEARNER = learner.Learner(
    name="rm", config_type=RMConfig, init=init, update=update,
    evaluate=evaluate, assess=assess,
    assess_every=lambda config: config.eval_every,
    num_updates=lambda config: config.num_updates, units="pairs",
    units_per_update=lambda config: config.batch_size,
    finite_metrics=("train_loss",))
