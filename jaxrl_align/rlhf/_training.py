"""What the pretraining, reward-model and preference learners share: the
checks of their optimiser's settings, epochs over a set of pairs, and
keeping the best parameters."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

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



class PairEpochs:
  """Epochs over ``train_pairs`` pairs in batches of ``batch_size`` (a
  mixin of the configs of learners that step through preference pairs)."""

  @property
  def steps_per_epoch(self) -> int:
    return max(1, self.train_pairs // self.batch_size)

  @property
  def num_updates(self) -> int:
    if self.train_pairs is None:
      raise ValueError(f"{type(self).__name__}.train_pairs is not set: it "
                       f"comes from the data set.")
    return self.epochs * self.steps_per_epoch


def keep_best(state, better, **best):
  """``state`` with ``best_params`` and ``best_step`` set to its current
  ``params`` and ``step`` where ``better`` (a scalar bool), and each field
  named in ``best`` (``best_valid_loss=loss``) set to its value there; the
  state as it was otherwise. ``state`` is a NamedTuple with those fields."""
  return state._replace(
      best_params=jax.lax.cond(better, lambda: state.params,
                               lambda: state.best_params),
      best_step=jnp.where(better, state.step, state.best_step),
      **{name: jnp.where(better, value, getattr(state, name))
         for name, value in best.items()})
