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


class Interrupt:
  """Turns the first Ctrl-C into a flag checked between chunks (and says
  so at once); a second one interrupts at once."""

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
    signal.signal(signal.SIGINT, signal.default_int_handler)

  def __exit__(self, *exc):
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
