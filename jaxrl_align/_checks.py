"""Argument checks shared by the primitives.

Checks raise ``ValueError`` naming the offending argument. Shapes and dtypes
are known while tracing, so those checks run under ``jit`` and ``vmap`` too,
once, when the program is traced (nothing is added to the compiled
program). Value checks only look at concrete values (Python or NumPy
numbers, concrete arrays): a JAX tracer (a hyperparameter being swept by
``jax.vmap``, an argument of a jitted function) goes through unchecked, so
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


def concrete_array(x: Any) -> np.ndarray | None:
  """``x`` as a NumPy array when its value is known on this host; None for
  a tracer, or a ``jax.Array`` with shards on other hosts."""
  if not is_concrete(x):
    return None
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return None
  return np.asarray(x)


def _dtype(x: Any) -> np.dtype | None:
  """The dtype of an array or number; None for anything else (a string,
  None, a list of mixed things)."""
  if isinstance(x, (str, bytes)) or x is None:
    return None
  dtype = getattr(x, "dtype", None)
  if dtype is not None:
    return np.dtype(dtype) if not isinstance(dtype, np.dtype) else dtype
  if isinstance(x, (bool, int, float, complex)):
    return np.result_type(x)
  return None


def check_real_number(name: str, value: Any) -> None:
  """Raises ``ValueError`` unless ``value`` is a real number: a Python or
  NumPy int or float, or an array of an integer or floating dtype (a
  tracer included); not a bool, a string, None or a complex number."""
  dtype = _dtype(value)
  if dtype is None or not (np.issubdtype(dtype, np.integer)
                           or np.issubdtype(dtype, np.floating)):
    what = type(value).__name__ if dtype is None else str(dtype)
    raise ValueError(f"`{name}` must be a real number, got {what} "
                     f"({value!r}).")


def check_scalar_in_range(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
  """Raises ``ValueError`` unless ``value`` is a real scalar in the stated
  range.

  Tracers are only checked for rank and dtype, never for value.
  """
  check_real_number(name, value)
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


def check_non_empty(name: str, x: Any, axis: int | None = None) -> None:
  """Raises ``ValueError`` when ``x`` has no entries (``axis=None``) or its
  ``axis`` has length 0 (a rollout of ``T = 0`` steps)."""
  shape = np.shape(x)
  if (np.prod(shape) == 0) if axis is None else (shape[axis] == 0):
    where = "entries" if axis is None else f"entries on axis {axis}"
    raise ValueError(f"`{name}` has no {where} (shape {shape}).")


def _listed(x: Any) -> Any:
  """A Python list or tuple of values as a NumPy array (an array's
  dtype); anything else as it is."""
  return np.asarray(x) if isinstance(x, (list, tuple)) else x


def check_flags(name: str, x: Any) -> None:
  """Raises ``ValueError`` unless ``x`` is bool, or integer with (when
  concrete) every value 0 or 1: a flag or mask is never a weight."""
  x = _listed(x)
  dtype = _dtype(x)
  if dtype is not None and dtype == np.bool_:
    return
  if dtype is None or not np.issubdtype(dtype, np.integer):
    raise ValueError(f"`{name}` must be bool (or integer 0/1), got "
                     f"{dtype if dtype is not None else type(x).__name__}.")
  v = concrete_array(x)
  if v is not None and np.any((v != 0) & (v != 1)):
    bad = v[(v != 0) & (v != 1)].ravel()[0]
    raise ValueError(f"`{name}` must hold 0 or 1 only, got {bad}.")


def check_index(name: str, x: Any, size: int) -> None:
  """Raises ``ValueError`` unless ``x`` has an integer dtype and (when
  concrete) every value is in ``[0, size)``: an index that would wrap
  (``-1`` to the last) or run past the end."""
  x = _listed(x)
  dtype = _dtype(x)
  if dtype is None or not np.issubdtype(dtype, np.integer):
    raise ValueError(f"`{name}` must be integer, got "
                     f"{dtype if dtype is not None else type(x).__name__}.")
  v = concrete_array(x)
  if v is not None and v.size and (v.min() < 0 or v.max() >= size):
    bad = v.min() if v.min() < 0 else v.max()
    raise ValueError(f"`{name}` must be in [0, {size}), got {bad}.")
