"""Run directories on disk: how they are recognised, created and replaced,
and atomic writes.

A run directory is recognised by its marker file, ``.jaxrl-align-run``,
written before anything else when the directory is created (it holds the
kind of run). ``--overwrite`` replaces only a recognised run directory, and
only when everything in it is what our runs write (the names in
:data:`RUN_ENTRIES`, evaluation videos, temporary files, and nested run
directories holding only the same); a directory without the marker, or
with any other file in it (at any depth of a nested run), is refused and
left untouched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

from jaxrl_align.host.errors import RunError  # noqa: F401  (files.RunError)

MARKER = ".jaxrl-align-run"
FORMAT_VERSION = 2  # of config.json
RUN_ENTRIES = frozenset({
    MARKER, "config.json", "metrics.jsonl", "checkpoints", "summary.json",
    "learning_curve.png", "learning_curves.png", "tensorboard"})


_DECLARED: set[str] = set()


def declare(names) -> None:
  """Adds the names that a kind of run writes at the top of its directory
  besides the runner's (``jaxrl_align.host.rlhf`` declares its stages'
  files when it is imported): what ``--overwrite`` may remove."""
  _DECLARED.update(names)


def run_entries() -> frozenset[str]:
  """Every name a run of ours writes at the top of its directory: the
  runner's and those declared (a name not declared is never removed)."""
  return RUN_ENTRIES | frozenset(_DECLARED)


def atomic_write(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` through a synced temporary file and a
  rename: a crash leaves the old file or the new one, never half of one."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path: str, value: Any) -> None:
  """Atomically writes ``value`` as indented, plain JSON (no NaN tokens)."""
  atomic_write(path, json.dumps(value, indent=2, allow_nan=False) + "\n")


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def is_run_dir(path: str) -> bool:
  """True for a directory that one of our runs created."""
  return os.path.isfile(os.path.join(path, MARKER))


def _foreign(directory: str, prefix: str = "") -> list[str]:
  """What in a run directory no run wrote (paths relative to it)."""
  found = []
  known = run_entries()
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    base = name.split(".tmp-", 1)[0]
    if base in known or re.fullmatch(r"episode_seed\d+\.gif", base):
      continue
    if is_run_dir(path) and not os.path.islink(path):
      found += _foreign(path, prefix + name + "/")
    else:
      found.append(prefix + name)
  return found


def prepare_run_dir(out: str, kind: str, *, overwrite: bool,
                    hint: str = "pass --overwrite to replace it") -> None:
  """Creates the run directory ``out`` (marked as a ``kind`` run).

  An existing empty directory is used as it is. A non-empty one is refused
  unless ``overwrite``, and replaced only if it is a run directory holding
  nothing but what our runs write.

  Raises:
    RunError: ``out`` is a file, or a non-empty directory that cannot be
      replaced (the message says why); nothing was changed.
  """
  if os.path.exists(out) and not os.path.isdir(out):
    raise RunError(f"{out!r} exists and is not a directory.")
  entries = os.listdir(out) if os.path.isdir(out) else []
  if entries:
    if not overwrite:
      raise RunError(f"{out!r} exists and is not empty; {hint}.")
    if not is_run_dir(out):
      raise RunError(f"{out!r} is not a jaxrl-align run directory (it has no "
                     f"{MARKER} file); refusing to delete anything in it.")
    foreign = _foreign(out)
    if foreign:
      raise RunError(f"{out!r} holds files that no run wrote "
                     f"({', '.join(foreign[:5])}); move them or choose "
                     f"another directory.")
    for entry in entries:
      path = os.path.join(out, entry)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
  os.makedirs(out, exist_ok=True)
  atomic_write(os.path.join(out, MARKER), kind + "\n")


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def read_run(run_dir: str) -> dict[str, Any]:
  path = os.path.join(run_dir, "config.json")
  if not os.path.isfile(path):
    raise RunError(f"{run_dir!r} is not a run directory (no config.json).")
  run = read_json(path)
  if run.get("format") not in (1, FORMAT_VERSION):
    raise RunError(f"{run_dir!r} was written by another version of "
                   f"jaxrl_align (format {run.get('format')}).")
  # Format 1 held environment learners only.
  run.setdefault("units", "env_steps")
  run.setdefault("progress_metric", "episode_return")
  return run
