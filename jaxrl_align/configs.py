"""Learner configs: frozen pytree dataclasses, and what the host reads of them.

Every learner's config is a ``flax.struct`` dataclass. Fields made with
:func:`static` fix shapes or program structure: they are not traced, and
``jit`` compiles one program per value. All other fields are pytree leaves
(hyperparameters), so ``jax.vmap`` over a batch of configs sweeps them and a
traced value passes every check unchecked.

The helpers here are pure: presets and range checks for ``__post_init__``,
the field metadata the command line builds its options from (the
``Attributes:`` section of the class docstring, and ``choices``), and plain
JSON round trips for run directories.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any, Iterable

import numpy as np
from flax import struct

from jaxrl_align import _checks


def static(default: Any = None, *, choices: Iterable[Any] | None = None,
           derived: bool = False):
  """A field that fixes shapes or program structure (never traced).

  Args:
    default: its default (``None``: filled in ``__post_init__``).
    choices: the values it may take, if a closed set (checked by
      :func:`check_choices`; the command line offers them).
    derived: set by the run from its inputs (the data set's size, the
      pretrained model's shape), not by the user: no command-line option.

  Returns:
    A dataclass field with ``pytree_node=False``.
  """
  metadata = {}
  if choices is not None:
    metadata["choices"] = tuple(choices)
  if derived:
    metadata["derived"] = True
  return struct.field(pytree_node=False, default=default, metadata=metadata)


def is_derived(field: dataclasses.Field) -> bool:
  return bool(field.metadata.get("derived"))


def is_static(field: dataclasses.Field) -> bool:
  return not field.metadata.get("pytree_node", True)


def static_fields(config) -> list[str]:
  """Names of the static fields of a config (instance or class)."""
  return [f.name for f in dataclasses.fields(config) if is_static(f)]


def fill_defaults(config, *sources: dict[str, Any]) -> None:
  """Replaces each ``None`` field by its value in the first source that has
  it (e.g. the task's preset, then the algorithm's defaults)."""
  for field in dataclasses.fields(config):
    if getattr(config, field.name) is None:
      for source in sources:
        if field.name in source:
          object.__setattr__(config, field.name, source[field.name])
          break


def is_python_number(x) -> bool:
  return (isinstance(x, (int, float, np.number)) and not isinstance(x, bool)
          ) or (isinstance(x, np.ndarray) and x.ndim == 0)


def check_range(config, name: str, low: float, high: float, *,
                low_inclusive: bool = True, high_inclusive: bool = True):
  """Range check of a field when it holds a Python number (a traced or
  batched sweep value, an array of numbers, passes unchecked). Anything
  else (None, a string, a bool, a list) is refused: it would pass here and
  fail, or be misread, inside JAX."""
  value = getattr(config, name)
  if is_python_number(value):
    _checks.check_scalar_in_range(name, value, low, high,
                                  low_inclusive=low_inclusive,
                                  high_inclusive=high_inclusive)
  else:
    _checks.check_real_number(name, value)


def check_types(config, owner: str) -> None:
  """Each static field annotated ``bool``, ``int`` or ``str`` holds one
  (``ValueError`` naming ``owner.field``; a derived field may still be
  None, until the run fills it in). A string where a bool is meant would
  read as true; ``True`` where an int is meant as 1."""
  hints = typing.get_type_hints(type(config))
  for field in dataclasses.fields(config):
    want = hints.get(field.name)
    value = getattr(config, field.name)
    if not is_static(field) or want not in (bool, int, str) or (
        value is None and is_derived(field)):
      continue
    if want is int:
      ok = isinstance(value, (int, np.integer)) and not isinstance(
          value, (bool, np.bool_))
    elif want is bool:
      ok = isinstance(value, (bool, np.bool_))
    else:
      ok = isinstance(value, str)
    if not ok:
      raise ValueError(f"`{owner}.{field.name}` must be {want.__name__}, got "
                       f"{type(value).__name__} ({value!r}).")


def check_finite_positive(config, *names: str) -> None:
  """Each field must be a finite number > 0 (when a Python number)."""
  for name in names:
    check_range(config, name, 0.0, math.inf, low_inclusive=False,
                high_inclusive=False)


def check_finite_nonnegative(config, *names: str) -> None:
  """Each field must be a finite number >= 0 (when a Python number)."""
  for name in names:
    check_range(config, name, 0.0, math.inf, high_inclusive=False)


def check_choices(config) -> None:
  """Each field declared with ``choices`` holds one of them."""
  for field in dataclasses.fields(config):
    choices = field.metadata.get("choices")
    if choices is not None and getattr(config, field.name) not in choices:
      raise ValueError(
          f"`{field.name}` must be one of "
          f"{', '.join(repr(c) for c in choices)}, got "
          f"{getattr(config, field.name)!r}.")


def field_docs(cls) -> dict[str, str]:
  """``{field: description}`` from the ``Attributes:`` sections of the
  docstrings of the class and its bases."""
  docs = {}
  for klass in reversed(cls.__mro__):
    if "Attributes:" not in (klass.__doc__ or ""):
      continue
    name = None
    for line in klass.__doc__.split("Attributes:", 1)[1].splitlines():
      m = re.match(r"\s{4}(\w+): (.*)", line)
      if m:
        name = m.group(1)
        docs[name] = m.group(2).strip()
      elif name and line.strip():
        docs[name] += " " + line.strip()
  return docs


def _plain(value):
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return to_dict(value)
  if isinstance(value, tuple):
    return [_plain(v) for v in value]
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if math.isfinite(value) else str(value)
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.bool_):
    return bool(value)
  return value


def to_dict(config) -> dict[str, Any]:
  """Fields as plain JSON values: tuples as lists, non-finite floats as
  strings, nested dataclasses as dicts."""
  return {f.name: _plain(getattr(config, f.name))
          for f in dataclasses.fields(config)}


def from_dict(cls, fields: dict[str, Any]):
  """Inverse of :func:`to_dict` (builds, so validates, the config); nested
  dicts become the dataclass their field is annotated with."""
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for name, value in fields.items():
    hint = hints.get(name)
    if isinstance(value, dict) and dataclasses.is_dataclass(hint):
      value = from_dict(hint, value)
    elif isinstance(value, list):
      value = tuple(value)
    elif value in ("inf", "-inf", "nan"):
      value = float(value)
    kwargs[name] = value
  return cls(**kwargs)


def diff(old, new) -> dict[str, tuple[Any, Any]]:
  """Fields whose values differ: ``{name: (old, new)}``."""
  a, b = to_dict(old), to_dict(new)
  return {k: (a[k], b[k]) for k in a if a[k] != b[k]}
