"""Config fields as command-line options: one generator for every command.

Every field of a dataclass becomes ``--field-name VALUE``: its type from its
default (bool, int, tuple of ints, float, or a string with ``choices`` in
the field's metadata), its help from the ``Attributes:`` section of the
class docstring, ``*static*`` fields marked, derived fields left out (see
:func:`jaxrl_align.configs.static`). Options default to "not given"
(``argparse.SUPPRESS``), so the config's own defaults and presets apply.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
from typing import Any, Iterable

from jaxrl_align import configs
from jaxrl_align.host.errors import RunError


def flag(name: str) -> str:
  return "--" + name.replace("_", "-")


def _str2bool(text: str) -> bool:
  value = text.strip().lower()
  if value in ("1", "true", "yes", "on"):
    return True
  if value in ("0", "false", "no", "off"):
    return False
  raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _float(text: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")


def _kwargs(field: dataclasses.Field, example: Any) -> dict[str, Any]:
  choices = field.metadata.get("choices")
  if choices is not None:
    return dict(choices=list(choices))
  if isinstance(example, bool):
    return dict(type=_str2bool, metavar="BOOL")
  if isinstance(example, int):
    return dict(type=int, metavar="INT")
  if isinstance(example, tuple):
    return dict(type=int, nargs="+", metavar="INT")
  if isinstance(example, str):
    return dict(type=str, metavar="TEXT")
  return dict(type=_float, metavar="X")


def option_fields(cls, names: Iterable[str] | None = None
                  ) -> list[dataclasses.Field]:
  """The fields of ``cls`` (a dataclass or an instance) that are options:
  those in ``names`` (all when None) that are neither derived nor nested
  configs."""
  names = None if names is None else set(names)
  return [f for f in dataclasses.fields(cls)
          if (names is None or f.name in names) and not configs.is_derived(f)
          and not dataclasses.is_dataclass(f.default)]


def _shown(value) -> str:
  return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def add_options(group, cls, names: Iterable[str] | None = None, *,
                defaults: dict[str, dict[str, Any]] | None = None,
                default_note: str = "") -> list[str]:
  """Adds an option per field of ``cls`` to ``group``.

  Args:
    group: an argparse parser or argument group.
    cls: a dataclass (a config or settings class), or an instance of one,
      whose values are then the defaults shown.
    names: the fields to offer (default: every option field).
    defaults: ``{owner: {field: value}}`` shown as the default of fields
      declared ``None`` (one owner: its value; several: each named).
    default_note: text before the shown default (``"preset, else "``).

  Returns:
    The fields added.
  """
  instance = None if isinstance(cls, type) else cls
  cls = type(cls) if instance is not None else cls
  docs = configs.field_docs(cls)
  added = []
  for f in option_fields(cls, names):
    if instance is not None:
      values = {"": getattr(instance, f.name)}
    elif f.default is None:
      values = {owner: d.get(f.name) for owner, d in (defaults or {}).items()
                if f.name in d}
    else:
      values = {"": f.default}
    shown = {owner: _shown(v) for owner, v in values.items()}
    if len(set(shown.values())) <= 1:
      default = next(iter(shown.values()), "none")
    else:
      default = ", ".join(f"{owner.upper()} {v}" for owner, v in shown.items())
    help_text = (docs.get(f.name, "") + f" [default: {default_note}{default}]"
                 ).replace("%", "%%")
    example = next(iter(values.values()), None)
    group.add_argument(flag(f.name), dest=f.name, default=argparse.SUPPRESS,
                       help=help_text, **_kwargs(f, example))
    added.append(f.name)
  return added


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
  """The options among ``names`` that the user gave (lists as tuples)."""
  return {k: tuple(v) if isinstance(v, list) else v
          for k, v in vars(args).items() if k in set(names)}


def unknown_message(unknown: list[str], valid: Iterable[str]) -> str:
  """One line naming each unknown option, with the closest valid one."""
  valid = sorted(set(valid))
  messages = []
  for item in unknown:
    if item.startswith("--"):
      name = item.split("=", 1)[0]
      close = difflib.get_close_matches(name, valid, n=1)
      hint = f" (did you mean {close[0]}?)" if close else ""
      messages.append(f"unknown option {name}{hint}")
    else:
      messages.append(f"unexpected argument {item!r}")
  return "; ".join(messages) + ". Valid options: " + ", ".join(valid) + "."


def require_extra(modules: tuple[str, ...], extra: str, what: str) -> None:
  """A RunError naming the extra to install when any of ``modules`` is
  missing (``what``: the command or option that needs them)."""
  missing = [m for m in modules if importlib.util.find_spec(m) is None]
  if missing:
    raise RunError(f"{what} needs the {extra} extra: pip install "
                   f"'jaxrl_align[{extra}]' (missing: "
                   f"{', '.join(missing)}).")
