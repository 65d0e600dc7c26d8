"""Token sequences meet the time-major primitives: the seam, and the
KL-penalised per-token reward of RLHF.

The convention. Language-model code (:mod:`jaxrl_align.rlhf`) keeps token
arrays batch-major, ``[B, T, ...]``, as the model computes them. Every
primitive is time-major, ``[T, *B]``. The two meet in one place: an
``[B, T]`` array enters a primitive through :func:`time_major` and its
result comes back through :func:`batch_major`; nothing else transposes. A
response of ``T`` tokens is then an episode of ``T`` steps (token ``t`` is
the action at step ``t``), and a ``[T, B]`` response mask marks the steps
that exist: after the stop token come padding steps, which carry no reward
and no loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_align import _checks
from jaxrl_align import losses

Array = jax.Array

KL_ESTIMATORS = ("k1", "k2", "k3")


def time_major(x: Array) -> Array:
  """``[B, T, ...] -> [T, B, ...]``: batch-major token arrays into a primitive.

  Args:
    x: ``[B, T, ...]``.

  Returns:
    ``[T, B, ...]``.
  """
  _checks.check_min_rank("x", x, 2)
  return jnp.swapaxes(x, 0, 1)


def batch_major(x: Array) -> Array:
  """``[T, B, ...] -> [B, T, ...]``, the inverse of :func:`time_major`.

  Args:
    x: ``[T, B, ...]``.

  Returns:
    ``[B, T, ...]``.
  """
  _checks.check_min_rank("x", x, 2)
  return jnp.swapaxes(x, 0, 1)


def last_step(mask: Array) -> Array:
  """``[T, *B]`` bool, true at the last true step of each column of ``mask``
  (nowhere in a column with none).

  Args:
    mask: ``[T, *B]`` bool (or integer 0/1), the steps that exist;
      ``T ≥ 1``.

  Returns:
    ``[T, *B]`` bool.
  """
  _checks.check_min_rank("mask", mask, 1)
  _checks.check_non_empty("mask", mask, axis=0)
  _checks.check_flags("mask", mask)
  mask = jnp.asarray(mask, bool)
  t = mask.shape[0]
  index = t - 1 - jnp.argmax(mask[::-1], axis=0)
  steps = jnp.arange(t).reshape((t,) + (1,) * (mask.ndim - 1))
  return (steps == index[None]) & jnp.any(mask, axis=0)[None]


def kl_penalized_rewards(score: Array, log_prob: Array, ref_log_prob: Array,
                         mask: Array, *, kl_coef: float | Array,
                         estimator: str = "k1") -> tuple[Array, Array]:
  r"""Per-token rewards of KL-regularised RLHF, and the per-token KL.

  For a response sampled from the policy ``π`` (log-probabilities
  ``log_prob``) and a frozen reference ``π_ref``::

      kl_t     = estimate of KL(π || π_ref) at token t (k1, k2 or k3)
      reward_t = -kl_coef · kl_t  +  score · [t is the last response token]

  zero at padding steps. Summed over a response, the reward is the
  regularised objective ``score - kl_coef · KL`` whose expectation RLHF
  maximises (Ziegler et al. 2019, eq. 2). The estimators, with
  ``log r = log π_ref - log π`` on tokens drawn from ``π``: ``k1 = -log r``
  (``log π - log π_ref``, unbiased), ``k2 = ½ (log r)²`` (biased),
  ``k3 = (r - 1) - log r`` (unbiased, non-negative; Schulman 2020).

  Only ``k1`` makes the summed reward's score-function gradient an
  unbiased gradient of the regularised objective: ``E_π[k1 ∇log π] =
  ∇KL(π || π_ref)`` (the remaining term, ``E_π[∇log π]``, is zero). With
  ``k3``, ``E_π[k3 ∇log π] = ∇KL(π || π_ref) - ∇KL(π_ref || π)`` (because
  ``E_π[r ∇log π] = E_π_ref[∇log π]``), which vanishes near the reference;
  with ``k2`` even the value is biased. ``k3`` is the usual choice as a
  loss term differentiated directly (GRPO); in the reward, use ``k1``.

  Args:
    score: ``[*B]``, the reward model's score of each whole response.
    log_prob: ``[T, *B]`` log-probabilities of the sampled tokens under the
      sampling policy (the temperature applied as when sampling).
    ref_log_prob: ``[T, *B]`` under the reference (same temperature).
    mask: ``[T, *B]`` bool (or integer 0/1), response tokens (false at
      padding); ``T ≥ 1``.
    kl_coef: ``β ≥ 0``.
    estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (static).

  Returns:
    ``(reward [T, *B], kl [T, *B])``, both zero where ``mask`` is false.

  References:
    Ziegler et al., 2019, "Fine-Tuning Language Models from Human
    Preferences", https://arxiv.org/abs/1909.08593; Schulman, 2020,
    "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html;
    TRL's ``trl/trainer/ppo_trainer.py`` (``kl = logprobs - ref_logprobs``,
    ``non_score_reward = -kl_coef * kl``, the score added at the last
    response token).
  """
  if estimator not in KL_ESTIMATORS:
    raise ValueError(f"`estimator` must be one of {', '.join(KL_ESTIMATORS)}, "
                     f"got {estimator!r}.")
  _checks.check_same_shape(log_prob=log_prob, ref_log_prob=ref_log_prob,
                           mask=mask)
  _checks.check_min_rank("log_prob", log_prob, 1)
  if jnp.shape(score) != jnp.shape(log_prob)[1:]:
    raise ValueError(f"`score` must have shape {jnp.shape(log_prob)[1:]} "
                     f"(the batch of `log_prob`), got {jnp.shape(score)}.")
  _checks.check_non_empty("log_prob", log_prob, axis=0)
  _checks.check_floating("log_prob", log_prob)
  _checks.check_floating("ref_log_prob", ref_log_prob)
  _checks.check_flags("mask", mask)
  _checks.check_scalar_in_range("kl_coef", kl_coef, 0.0, float("inf"))
  fn = {"k1": losses.kl_k1, "k2": losses.kl_k2, "k3": losses.kl_k3}[estimator]
  dtype = jnp.result_type(log_prob)
  live = jnp.asarray(mask, bool)
  kl = jnp.where(live, fn(ref_log_prob, log_prob), 0.0).astype(dtype)
  end = last_step(live)
  reward = -jnp.asarray(kl_coef, dtype) * kl + jnp.where(
      end, jnp.asarray(score, dtype)[None], 0.0).astype(dtype)
  return reward, kl
