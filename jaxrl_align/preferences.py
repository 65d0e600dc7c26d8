"""Losses on preference pairs: the Bradley–Terry reward-model loss and DPO.

A data set of pairs ``(x, y_chosen, y_rejected)`` records that a person
preferred ``y_chosen``. Under the Bradley–Terry model ``P(chosen ≻
rejected) = σ(r(x, y_c) - r(x, y_r))``: a reward model fits ``r`` by
maximum likelihood (:func:`bradley_terry_loss`); DPO fits a policy whose
implicit reward ``β log π(y|x)/π_ref(y|x)`` does the same
(:func:`dpo_loss`). Inputs share one shape ``[*N]`` (one entry per pair);
an optional ``mask`` selects the pairs that count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_align import _checks
from jaxrl_align import losses

Array = jax.Array


def bradley_terry_loss(chosen_reward: Array, rejected_reward: Array, *,
                       mask: Array | None = None) -> Array:
  r"""Negative log-likelihood of the preferences under Bradley–Terry.

  ``-mean log σ(r_c - r_r)``.

  Args:
    chosen_reward: ``[*N]`` rewards of the preferred responses.
    rejected_reward: ``[*N]`` rewards of the others.
    mask: optional ``[*N]`` bool, the pairs that count.

  Returns:
    Scalar; ``ln 2`` when the rewards cannot tell the two apart.

  References:
    Bradley & Terry, 1952, "Rank analysis of incomplete block designs";
    Ziegler et al., 2019, https://arxiv.org/abs/1909.08593 (eq. 1);
    Ouyang et al., 2022, https://arxiv.org/abs/2203.02155 (eq. 1).

  Examples:
    >>> import jax.numpy as jnp
    >>> float(bradley_terry_loss(jnp.zeros(3), jnp.zeros(3)))  # ln 2
    0.6931471824645996
  """
  _checks.check_same_shape(chosen_reward=chosen_reward,
                           rejected_reward=rejected_reward)
  _checks.check_floating("chosen_reward", chosen_reward)
  _checks.check_floating("rejected_reward", rejected_reward)
  _checks.check_non_empty("chosen_reward", chosen_reward)
  return losses.masked_mean(-jax.nn.log_sigmoid(chosen_reward
                                                - rejected_reward), mask)


def dpo_loss(log_prob_chosen: Array, log_prob_rejected: Array,
             ref_log_prob_chosen: Array, ref_log_prob_rejected: Array, *,
             beta: float | Array, label_smoothing: float | Array = 0.0,
             mask: Array | None = None) -> Array:
  r"""Direct Preference Optimization's loss (sigmoid form).

  With ``h = (log π(y_c) - log π_ref(y_c)) - (log π(y_r) - log π_ref(y_r))``
  (log-probabilities of whole responses, summed over their tokens)::

      loss = -mean[(1 - ε) log σ(β h) + ε log σ(-β h)]

  ``ε = label_smoothing`` is the probability that a label is flipped
  (conservative DPO); ``ε = 0`` is the original loss. The gradient raises
  ``log π(y_c)`` and lowers ``log π(y_r)``, weighted by how wrongly the
  implicit reward ``β log π/π_ref`` orders the pair.

  Args:
    log_prob_chosen: ``[*N]`` ``log π(y_c | x)`` under the policy trained.
    log_prob_rejected: ``[*N]`` ``log π(y_r | x)``.
    ref_log_prob_chosen: ``[*N]`` the same under the frozen reference.
    ref_log_prob_rejected: ``[*N]``.
    beta: ``β > 0``, the inverse strength of the implicit KL regulariser.
    label_smoothing: ``ε`` in ``[0, 0.5)``.
    mask: optional ``[*N]`` bool, the pairs that count.

  Returns:
    Scalar; ``ln 2`` when the policy equals the reference.

  References:
    Rafailov et al., 2023, "Direct Preference Optimization",
    https://arxiv.org/abs/2305.18290 (eq. 7); TRL's
    ``trl/trainer/dpo_trainer.py`` ``dpo_loss`` (``loss_type="sigmoid"``,
    ``label_smoothing``).
  """
  _checks.check_same_shape(log_prob_chosen=log_prob_chosen,
                           log_prob_rejected=log_prob_rejected,
                           ref_log_prob_chosen=ref_log_prob_chosen,
                           ref_log_prob_rejected=ref_log_prob_rejected)
  for name, x in (("log_prob_chosen", log_prob_chosen),
                  ("log_prob_rejected", log_prob_rejected),
                  ("ref_log_prob_chosen", ref_log_prob_chosen),
                  ("ref_log_prob_rejected", ref_log_prob_rejected)):
    _checks.check_floating(name, x)
  _checks.check_non_empty("log_prob_chosen", log_prob_chosen)
  _checks.check_scalar_in_range("beta", beta, 0.0, float("inf"),
                                low_inclusive=False)
  _checks.check_scalar_in_range("label_smoothing", label_smoothing, 0.0, 0.5,
                                high_inclusive=False)
  h = ((log_prob_chosen - ref_log_prob_chosen)
       - (log_prob_rejected - ref_log_prob_rejected))
  dtype = jnp.result_type(h)
  beta = jnp.asarray(beta, dtype)
  eps = jnp.asarray(label_smoothing, dtype)
  per_pair = -((1 - eps) * jax.nn.log_sigmoid(beta * h)
               + eps * jax.nn.log_sigmoid(-beta * h))
  return losses.masked_mean(per_pair, mask)
