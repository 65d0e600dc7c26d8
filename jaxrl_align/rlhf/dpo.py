"""Direct preference optimisation of the language model on token-id
preference pairs, with IPO and conservative DPO as options: a pure learner
(:class:`~jaxrl_align.learner.Learner`).

For a pair ``(x, y_w, y_l)`` (:class:`~jaxrl_align.rlhf.pairs.PreferencePairs`:
the prompt left-padded, each response right-padded with its mask) let
``h(y) = log π(y|x) - log π_ref(y|x)``, each log-probability the sum over
the response's real tokens only (the prompt never counts), at temperature 1.
With ``z = β (h(y_w) - h(y_l))`` the per-pair losses are

* ``sigmoid`` (DPO, Rafailov et al. 2023, eq. 7; conservative DPO with
  ``ε = label_smoothing``, Mitchell 2023, eq. 3):
  ``-(1 - ε) log σ(z) - ε log σ(-z)``;
* ``ipo`` (Azar et al. 2023, eq. 17, as TRL 1.16.0 computes it: each
  log-ratio divided by its response's length ``|y|``):
  ``(h(y_w)/|y_w| - h(y_l)/|y_l| - 1/(2β))²``.

The names are TRL's (``trl/trainer/dpo_trainer.py``, ``_compute_loss``,
``loss_type == "sigmoid"`` and ``"ipo"``). TRL 1.16.0's ``sigmoid`` no
longer reads ``label_smoothing`` (its ``robust`` loss does, a different,
unbiased correction); the smoothed sigmoid here is the conservative DPO of
TRL's earlier releases and of :func:`jaxrl_align.dpo_loss`, equal to TRL
1.16.0's at ``ε = 0``. Each population fixed point (every pair drawn from
``π_ref``, labelled by Bradley–Terry on a reward ``r``) is derived in
docs/rlhf.md and checked by enumeration in ``tests/test_rlhf_dpo.py``:
DPO's is ``π* ∝ π_ref exp(r/β)``.

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
from jaxrl_align.rlhf import generation
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import pairs as pairs_lib
from jaxrl_align.rlhf import rollout

Array = jax.Array
static = configs.static

LOSS_TYPES = ("sigmoid", "ipo")
SCORE_BATCH = 256  # pairs per forward pass when scoring a whole set
ADAM_EPS = 1e-8  # torch.optim.AdamW's, the TRL trainer's default


@struct.dataclass
class DPOConfig:
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

  @property
  def steps_per_epoch(self) -> int:
    return max(1, self.train_pairs // self.batch_size)

  @property
  def num_updates(self) -> int:
    if self.train_pairs is None:
      raise ValueError("DPOConfig.train_pairs is not set: it comes from the "
                       "data set.")
    return self.epochs * self.steps_per_epoch


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


# ------------------------------------------------------------ the loss


def pair_losses(chosen_logratio: Array, rejected_logratio: Array,
                chosen_length: Array, rejected_length: Array, *,
                beta: float | Array, loss_type: str,
                label_smoothing: float | Array = 0.0) -> Array:
  r"""Per-pair DPO, conservative DPO or IPO loss.

  With ``h_w = log π(y_w) - log π_ref(y_w)`` and ``h_l`` likewise::

      sigmoid: -(1 - ε) log σ(β (h_w - h_l)) - ε log σ(-β (h_w - h_l))
      ipo:     (h_w / |y_w| - h_l / |y_l| - 1 / (2β))²

  Args:
    chosen_logratio: ``[N]`` ``h_w`` (log-probabilities summed over the
      response's tokens).
    rejected_logratio: ``[N]`` ``h_l``.
    chosen_length: ``[N]`` real tokens of ``y_w`` (``ipo``; at least 1 is
      used, as TRL clamps).
    rejected_length: ``[N]`` real tokens of ``y_l``.
    beta: β > 0 (IPO's τ).
    loss_type: ``"sigmoid"`` or ``"ipo"`` (static).
    label_smoothing: ε (``sigmoid`` only).

  Returns:
    ``[N]`` losses; ``ln 2`` (sigmoid) or ``1/(4β²)`` (ipo) at the
    reference.

  References:
    Rafailov et al. 2023, https://arxiv.org/abs/2305.18290 (eq. 7);
    Mitchell 2023, "A note on DPO with noisy preferences" (eq. 3);
    Azar et al. 2023, https://arxiv.org/abs/2310.12036 (eq. 17); TRL 1.16.0
    ``trl/trainer/dpo_trainer.py`` ``_compute_loss``.
  """
  if loss_type not in LOSS_TYPES:
    raise ValueError(f"`loss_type` must be one of {LOSS_TYPES}, got "
                     f"{loss_type!r}.")
  _checks.check_same_shape(chosen_logratio=chosen_logratio,
                           rejected_logratio=rejected_logratio,
                           chosen_length=chosen_length,
                           rejected_length=rejected_length)
  dtype = jnp.result_type(chosen_logratio)
  beta = jnp.asarray(beta, dtype)
  if loss_type == "ipo":
    def per_token(h, n):
      return h / jnp.maximum(n.astype(dtype), 1.0)
    delta = (per_token(chosen_logratio, chosen_length)
             - per_token(rejected_logratio, rejected_length))
    return (delta - 1.0 / (2.0 * beta)) ** 2
  eps = jnp.asarray(label_smoothing, dtype)
  z = beta * (chosen_logratio - rejected_logratio)
  return -(1 - eps) * jax.nn.log_sigmoid(z) - eps * jax.nn.log_sigmoid(-z)


def response_log_probs(apply_fn, params, pairs: pairs_lib.PreferencePairs
                       ) -> tuple[Array, Array]:
  """``([N], [N])``: ``log π(y_w | x)`` and ``log π(y_l | x)``, summed over
  each response's real tokens (temperature 1), from one forward pass over
  both sides."""
  n, width = pairs.prompt.shape[0], pairs.chosen.shape[1]
  tokens, mask = (jnp.concatenate(x) for x in zip(
      pairs.sequence("chosen"), pairs.sequence("rejected")))
  log_probs = generation.sequence_log_probs(apply_fn, params, tokens, mask,
                                            width).sum(axis=1)
  return log_probs[:n], log_probs[n:]


def scored_log_probs(model: model_lib.TransformerConfig, params,
                     pairs: pairs_lib.PreferencePairs,
                     batch: int = SCORE_BATCH) -> tuple[Array, Array]:
  """:func:`response_log_probs` of a whole set, ``batch`` pairs at a time
  (the last batch padded with copies of the first pair)."""
  apply_fn = model_lib.Transformer(model).apply
  n = pairs.prompt.shape[0]
  if n <= batch:
    return response_log_probs(apply_fn, params, pairs)
  batches = -(-n // batch)
  padded = jax.tree.map(
      lambda x: jnp.concatenate([x, jnp.repeat(x[:1], batches * batch - n, 0)]
                                ).reshape((batches, batch) + x.shape[1:]),
      pairs)
  chosen, rejected = jax.lax.map(
      lambda p: response_log_probs(apply_fn, params, p), padded)
  return chosen.reshape(-1)[:n], rejected.reshape(-1)[:n]


def _mean(x: Array, weights: Array | None) -> Array:
  if weights is None:
    return jnp.mean(x)
  return jnp.sum(weights * x) / jnp.sum(weights)


def pair_metrics(config: DPOConfig, chosen: Array, rejected: Array,
                 ref_chosen: Array, ref_rejected: Array,
                 pairs: pairs_lib.PreferencePairs,
                 weights: Array | None = None) -> dict[str, Array]:
  """The (weighted) mean loss and TRL's metrics of ``[N]`` pairs from the
  policy's and the reference's summed log-probabilities: ``rewards/*`` are
  the implicit rewards ``β h``, ``rewards/accuracies`` the fraction with
  ``β h_w > β h_l``, ``logps/*`` the policy's log-probabilities."""
  h_w, h_l = chosen - ref_chosen, rejected - ref_rejected
  lengths = (jnp.sum(pairs.chosen_mask, axis=1),
             jnp.sum(pairs.rejected_mask, axis=1))
  losses = pair_losses(h_w, h_l, *lengths, beta=config.beta,
                       loss_type=config.loss_type,
                       label_smoothing=config.label_smoothing)
  beta = jnp.asarray(config.beta, h_w.dtype)
  reward_w, reward_l = beta * h_w, beta * h_l
  return {"loss": _mean(losses, weights),
          "rewards/chosen": _mean(reward_w, weights),
          "rewards/rejected": _mean(reward_l, weights),
          "rewards/margins": _mean(reward_w - reward_l, weights),
          "rewards/accuracies": _mean((reward_w > reward_l).astype(
              h_w.dtype), weights),
          "logps/chosen": _mean(chosen, weights),
          "logps/rejected": _mean(rejected, weights)}


# --------------------------------------------------------- the learner


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
      *scored_log_probs(config.model, params, data.train),
      *scored_log_probs(config.model, params, data.valid))
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
  apply_fn = model_lib.Transformer(config.model).apply

  def loss_fn(params):
    chosen, rejected = response_log_probs(apply_fn, params, pairs)
    metrics = pair_metrics(config, chosen, rejected, ref_w, ref_l, pairs,
                           weights)
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
  chosen, rejected = scored_log_probs(config.model, state.params, data.valid)
  metrics = pair_metrics(config, chosen, rejected, state.ref.valid_chosen,
                         state.ref.valid_rejected, data.valid)
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
           "ReferenceLogProbs", "assess", "evaluate", "init", "learning_rate",
           "optimizer", "pair_losses", "pair_metrics", "response_log_probs",
           "scored_log_probs", "update")
