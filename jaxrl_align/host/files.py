"""Run directories on disk: how they are recognised, created, locked and
replaced, atomic writes, and reading their files back.

A run directory is recognised by its marker file, ``.jaxrl-align-run``,
made before anything else when the directory is created; it holds the kind
of run (a learner's name, ``prefs``, ``demo``). The marker is also the
run directory's lock: one process at a time writes a run directory, holding
an exclusive ``flock`` on its marker for as long as it writes (the
operating system drops it when the process ends, however it ends).

``--overwrite`` replaces only a run directory of the same kind (the same
command's), and only when every path in it, at every depth, is one our
runs write: the names its kind declares (:func:`declare`), orbax
checkpoints in their own layout, TensorBoard events, evaluation videos,
our temporary files by their exact pattern, and, in a directory of runs
(the demo's), nested run directories holding only the same. Anything else
is refused, named, before anything is deleted.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import shutil
import stat
import sys
from typing import Any, NamedTuple

from jaxrl_align.host import errors
from jaxrl_align.host.errors import RunError  # noqa: F401  (files.RunError)
from jaxrl_align.host.errors import RunFileError

try:
  import fcntl
except ImportError:  # not POSIX: no locks
  fcntl = None

MARKER = ".jaxrl-align-run"
FORMAT_VERSION = 2  # of config.json
# What the runner writes at the top of every learner's run directory.
RUN_ENTRIES = frozenset({
    MARKER, "config.json", "metrics.jsonl", "checkpoints", "summary.json",
    "learning_curve.png", "tensorboard"})

# Directories whose whole tree a library writes: {name pattern: subtree},
# a subtree of None being a file.
_TMP = r"(\.orbax-checkpoint-tmp(-\d+)?)?"  # orbax's unfinished directories
_HEX = {r"[0-9a-f]+": None}
_ORBAX_ITEM = {r"_METADATA|_sharding|commit_success\.txt|manifest\.ocdbt": None,
               r"array_metadatas": {r"process_\d+": None}, r"d": _HEX,
               r"ocdbt\.process_\d+": {r"manifest\.ocdbt": None, r"d": _HEX}}
ORBAX = {r"\d+" + _TMP: {r"_CHECKPOINT_METADATA|commit_success\.txt": None,
                         r"default" + _TMP: _ORBAX_ITEM}}
TREES = {"checkpoints": ORBAX, "model": ORBAX,
         "tensorboard": {r"events\.out\.tfevents\.[^/]+": None}}
VIDEO = re.compile(r"episode_seed\d+\.gif")  # `eval --video`, in learner runs


class _Kind(NamedTuple):
  names: frozenset[str]  # at the top of its directory, the marker's too
  runner: bool  # a learner's run: the runner's entries and videos
  nests: bool  # holds run directories of ours


_LEARNER = _Kind(RUN_ENTRIES, True, False)  # every kind not declared
_KINDS: dict[str, _Kind] = {}
# The modules that declare the kinds other than learners' (on import).
_DECLARING = ("jaxrl_align.host.rlhf", "jaxrl_align.host.demo")


def declare(kind: str, names=(), *, runner: bool = True,
            nests: bool = False) -> None:
  """Declares what a kind of run writes at the top of its directory: what
  ``--overwrite`` may remove there.

  Args:
    kind: the marker's kind.
    names: its files and directories (a directory of :data:`TREES` is
      checked as that tree).
    runner: it is a learner's run, so it holds the runner's
      :data:`RUN_ENTRIES` and evaluation videos too (as every undeclared
      kind does).
    nests: it holds run directories of ours (each checked as its kind).
  """
  _KINDS[kind] = _Kind(frozenset(names) | {MARKER}
                       | (RUN_ENTRIES if runner else frozenset()), runner,
                       nests)


def _kind(kind: str) -> _Kind:
  """What a ``kind`` run writes (its declaring modules imported first: a
  kind is known whoever asks)."""
  if kind not in _KINDS:
    for module in _DECLARING:
      importlib.import_module(module)
  return _KINDS.get(kind, _LEARNER)


def entries(kind: str) -> frozenset[str]:
  """The names a ``kind`` run writes at the top of its directory."""
  return _kind(kind).names


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
  """The JSON value in ``path``; a file that is not JSON is a RunFileError
  naming it and the line where it stops being JSON."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise RunFileError(f"{path}: line {e.lineno} column {e.colno}: not JSON "
                       f"({e.msg}).") from None
  except UnicodeDecodeError:
    raise RunFileError(f"{path}: not text (not UTF-8).") from None
  except PermissionError:
    raise RunFileError(f"{path}: permission denied.") from None


def is_file(path: str) -> bool:
  """``os.path.isfile``, except that a path this process may not look at
  is a RunFileError saying so (``isfile`` calls it missing: a run
  directory we may not read is not "not a run directory")."""
  try:
    return stat.S_ISREG(os.stat(path).st_mode)
  except (FileNotFoundError, NotADirectoryError):
    return False
  except PermissionError:
    raise RunFileError(f"{path}: permission denied.") from None


def is_run_dir(path: str) -> bool:
  """True for a directory that one of our runs created."""
  return is_file(os.path.join(path, MARKER))


def kind_of(path: str) -> str | None:
  """The kind of run in ``path`` (``""`` when its marker is empty: the run
  never started), or None when it is no run directory of ours."""
  marker = os.path.join(path, MARKER)
  try:
    with open(marker, encoding="utf-8", errors="replace") as f:
      return f.read().strip()
  except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
    return None
  except PermissionError:
    raise RunFileError(f"{marker}: permission denied.") from None


# ------------------------------------------------------------------ locks


_HELD: dict[str, list] = {}  # marker's real path -> [descriptor, holders]


class RunLock:
  """This process's hold on a run directory (:func:`lock`); ``release`` or
  leave the ``with`` block to let go of it."""

  def __init__(self, key: str):
    self._key = key

  def release(self) -> None:
    """Releases this hold (the lock itself once no hold is left)."""
    key, self._key = self._key, None
    if key is None or key not in _HELD:
      return
    _HELD[key][1] -= 1
    if not _HELD[key][1]:
      os.close(_HELD.pop(key)[0])

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()

  def __del__(self):
    self.release()


def lock(run_dir: str, *, create: bool = False) -> RunLock:
  """Takes the lock of the run directory ``run_dir`` (its marker; made,
  empty, when ``create``), or refuses: one writer per run directory. A
  process that holds it already takes it again (released when every hold
  is).

  Raises:
    RunError: ``run_dir`` has no marker (not a run directory of ours), or
      another process holds its lock.
  """
  path = os.path.join(run_dir, MARKER)
  key = os.path.realpath(path)
  if key in _HELD:
    _HELD[key][1] += 1
    return RunLock(key)
  try:
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
  except (FileNotFoundError, NotADirectoryError):
    raise RunError(f"{run_dir!r} is not a jaxrl-align run directory (it has "
                   f"no {MARKER} file); refusing to write into it.") from None
  try:
    if fcntl is not None:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
        raise RunError(f"{run_dir!r} is being written by another process "
                       f"(one writer per run directory); wait for it to "
                       f"end.") from None
      raise
    print(f"warning: {run_dir}: this filesystem has no file locks; make sure "
          f"no other process writes this run directory.", file=sys.stderr)
  _HELD[key] = [fd, 1]
  return RunLock(key)


def _mark(run_dir: str, kind: str) -> None:
  """Writes ``kind`` into the marker in place (its lock stays valid)."""
  fd = _HELD[os.path.realpath(os.path.join(run_dir, MARKER))][0]
  text = (kind + "\n").encode()
  if os.pread(fd, len(text) + 1, 0) != text:
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)
    os.fsync(fd)


# ----------------------------------------------------- what a run wrote


def _is_ours(name: str, kind: _Kind) -> bool:
  """A file named ``name`` at the top of a ``kind`` run directory is one
  it writes: a declared name, a video, or a temporary file of either by
  our exact pattern (``NAME.tmp-PID``; ``NAME.tmp-PID.png`` for images)."""

  def final(base):
    return (base in kind.names and base not in TREES) or (
        kind.runner and VIDEO.fullmatch(base) is not None)

  tmp = re.fullmatch(r"(.+)\.tmp-\d+(\.png|\.gif)?", name)
  if tmp is None:
    return final(name)
  base, suffix = tmp.groups()
  return final(base) and (suffix is None or base.endswith(suffix))


def _foreign_tree(directory: str, tree: dict, prefix: str) -> list[str]:
  """What under a library's ``directory`` its ``tree`` has no place for."""
  found = []
  for name in sorted(os.listdir(directory)):
    path, rel = os.path.join(directory, name), prefix + name
    sub = next((v for k, v in tree.items() if re.fullmatch(k, name)), False)
    if os.path.islink(path) or sub is False:
      found.append(rel)
    elif sub is None:
      found += [] if os.path.isfile(path) else [rel]
    elif os.path.isdir(path):
      found += _foreign_tree(path, sub, rel + "/")
    else:
      found.append(rel)
  return found


def _foreign(directory: str, kind: str, locks: list[RunLock],
             prefix: str = "") -> list[str]:
  """What in a ``kind`` run directory no run wrote (paths relative to it,
  at any depth); nested runs are locked into ``locks`` as they are
  checked (no other process may be writing what is to be deleted)."""
  declared = _kind(kind)
  found = []
  for name in sorted(os.listdir(directory)):
    path, rel = os.path.join(directory, name), prefix + name
    if os.path.islink(path):
      found.append(rel)
    elif os.path.isdir(path) and name in TREES and name in declared.names:
      found += _foreign_tree(path, TREES[name], rel + "/")
    elif os.path.isdir(path) and declared.nests and is_run_dir(path):
      locks.append(lock(path))
      found += _foreign(path, kind_of(path), locks, rel + "/")
    elif not (os.path.isfile(path) and _is_ours(name, declared)):
      found.append(rel)
  return found


def foreign(run_dir: str) -> list[str]:
  """What in the run directory ``run_dir`` no run wrote (relative paths)."""
  locks: list[RunLock] = []
  try:
    return _foreign(run_dir, kind_of(run_dir) or "", locks)
  finally:
    for held in locks:
      held.release()


def prepare_run_dir(out: str, kind: str, *, overwrite: bool,
                    hint: str = "pass --overwrite to replace it",
                    replaces=None) -> RunLock:
  """Creates the run directory ``out`` (marked as a ``kind`` run) and takes
  its lock.

  An existing empty directory is used as it is. A non-empty one is refused
  unless ``overwrite``, and replaced only if it is a run directory of a
  kind in ``replaces`` (default: ``kind``) holding nothing but what our
  runs write, no part of it locked by another process.

  Returns:
    The lock of ``out`` (:func:`lock`), for the caller to release when it
    has written the run.

  Raises:
    RunError: ``out`` is a file, or a non-empty directory that cannot be
      replaced (the message says why); nothing was changed.
  """
  if os.path.exists(out) and not os.path.isdir(out):
    raise RunError(f"{out!r} exists and is not a directory.")
  if not (os.path.isdir(out) and os.listdir(out)):
    os.makedirs(out, exist_ok=True)
    held = lock(out, create=True)
    _mark(out, kind)
    return held
  found = kind_of(out)
  if found is None:
    raise RunError(f"{out!r} is not empty and is not a jaxrl-align run "
                   f"directory (it has no {MARKER} file); refusing to write "
                   f"into it: choose another directory.")
  if found and found not in set(replaces or ()) | {kind}:
    raise RunError(f"{out!r} holds a {found} run, not a {kind} run; "
                   f"--overwrite replaces only a run of the same command: "
                   f"remove it yourself or choose another directory.")
  if not overwrite:
    raise RunError(f"{out!r} exists and is not empty; {hint}.")
  held = lock(out)
  nested: list[RunLock] = []
  try:
    unknown = _foreign(out, found or kind, nested)
    if unknown:
      raise RunError(f"{out!r} holds files that no run wrote "
                     f"({', '.join(unknown[:5])}); move them or choose "
                     f"another directory.")
    for entry in os.listdir(out):
      path = os.path.join(out, entry)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      elif entry != MARKER:
        os.remove(path)
    _mark(out, kind)
  except BaseException:
    held.release()
    raise
  finally:
    for one in nested:
      one.release()
  return held


# ------------------------------------------------------ reading a run back


def read_lines(path: str, keys: tuple[str, ...] = (), *,
               torn_ok: bool = False) -> tuple[list[Any], int | None]:
  """``(rows, torn)`` of the JSON-lines file ``path``: each line an object
  with an integer at each of ``keys``; blank lines skipped.

  Args:
    path: the file.
    keys: the names each row holds an integer at.
    torn_ok: a last line cut short (no newline and not JSON: a process
      killed while writing it) is left out and its number returned as
      ``torn`` (None when there is none); else it is refused as any line.

  Raises:
    RunError: a line is not such a row; the message names the file and
      the line.
  """
  with open(path, "rb") as f:
    lines = f.readlines()
  rows = []
  for number, line in enumerate(lines, 1):
    try:
      row = json.loads(line) if line.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      if torn_ok and number == len(lines) and not line.endswith(b"\n"):
        return rows, number
      raise RunError(f"{path}: line {number}: not JSON "
                     f"({getattr(e, 'msg', 'not UTF-8 text')}).") from None
    if row is None:
      continue
    if not (isinstance(row, dict) and all(type(row.get(k)) is int
                                          for k in keys)):
      raise RunError(f"{path}: line {number}: not a row of this file (a "
                     f"JSON object" + (f" with integer {', '.join(keys)})."
                                       if keys else ")."))
    rows.append(row)
  return rows, None


def scan_metrics(run_dir: str) -> tuple[list[dict[str, Any]], int | None]:
  """``(rows, torn)`` of a run's ``metrics.jsonl``: ``torn`` is the number
  of a last line cut short (a process killed while writing it, or one
  writing it now: not data), or None (:func:`read_lines`)."""
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return [], None
  return read_lines(path, ("update", "seed"), torn_ok=True)


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
  """The rows of a run's ``metrics.jsonl`` (a torn last line left out: a
  process killed while writing it, or one writing it now)."""
  return scan_metrics(run_dir)[0]


# What a run's record holds, checked before anything reads it: its
# sections (JSON objects) and its names (strings).
RECORD_SECTIONS = ("config", "runner")
RECORD_NAMES = ("algo", "units", "progress_metric")


def read_run(run_dir: str) -> dict[str, Any]:
  """A run directory's ``config.json`` (its record), its sections and names
  checked: anything hand-edited into another shape is a RunFileError
  naming the file and the field."""
  path = os.path.join(run_dir, "config.json")
  if not is_file(path):
    raise RunError(f"{run_dir!r} is not a run directory (no config.json).")
  run = read_json(path)
  if not isinstance(run, dict):
    raise RunFileError(f"{path}: not a run's record (a JSON object).")
  if run.get("format") not in (1, FORMAT_VERSION):
    raise RunError(f"{run_dir!r} was written by another version of "
                   f"jaxrl_align (format {run.get('format')}).")
  if run["format"] == 1:  # it held environment learners only
    run.setdefault("units", "env_steps")
    run.setdefault("progress_metric", "episode_return")
  for keys, kind, what in ((RECORD_SECTIONS, dict, "a JSON object"),
                           (RECORD_NAMES, str, "a string")):
    for key in keys:
      if key not in run:
        raise RunFileError(f"{path}: `{key}` is missing; the file was "
                           f"edited or cut short.")
      if not isinstance(run[key], kind):
        raise RunFileError(f"{path}: `{key}` must be {what}, got "
                           f"{describe(run[key])}.")
  return run


describe = errors.describe


def read_summary(run_dir: str) -> dict[str, Any] | None:
  """A finished run's ``summary.json`` (None while the run has none)."""
  path = os.path.join(run_dir, "summary.json")
  if not is_file(path):
    return None
  summary = read_json(path)
  if not isinstance(summary, dict):
    raise RunFileError(f"{path}: not a run's summary (a JSON object).")
  return summary


def checkpoint_steps(directory: str) -> list[int]:
  """The steps of the finished orbax checkpoints in ``directory`` (read
  from the names alone: nothing is opened or made)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory)
                if name.isdigit()
                and os.path.isdir(os.path.join(directory, name)))
