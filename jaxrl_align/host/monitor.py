"""What a run shows and records while it trains: the Ctrl-C flag, the
progress bar, metrics as JSON lines and TensorBoard events."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from typing import Any

import jax
import numpy as np

from jaxrl_align.host import distributed
from jaxrl_align.host import files


# Set by the command's entry point (host.launch): a second Ctrl-C ends the
# process at once, quietly. Elsewhere (a notebook, a test) it raises
# KeyboardInterrupt, which the caller handles.
QUIET_SECOND_CTRL_C = False


def stop_at_once(signum=None, frame=None) -> None:
  """A second Ctrl-C in the command: one line, exit code 130, nothing
  else. Not an exception: one raised while orbax writes or its threads
  wait prints dozens of tracebacks from them. What is on disk is safe as
  after ``kill -9``: checkpoints are written to a temporary directory and
  renamed, and resuming drops metrics lines past the last checkpoint."""
  del signum, frame
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):  # closed or gone: nothing more to say
      pass
  os.write(2, b"\nCtrl-C again: stopped at once; the last checkpoint is "
              b"intact (--resume continues from it).\n")
  os._exit(130)


class Interrupt:
  """Turns the first Ctrl-C into a flag checked between chunks (and says
  so at once); a second one stops at once: the process ends
  (:func:`stop_at_once`) in the command, elsewhere it raises
  KeyboardInterrupt."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGINT, self._handle)
    except ValueError:  # not the main thread: no handler, no flag
      self._previous = None
    return self

  def _handle(self, signum, frame):
    self.requested = True
    print("\nCtrl-C: stopping after this chunk with a checkpoint (Ctrl-C "
          "again stops at once, keeping the last checkpoint).",
          file=sys.stderr, flush=True)
    signal.signal(signal.SIGINT, stop_at_once if QUIET_SECOND_CTRL_C
                  else signal.default_int_handler)

  def __exit__(self, *exc):
    if self.requested and QUIET_SECOND_CTRL_C:
      return  # the process is stopping: a Ctrl-C while it saves, too
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)


def wait(tree) -> Any:
  """The tree on the host (its whole value on every process: see
  :func:`.distributed.to_host`), waiting in short sleeps (so a Ctrl-C is
  acknowledged while the device computes)."""
  leaves = jax.tree.leaves(tree)
  while not all(x.is_ready() for x in leaves if isinstance(x, jax.Array)):
    time.sleep(0.002)
  return distributed.to_host(tree)


def show(bar, metrics, name, units) -> None:
  if bar is None:
    return
  bar.update(units)
  shown = metrics[name][:, -1]
  if np.isfinite(shown).any():
    bar.set_postfix({name.split("_")[-1]: f"{float(np.nanmean(shown)):.3g}"})


def _plain(value) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def write_metrics(f, metrics, done, writer, units: str) -> None:
  """One line per update per seed; metrics are ``[seeds, chunk]`` arrays."""
  seeds, length = next(iter(metrics.values())).shape
  for j in range(length):
    update = done + j + 1
    for i in range(seeds):
      line = {"update": update, "seed": i}
      line.update({k: _plain(v[i, j]) for k, v in metrics.items()})
      f.write(json.dumps(line, allow_nan=False) + "\n")
    if writer is not None:
      step = int(metrics[units][0, j])
      for k, v in metrics.items():
        if np.isfinite(v[:, j]).any():
          writer.add_scalar(f"train/{k}", float(np.nanmean(v[:, j])), step)


def progress_bar(total: int, initial: int, enabled: bool, unit: str = "step"):
  """A tqdm bar on stderr counting ``total`` units from ``initial``, or
  ``None`` when not ``enabled`` (callers skip their updates then)."""
  if not enabled:
    return None
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, unit=unit, unit_scale=True,
              dynamic_ncols=True, file=sys.stderr)


def tensorboard_writer(out: str):
  try:
    from tensorboardX import SummaryWriter
  except ImportError as e:
    raise files.RunError("TensorBoard logging needs tensorboardX: "
                   "pip install 'jaxrl_align[tensorboard]'.") from e
  return SummaryWriter(os.path.join(out, "tensorboard"))
