"""Direct preference optimisation of the language model on token-id
preference pairs, with IPO and conservative DPO as options: a pure learner
(:class:`~jaxrl_align.learner.Learner`).

The per-pair losses (``loss_type="sigmoid"``: DPO, conservative DPO with
``label_smoothing``; ``"ipo"``: TRL 1.16.0's length-normalised IPO), the
responses' log-probabilities and TRL's metrics are
:mod:`jaxrl_align.rlhf.dpo_objective`'s (re-exported here). Each
population fixed point (pairs drawn from ``π_ref``, labelled by
Bradley–Terry on a reward ``r``) is derived in docs/rlhf.md and checked by
enumeration in ``tests/test_rlhf_dpo.py``: DPO's is ``π* ∝ π_ref
exp(r/β)``.

``init`` starts the policy at the reference and computes the reference's
log-probabilities of every training and held-out pair once; each
``update`` is one step of Adam after a global-norm clip on the next batch
of a per-epoch shuffle (pairs may carry weights: the loss is then their
weighted mean); ``assess`` and ``evaluate`` report the held-out pairs'
loss and TRL's metrics, and, given held-out prompts, the exact KL of
sampled responses to the reference and their gold score.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

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
from jaxrl_align.rlhf import pairs as pairs_lib
from jaxrl_align.rlhf import rollout
from jaxrl_align.rlhf.dpo_objective import LOSS_TYPES
from jaxrl_align.rlhf.dpo_objective import SCORE_BATCH
from jaxrl_align.rlhf.dpo_objective import pair_losses
from jaxrl_align.rlhf.dpo_objective import pair_metrics
from jaxrl_align.rlhf.dpo_objective import response_log_probs
from jaxrl_align.rlhf.dpo_objective import scored_log_probs

Array = jax.Array
static = configs.static

ADAM_EPS = 1e-8  # torch.optim.AdamW's, the TRL trainer's default


@struct.dataclass
class DPOConfig(_training.PairEpochs):
  """DPO settings (TRL's ``DPOConfig`` defaults where it has the field).

  Attributes:
    model: *static* the policy's (and reference's) transformer shape.
    stop_token: *static* the token that ends a sampled response (``None``:
      none).
    pad_token: *static* written after the stop token when sampling (must
      differ from it).
    train_pairs: *static* training pairs (from the data: fixes the steps).
    loss_type: *static* ``sigmoid`` (DPO; conservative DPO with
      ``label_smoothing``) or ``ipo`` (length-normalised, as TRL).
    epochs: *static* passes over the training pairs.
    batch_size: *static* pairs per step.
    response_length: *static* new tokens at most in the responses sampled
      at assessment.
    top_k: *static* sample among the k most likely tokens at assessment (0:
      all).
    top_p: *static* nucleus of this probability at assessment (1: all).
    eval_every: *static* steps between assessments.
    anneal_lr: *static* decay the learning rate linearly to 0 over the
      run (TRL's default scheduler).
    matmul_dtype: *static* the operands' dtype of the transformer's matrix
      products in every pass (``bfloat16``: mixed precision, float32
      accumulation and parameters; see
      :class:`~jaxrl_align.rlhf.model.TransformerConfig`).
    beta: β > 0: DPO's inverse KL strength; IPO's τ.
    label_smoothing: ε in [0, 0.5), the probability that a label is flipped
      (conservative DPO; the ``sigmoid`` loss only).
    temperature: divides the logits when sampling at assessment and in its
      exact KL (training log-probabilities are at temperature 1).
    learning_rate: Adam's learning rate.
    max_grad_norm: global-norm gradient clip.
  """
  model: model_lib.TransformerConfig = static(derived=True)
  stop_token: Any = static(derived=True)
  pad_token: int = static(derived=True)
  train_pairs: int = static(derived=True)
  loss_type: str = static("sigmoid", choices=LOSS_TYPES)
  epochs: int = static(3)
  batch_size: int = static(8)
  response_length: int = static(48)
  top_k: int = static(0)
  top_p: float = static(1.0)
  eval_every: int = static(50)
  anneal_lr: bool = static(True)
  matmul_dtype: str = static("float32", choices=model_lib.MATMUL_DTYPES)
  beta: Any = 0.1
  label_smoothing: Any = 0.0
  temperature: Any = 1.0
  learning_rate: Any = 1e-6
  max_grad_norm: Any = 1.0

  def __post_init__(self):
    owner = "DPOConfig"
    if self.model is not None and not isinstance(
        self.model, model_lib.TransformerConfig):
      raise ValueError(f"`{owner}.model` must be a TransformerConfig, got "
                       f"{type(self.model).__name__}.")
    configs.check_choices(self)
    configs.check_types(self, owner)
    for name in ("epochs", "batch_size", "response_length", "eval_every"):
      _checks.check_positive_int(f"{owner}.{name}", getattr(self, name))
    if self.train_pairs is not None:
      _checks.check_positive_int(f"{owner}.train_pairs", self.train_pairs)
    _checks.check_positive_int(f"{owner}.top_k", self.top_k, allow_zero=True)
    _checks.check_scalar_in_range(f"{owner}.top_p", self.top_p, 0, 1,
                                  low_inclusive=False)
    configs.check_finite_positive(self, "beta", "temperature",
                                  "max_grad_norm")
    configs.check_finite_nonnegative(self, "learning_rate")
    configs.check_range(self, "label_smoothing", 0.0, 0.5,
                        high_inclusive=False)
    if (self.loss_type == "ipo" and configs.is_python_number(
        self.label_smoothing) and self.label_smoothing != 0):
      raise ValueError(f"`{owner}.label_smoothing` applies to the sigmoid "
                       f"loss only, got {self.label_smoothing!r} with ipo.")
    _check_tokens(self, owner)



def _check_tokens(config: DPOConfig, owner: str) -> None:
  for name in ("pad_token", "stop_token"):
    token = getattr(config, name)
    if token is not None:
      _checks.check_positive_int(f"{owner}.{name}", token, allow_zero=True)
      if config.model is not None:
        _checks.check_scalar_in_range(f"{owner}.{name}", token, 0,
                                      config.model.vocab_size - 1)
  if config.stop_token is not None and config.pad_token is None:
    raise ValueError(f"`{owner}.pad_token` must be set with stop_token "
                     f"({config.stop_token}): it is written after a stop.")
  if config.stop_token is not None and config.stop_token == config.pad_token:
    raise ValueError(f"`{owner}.pad_token` must differ from stop_token "
                     f"({config.stop_token}): padding would read as a stop.")


@struct.dataclass
class DPOData:
  """What DPO reads and never changes.

  Attributes:
    train: the training pairs.
    valid: the held-out pairs.
    ref_params: the frozen reference (the sft model); the policy starts
      from it.
    train_weights: optional ``[N]`` float32 weight of each training pair
      (``None``: all 1): the loss and metrics of a batch are weighted means.
      With the exact pair distribution of an enumerable toy (each ordered
      pair once per label, weighted by its probability) a full batch is the
      population loss.
    eval_prompts: optional ``[M, P]`` left-padded held-out prompts:
      assessments sample one response to each.
    eval_prompt_mask: ``[M, P]`` (with ``eval_prompts``).
    gold_fn: *static* ``(tokens, mask) -> [B]`` float32 or None: a score of
      the sampled responses, reported, never optimised.
  """
  train: pairs_lib.PreferencePairs
  valid: pairs_lib.PreferencePairs
  ref_params: Any
  train_weights: Array | None = None
  eval_prompts: Array | None = None
  eval_prompt_mask: Array | None = None
  gold_fn: Callable[..., Array] | None = struct.field(pytree_node=False,
                                                      default=None)


class ReferenceLogProbs(NamedTuple):
  """The reference's summed response log-probabilities, ``[N]`` or ``[M]``
  each: computed once, by :func:`init`."""
  train_chosen: Array
  train_rejected: Array
  valid_chosen: Array
  valid_rejected: Array


class DPOState(NamedTuple):
  """Everything that changes during DPO (arrays only).

  Attributes:
    params: the policy.
    opt_state: Adam's state (after the clip).
    key: each epoch's order is ``fold_in(key, epoch)``.
    step: int32 steps done.
    ref: the reference's log-probabilities (:class:`ReferenceLogProbs`).
  """
  params: Any
  opt_state: optax.OptState
  key: Array
  step: Array
  ref: ReferenceLogProbs


def loss_settings(config: DPOConfig) -> dict[str, Any]:
  """The keyword arguments of :func:`pair_losses` and :func:`pair_metrics`
  that ``config`` sets."""
  return dict(beta=config.beta, loss_type=config.loss_type,
              label_smoothing=config.label_smoothing)


def optimizer(config: DPOConfig) -> optax.GradientTransformation:
  """Adam after a global-norm clip at ``max_grad_norm`` (the learning rate
  is given at each step)."""
  return sgd.clipped_adam(config.max_grad_norm, eps=ADAM_EPS)


def learning_rate(config: DPOConfig, step: Array) -> Array:
  """This step's learning rate (linearly annealed with ``anneal_lr``)."""
  lr = jnp.asarray(config.learning_rate, jnp.float32)
  if config.anneal_lr:
    return sgd.linear_schedule(lr, step, config.num_updates)
  return lr


def _check_data(config: DPOConfig, data: DPOData) -> None:
  n = data.train.prompt.shape[0]
  if config.model is None or config.train_pairs != n:
    raise ValueError(f"DPOConfig.model and train_pairs must describe the data "
                     f"({n} training pairs), got {config.train_pairs}.")
  for name in ("train", "valid"):
    pairs = getattr(data, name)
    width = pairs.prompt.shape[1] + pairs.chosen.shape[1]
    if width > config.model.max_len:
      raise ValueError(f"{name} pairs of {width} tokens exceed the model's "
                       f"max_len {config.model.max_len}.")
  if data.eval_prompts is not None and (data.eval_prompts.shape[1]
                                        + config.response_length
                                        > config.model.max_len):
    raise ValueError(f"eval prompts of {data.eval_prompts.shape[1]} tokens + "
                     f"response_length {config.response_length} exceed the "
                     f"model's max_len {config.model.max_len}.")


def init(config: DPOConfig, key: Array, data: DPOData) -> DPOState:
  """The policy starts at the reference; the reference's log-probabilities
  of every training and held-out pair are computed here, once."""
  _check_data(config, data)
  params = data.ref_params
  with sgd.optax_numerics():
    opt_state = optimizer(config).init(params)
  ref = ReferenceLogProbs(
      *scored_log_probs(rollout.model(config), params, data.train),
      *scored_log_probs(rollout.model(config), params, data.valid))
  ref = jax.tree.map(jax.lax.stop_gradient, ref)
  return DPOState(params, opt_state, key, jnp.zeros((), jnp.int32), ref)


def _batch_indices(config: DPOConfig, state: DPOState, n: int) -> Array:
  """The next ``batch_size`` indices of this epoch's shuffle (as the reward
  model's: an epoch's last partial batch is left out)."""
  epoch = state.step // config.steps_per_epoch
  offset = state.step % config.steps_per_epoch * config.batch_size
  order = sgd.permutation(jax.random.fold_in(state.key, epoch), n)
  return order[(offset + jnp.arange(config.batch_size)) % n]


def update(config: DPOConfig, state: DPOState, data: DPOData):
  """One clipped Adam step on the next batch of training pairs."""
  idx = _batch_indices(config, state, data.train.prompt.shape[0])
  pairs, ref_w, ref_l, weights = parallel.shard_batch(jax.tree.map(
      lambda x: x[idx], (data.train, state.ref.train_chosen,
                         state.ref.train_rejected, data.train_weights)))
  apply_fn = model_lib.Transformer(rollout.model(config)).apply

  def loss_fn(params):
    chosen, rejected = response_log_probs(apply_fn, params, pairs)
    metrics = pair_metrics(chosen, rejected, ref_w, ref_l, pairs, weights,
                           **loss_settings(config))
    return metrics["loss"], metrics

  grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
  params, opt_state = sgd.descend(optimizer(config), grads, state.opt_state,
                                  state.params,
                                  learning_rate(config, state.step))
  state = state._replace(params=params, opt_state=opt_state,
                         step=state.step + 1)
  return state, {**metrics, "pairs": (state.step * config.batch_size
                                      ).astype(jnp.float32)}


def held_out(config: DPOConfig, state: DPOState, data: DPOData
             ) -> dict[str, Array]:
  """:func:`pair_metrics` of the held-out pairs, prefixed ``eval/``."""
  chosen, rejected = scored_log_probs(rollout.model(config), state.params,
                                      data.valid)
  metrics = pair_metrics(chosen, rejected, state.ref.valid_chosen,
                         state.ref.valid_rejected, data.valid,
                         **loss_settings(config))
  return {f"eval/{name}": value for name, value in metrics.items()}


def assess(config: DPOConfig, state: DPOState, data: DPOData):
  """The held-out pairs; with held-out prompts, one response sampled to each
  (a fixed key): its gold score (NaN without ``gold_fn``), its exact KL to
  the reference and the fraction that stopped."""
  metrics = held_out(config, state, data)
  if data.eval_prompts is None:
    return state, metrics
  gen = rollout.sample(config, state.params, data.eval_prompts,
                       data.eval_prompt_mask, jax.random.key(0))
  kl = rollout.exact_kl(config, state.params, data.ref_params, gen.tokens,
                        gen.mask, gen.response_mask)
  done = rollout.stopped(config, gen.response, gen.response_mask)
  return state, {**metrics, "eval/gold": rollout.gold(data, gen.tokens,
                                                      gen.mask),
                 "eval/kl_exact": jnp.mean(kl),
                 "eval/stop_fraction": jnp.mean(done.astype(jnp.float32))}


def evaluate(config: DPOConfig, state: DPOState, key: Array, data: DPOData,
             size: int) -> dict[str, Array]:
  """The held-out pairs' metrics; with held-out prompts, the policy's and
  the reference's responses side by side (``key`` samples them; ``size``
  is ignored: every prompt is used once): gold scores (NaN without
  ``gold_fn``), whether they stopped, and the policy's exact KL."""
  del size
  out = held_out(config, state, data)
  if data.eval_prompts is None:
    return out
  for name, params in (("policy", state.params),
                       ("reference", data.ref_params)):
    gen = rollout.sample(config, params, data.eval_prompts,
                         data.eval_prompt_mask, key)
    out[f"{name}_gold"] = (
        jnp.full(gen.tokens.shape[:1], jnp.nan, jnp.float32)
        if data.gold_fn is None else data.gold_fn(gen.tokens, gen.mask))
    out[f"{name}_stopped"] = rollout.stopped(config, gen.response,
                                             gen.response_mask)
    if name == "policy":
      out["policy_kl_exact"] = rollout.exact_kl(
          config, params, data.ref_params, gen.tokens, gen.mask,
          gen.response_mask)
  return out


LEARNER = learner.Learner(
    name="rlhf-dpo", config_type=DPOConfig, init=init, update=update,
    evaluate=evaluate, assess=assess,
    assess_every=lambda config: config.eval_every,
    num_updates=lambda config: config.num_updates, units="pairs",
    units_per_update=lambda config: config.batch_size,
    finite_metrics=("loss",))

__all__ = ("DPOConfig", "DPOData", "DPOState", "LEARNER", "LOSS_TYPES",
           "ReferenceLogProbs", "SCORE_BATCH", "assess", "evaluate", "init",
           "learning_rate", "loss_settings", "optimizer", "pair_losses",
           "pair_metrics", "response_log_probs", "scored_log_probs",
           "update")
