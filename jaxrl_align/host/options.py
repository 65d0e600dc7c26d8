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
import re
from typing import Any, Iterable

from jaxrl_align import configs
from jaxrl_align.host import errors
from jaxrl_align.host.errors import RunError

# The largest integer an option takes: JAX counts (steps, seeds, tokens) in
# 32-bit integers, and a larger one fails deep inside it (an OverflowError
# from a seed, a loop over a count's divisors that does not end).
MAX_INT = errors.MAX_INT


def flag(name: str) -> str:
  return "--" + name.replace("_", "-")


def integer(low: int | None = None):
  """An argparse ``type`` for an integer; its range, ``[low, MAX_INT]``
  (``low`` None: ``[-MAX_INT - 1, MAX_INT]``), is checked once the command
  line is parsed (:func:`out_of_range`), so the refusal is the command's
  own one line and exit code."""

  def parse(text: str) -> int:
    try:
      return int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(
          f"expected an integer, got {text!r}") from None

  parse.low = low
  return parse


def text(what: str):
  """An argparse ``type`` for a string that must not be empty (checked
  once the command line is parsed, :func:`out_of_range`); ``what`` it
  names, for the refusal (``"a run directory"``)."""

  def parse(value: str) -> str:
    return value

  parse.what = what
  return parse


def out_of_range(actions, args: argparse.Namespace) -> str | None:
  """The first value the user gave outside its option's range (an
  :func:`integer` or :func:`text` type), as a refusal naming the option;
  None when every one is in range."""
  for action in actions:
    values = getattr(args, action.dest, None)
    if values is None or values is argparse.SUPPRESS:
      continue
    name = (action.option_strings[0] if action.option_strings
            else action.metavar or action.dest)
    for value in values if isinstance(values, list) else [values]:
      message = _refusal(action.type, value)
      if message:
        return f"{name} {message}."
  return None


def _refusal(kind, value) -> str | None:
  if hasattr(kind, "what") and not value.strip():
    return f"must not be empty: give {kind.what}"
  if not hasattr(kind, "low"):
    return None
  if kind.low is not None and value < kind.low:
    return f"must be >= {kind.low}, got {value}"
  if value > MAX_INT:
    return (f"must be at most {MAX_INT} (JAX counts in 32-bit integers), "
            f"got {value}")
  if value < -MAX_INT - 1:
    return (f"must be at least {-MAX_INT - 1} (JAX counts in 32-bit "
            f"integers), got {value}")
  return None


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
    return dict(type=integer(), metavar="INT")
  if isinstance(example, tuple):
    return dict(type=integer(), nargs="+", metavar="INT")
  if isinstance(example, str):
    return dict(type=text("a value"), metavar="TEXT")
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


# A field's name in a message: backquoted (`name`, `Owner.name`,
# `Owner.model.name`), class-qualified (TransformerConfig.width) or a bare
# snake_case word (not part of a path or of a longer name).
_NAMED = re.compile(r"`(?:[A-Za-z]\w*\.)*(\w+)`"
                    r"|\b[A-Z][A-Za-z]*(?:\.[a-z]\w*)*\.([a-z]\w*)\b"
                    r"|(?<![\w/.'-])([a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?![\w/'-])")


def as_flags(message: str, valid: Iterable[str]) -> str:
  """``message`` with each field it names that is one of the ``valid``
  options (``--name``) written as that option: a refusal of a value the
  user typed names what they typed, not the argument it became."""
  valid = set(valid)

  def sub(m: re.Match) -> str:
    name = flag(next(g for g in m.groups() if g))
    return name if name in valid else m.group(0)

  return _NAMED.sub(sub, message)


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
