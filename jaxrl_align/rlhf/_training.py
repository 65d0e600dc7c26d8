"""What the pretraining and reward-model optimisers share: the checks of
their settings and the AdamW update (host-side configs, pure update)."""

from __future__ import annotations

import math

import optax

from jaxrl_align import _checks
from jaxrl_align.agents import common


def check_optimizer_fields(config, owner: str) -> None:
  """``batch_size`` >= 1, ``learning_rate`` and ``max_grad_norm`` > 0,
  ``weight_decay`` >= 0; ``ValueError`` naming ``owner.field`` otherwise."""
  _checks.check_positive_int(f"{owner}.batch_size", config.batch_size)
  for name in ("learning_rate", "max_grad_norm"):
    _checks.check_scalar_in_range(f"{owner}.{name}", getattr(config, name), 0,
                                  math.inf, low_inclusive=False)
  _checks.check_scalar_in_range(f"{owner}.weight_decay", config.weight_decay,
                                0, math.inf)


def apply_gradients(tx: optax.GradientTransformation, grads, opt_state,
                    params):
  """``(params, opt_state)`` after one ``tx`` step."""
  with common.optax_numerics():
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
