"""What the pretraining and reward-model optimisers share: the checks of
their settings."""

from __future__ import annotations

import math

from jaxrl_align import _checks


def check_optimizer_fields(config, owner: str) -> None:
  """``batch_size`` >= 1, ``learning_rate`` and ``max_grad_norm`` finite and
  > 0, ``weight_decay`` finite and >= 0; ``ValueError`` naming
  ``owner.field`` otherwise (traced values pass unchecked)."""
  _checks.check_positive_int(f"{owner}.batch_size", config.batch_size)
  for name in ("learning_rate", "max_grad_norm", "weight_decay"):
    _checks.check_scalar_in_range(f"{owner}.{name}", getattr(config, name), 0,
                                  math.inf, high_inclusive=False,
                                  low_inclusive=name == "weight_decay")

