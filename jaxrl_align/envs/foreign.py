"""Running code we do not own (gymnax, MJX) under the numerics it assumes."""

from __future__ import annotations

import contextlib

import jax


@contextlib.contextmanager
def foreign_numerics():
  """Standard dtype and rank promotion for code we do not own (gymnax, MJX).

  Our tests run with strict promotion; gymnax and MJX rely on the standard
  rules (``1.0 - bool``, ``[N] + scalar-shaped`` arrays), which is correct
  there.
  """
  with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
    yield
