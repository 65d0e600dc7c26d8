"""Argument checks shared by the primitives.

Checks raise ``ValueError`` naming the offending argument. Value checks only
look at concrete Python or NumPy numbers: a JAX tracer (a hyperparameter being
swept by ``jax.vmap`` or passed into ``jax.jit``) goes through unchecked, so
sweeps keep working.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
  """True when ``x`` holds a value known on the host (not a tracer)."""
  return not isinstance(x, jax.core.Tracer)


def check_scalar_in_range(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
  """Raises ``ValueError`` unless ``value`` is a scalar in the stated range.

  Tracers are only checked for rank, never for value.
  """
  if np.ndim(value) != 0:
    raise ValueError(f"`{name}` must be a scalar, got shape {np.shape(value)}.")
  if not is_concrete(value):
    return
  v = float(value)
  lo_ok = v >= low if low_inclusive else v > low
  hi_ok = v <= high if high_inclusive else v < high
  if math.isnan(v) or not (lo_ok and hi_ok):
    lo_b = "[" if low_inclusive else "("
    hi_b = "]" if high_inclusive else ")"
    raise ValueError(
        f"`{name}` must be in {lo_b}{low}, {high}{hi_b}, got {value!r}."
    )


def check_positive_int(name: str, value: Any, *, allow_zero: bool = False) -> None:
  """Raises ``ValueError`` unless ``value`` is a Python int > 0 (or >= 0)."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"`{name}` must be an int, got {type(value).__name__}.")
  if value < 0 or (value == 0 and not allow_zero):
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"`{name}` must be {bound}, got {value}.")


def check_same_shape(**arrays: Any) -> tuple[int, ...]:
  """Raises ``ValueError`` unless every named array has the same shape.

  Returns:
    The common shape.
  """
  shapes = {name: tuple(np.shape(a)) for name, a in arrays.items()}
  first_name, first = next(iter(shapes.items()))
  for name, shape in shapes.items():
    if shape != first:
      listing = ", ".join(f"{n}={s}" for n, s in shapes.items())
      raise ValueError(
          f"`{name}` has shape {shape} but `{first_name}` has shape {first}; "
          f"all must match ({listing})."
      )
  return first


def check_min_rank(name: str, x: Any, rank: int) -> None:
  """Raises ``ValueError`` unless ``x`` has at least ``rank`` dimensions."""
  if np.ndim(x) < rank:
    raise ValueError(
        f"`{name}` must have at least {rank} dimension(s), got shape "
        f"{np.shape(x)}."
    )


def check_floating(name: str, x: Any) -> None:
  """Raises ``ValueError`` unless ``x`` has a floating dtype."""
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"`{name}` must be floating point, got {dtype}.")
