"""Resuming a run directory (host side): what is refused, what is kept and
what is dropped, for :func:`jaxrl_align.host.runner.run`.

Refused before anything compiles or changes: a run directory whose marker
is of another kind than its record, a changed static field, a finished run
asked to change (a hyperparameter, TensorBoard events), and a run whose
metrics show a checkpoint was saved when none is left. A finished run
(its ``summary.json`` written) is otherwise left byte for byte as it is.
Resuming drops the metrics lines written after the checkpoint it resumes
from (a torn last line among them, left by a killed process) and says so.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from jaxrl_align import configs
from jaxrl_align.host import checkpoints
from jaxrl_align.host import distributed
from jaxrl_align.host import files
from jaxrl_align.host.errors import RunError
from jaxrl_align.learner import Learner

CHECKPOINTS = "checkpoints"


def changes(out: str, learner: Learner, stored, config) -> dict[str, Any]:
  """``{field: (stored, given)}``: the hyperparameters ``config`` changes
  from the ``stored`` config of the run in ``out``.

  Raises:
    RunError: the run's marker is of another kind, or a static field
      changes (it changes the program).
  """
  kind = files.kind_of(out)
  if kind not in ("", learner.name):
    raise RunError(f"{out!r} is marked as a {kind} run, yet its config.json "
                   f"is a {learner.name} run's; refusing to write into it.")
  diff = configs.diff(stored, config)
  static = {k: v for k, v in diff.items() if k in configs.static_fields(config)}
  if static:
    raise RunError(
        "Cannot resume with different static fields (they change the "
        "program):\n" + "\n".join(f"  {k}: {a!r} (stored) -> {b!r}"
                                  for k, (a, b) in static.items()))
  return diff


def finished(out: str, diff: dict[str, Any], tensorboard: bool,
             summary: dict[str, Any]) -> None:
  """A finished run resumed: says so (process 0), or refuses what only a
  run that trains could do."""
  if diff:
    raise RunError(f"The run in {out!r} has finished: nothing is left to "
                   f"train with {', '.join(diff)} changed; resume it as it "
                   f"is, or start a new run.")
  if tensorboard:
    raise RunError(f"The run in {out!r} has finished: --tensorboard would "
                   f"log nothing; resume it without it.")
  if distributed.is_primary():
    print(f"note: the run in {out} has finished ({summary.get('updates')} "
          f"updates); nothing was run or changed.", file=sys.stderr)


def check(out: str, learner: Learner, config, settings) -> None:
  """Refuses a run whose metrics show a checkpoint was saved when none is
  left (resuming would start it again from update 0 over them). Reads
  every metrics line, so an unreadable one is refused here, before
  anything compiles. Process 0."""
  last = max((m["update"] for m in files.read_metrics(out)), default=0)
  if files.checkpoint_steps(os.path.join(out, CHECKPOINTS)):
    return
  every, chunk = settings.checkpoint_every, settings.chunk
  first = min(learner.num_updates(config), -(-every // chunk) * chunk)
  if last > first:  # a crash before the first checkpoint leaves at most it
    raise RunError(f"{out!r} has metrics up to update {last} but no "
                   f"checkpoint (its first was saved at update {first}; "
                   f"{CHECKPOINTS}/ was emptied or removed): nothing to "
                   f"resume from; start it again with --overwrite.")


def warn(diff: dict[str, Any]) -> None:
  """Says which hyperparameters a resumed run changes (process 0)."""
  for k, (a, b) in diff.items() if distributed.is_primary() else ():
    print(f"warning: resuming with {k} = {b!r} (was {a!r}); the result "
          f"will differ from an uninterrupted run.", file=sys.stderr)


def readable(out: str) -> int | None:
  """The update the run in ``out`` resumes from: its newest checkpoint that
  reads back, found before anything compiles (a damaged one is refused in
  one line then); None when it has none yet (it starts again from 0) or
  runs over several processes (each reads its own shards: found when
  restored)."""
  directory = os.path.join(out, CHECKPOINTS)
  if distributed.count() > 1 or not files.checkpoint_steps(directory):
    return None
  return checkpoints.newest_readable(directory)


def restore(out: str, config, store: checkpoints.Checkpoints, states,
            diff: dict[str, Any], step: int | None = None):
  """``(done, states)`` of a run being resumed (from ``step``, else its
  newest readable checkpoint); drops the metrics of updates after its
  checkpoint and records changed hyperparameters."""
  done = 0
  if store.steps():  # else it stopped before its first checkpoint
    done, states = store.restore(states, step)
  distributed.on_primary(_rewind_files, out, config, done, diff)
  return done, states


def _rewind_files(out, config, done, diff):
  """Drops the metrics lines written after the checkpoint at ``done``,
  saying so, and records the changed hyperparameters."""
  path = os.path.join(out, "metrics.jsonl")
  rows, torn = files.scan_metrics(out)
  kept = [m for m in rows if m["update"] <= done]
  dropped = len(rows) - len(kept) + (torn is not None)
  if dropped:
    files.atomic_write(path, "".join(json.dumps(m) + "\n" for m in kept))
    print(f"note: {path}: dropped {dropped} line(s) written after the "
          f"checkpoint at update {done}"
          + (f" (line {torn} torn: a process was killed while writing it)"
             if torn else "") + "; those updates run again.",
          file=sys.stderr)
  if diff:  # the run's record says which hyperparameters changed, when
    stored_run = files.read_run(out)
    stored_run["config"] = configs.to_dict(config)
    stored_run.setdefault("changes", []).append(
        {"at_update": done, "changes": {k: list(v) for k, v in diff.items()}})
    files.write_json(os.path.join(out, "config.json"), stored_run)
