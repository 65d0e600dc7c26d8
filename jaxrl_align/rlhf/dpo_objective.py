"""The DPO, IPO and conservative DPO objective on token-id preference
pairs: per-pair losses, the responses' summed log-probabilities, and TRL's
metrics (what :mod:`jaxrl_align.rlhf.dpo`'s learner minimises and reports).

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
1.16.0's at ``ε = 0``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_align import _checks
from jaxrl_align.rlhf import generation
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import pairs as pairs_lib

Array = jax.Array

LOSS_TYPES = ("sigmoid", "ipo")
SCORE_BATCH = 256  # pairs per forward pass when scoring a whole set


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


def pair_metrics(chosen: Array, rejected: Array, ref_chosen: Array,
                 ref_rejected: Array, pairs: pairs_lib.PreferencePairs,
                 weights: Array | None = None, *, beta: float | Array,
                 loss_type: str, label_smoothing: float | Array = 0.0
                 ) -> dict[str, Array]:
  """The (weighted) mean loss and TRL's metrics of ``N`` pairs.

  Args:
    chosen, rejected: ``[N]`` the policy's summed log-probabilities of
      ``y_w`` and ``y_l`` (:func:`response_log_probs`).
    ref_chosen, ref_rejected: ``[N]`` the reference's.
    pairs: the pairs (their response masks give the lengths IPO reads).
    weights: optional ``[N]`` weight of each pair (``None``: all 1).
    beta, loss_type, label_smoothing: as in :func:`pair_losses`.

  Returns:
    ``loss``; ``rewards/chosen`` and ``rewards/rejected``, the implicit
    rewards ``β h``; ``rewards/margins``; ``rewards/accuracies``, the
    fraction with ``β h_w > β h_l``; ``logps/chosen`` and
    ``logps/rejected``, the policy's log-probabilities: each a (weighted)
    mean over the pairs.
  """
  h_w, h_l = chosen - ref_chosen, rejected - ref_rejected
  lengths = (jnp.sum(pairs.chosen_mask, axis=1),
             jnp.sum(pairs.rejected_mask, axis=1))
  losses = pair_losses(h_w, h_l, *lengths, beta=beta, loss_type=loss_type,
                       label_smoothing=label_smoothing)
  beta = jnp.asarray(beta, h_w.dtype)
  reward_w, reward_l = beta * h_w, beta * h_l
  return {"loss": _mean(losses, weights),
          "rewards/chosen": _mean(reward_w, weights),
          "rewards/rejected": _mean(reward_l, weights),
          "rewards/margins": _mean(reward_w - reward_l, weights),
          "rewards/accuracies": _mean((reward_w > reward_l).astype(
              h_w.dtype), weights),
          "logps/chosen": _mean(chosen, weights),
          "logps/rejected": _mean(rejected, weights)}


__all__ = ("LOSS_TYPES", "SCORE_BATCH", "pair_losses", "pair_metrics",
           "response_log_probs", "scored_log_probs")
