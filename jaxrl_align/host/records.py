"""A run's record (``config.json``) read back into the objects it was
written from: the learner's config, the runner's settings, a stage's run
settings. A record edited by hand into another shape (a section missing or
a list, a field of the wrong type, a field no version wrote) is refused,
naming the file and the field, before anything is built from it."""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any

from jaxrl_align import configs
from jaxrl_align.host import errors
from jaxrl_align.host import settings as settings_lib
from jaxrl_align.host.errors import RunFileError

# Runner settings every record holds (later ones, `devices` and `shard`,
# take their defaults in a record made before they existed).
RUNNER_FIELDS = ("seeds", "seed", "chunk", "checkpoint_every", "keep",
                 "eval_episodes")


def path_of(run_dir: str) -> str:
  return os.path.join(run_dir, "config.json")


def _check_fields(path: str, key: str, cls, fields: Any) -> None:
  """Refuses ``fields`` unless a JSON object of ``cls``'s fields, nested
  configs (dataclass-annotated fields) checked the same way."""
  if not isinstance(fields, dict):
    raise RunFileError(f"{path}: `{key}` must be a JSON object, got "
                       f"{errors.describe(fields)}.")
  hints = typing.get_type_hints(cls)
  known = {f.name for f in dataclasses.fields(cls)}
  for name, value in fields.items():
    if name not in known:
      raise RunFileError(f"{path}: `{key}.{name}` is not a field of "
                         f"{cls.__name__}; the file was edited.")
    if dataclasses.is_dataclass(hints.get(name)) and value is not None:
      _check_fields(path, f"{key}.{name}", hints[name], value)


def section(run: dict[str, Any], run_dir: str, key: str, cls,
            required: tuple[str, ...] = ()):
  """``cls`` built from the record's section ``key`` (its checks run).

  Args:
    run: the record (:func:`jaxrl_align.host.files.read_run`).
    run_dir: the run directory (for messages).
    key: the section (``"config.model"``: a section of a section).
    cls: the dataclass it was written from (``configs.to_dict``).
    required: fields the section must hold (the others may be missing:
      fields added later take their defaults).

  Raises:
    RunFileError: naming the file and the field.
  """
  path = path_of(run_dir)
  *outer, last = key.split(".")
  for part in outer:
    if not isinstance(run.get(part), dict):
      raise RunFileError(f"{path}: `{part}` must be a JSON object, got "
                         f"{errors.describe(run.get(part))}.")
    run = run[part]
  if last not in run:
    raise RunFileError(f"{path}: `{key}` is missing; the file was edited or "
                       f"cut short.")
  fields = run[last]
  _check_fields(path, key, cls, fields)
  for name in required:
    if name not in fields:
      raise RunFileError(f"{path}: `{key}.{name}` is missing; the file was "
                         f"edited.")
  try:
    return configs.from_dict(cls, fields)
  except Exception as e:  # noqa: BLE001 - a config's checks raise several
    message = " ".join(str(e).split()) or type(e).__name__
    raise RunFileError(f"{path}: `{key}`: {message}") from None


def learner_config(run: dict[str, Any], run_dir: str, cls):
  """The learner's config of a record."""
  return section(run, run_dir, "config", cls)


def runner_settings(run: dict[str, Any],
                    run_dir: str) -> settings_lib.RunnerSettings:
  """The runner's settings of a record, as the run resolved them."""
  settings = section(run, run_dir, "runner", settings_lib.RunnerSettings,
                     RUNNER_FIELDS)
  try:
    settings_lib.check_resolved(settings)
  except ValueError as e:
    raise RunFileError(f"{path_of(run_dir)}: `runner`: {e}") from None
  return settings


def text(run: dict[str, Any], run_dir: str, key: str) -> str:
  """A string the record holds at ``key`` (an input's path)."""
  value = run.get(key)
  if not isinstance(value, str):
    got = "missing" if key not in run else errors.describe(value)
    raise RunFileError(f"{path_of(run_dir)}: `{key}` must be a string, got "
                       f"{got}.")
  return value
