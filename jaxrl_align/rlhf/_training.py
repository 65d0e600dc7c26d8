"""What the pretraining and reward-model optimisers share: the checks of
their settings."""

from __future__ import annotations

import math

from jaxrl_align import _checks


def check_optimizer_fields(config, owner: str) -> None:
  """``batch_size`` >= 1, ``learning_rate`` and ``max_grad_norm`` > 0,
  ``weight_decay`` >= 0; ``ValueError`` naming ``owner.field`` otherwise."""
  _checks.check_positive_int(f"{owner}.batch_size", config.batch_size)
  for name in ("learning_rate", "max_grad_norm"):
    _checks.check_scalar_in_range(f"{owner}.{name}", getattr(config, name), 0,
                                  math.inf, low_inclusive=False)
  _checks.check_scalar_in_range(f"{owner}.weight_decay", config.weight_decay,
                                0, math.inf)

