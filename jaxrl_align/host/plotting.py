"""Learning curves of run directories (host side, matplotlib)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from jaxrl_align.host import files


def curves(run_dir: str, metric: str | None = None):
  """``(units [U], values [seeds, U])`` of a run's ``metrics.jsonl``: the
  metric (default: the run's progress metric) against the units consumed
  (env steps, tokens, pairs). A null is no value (NaN).

  Updates logged by only some seeds (a run stopped mid-way) are left out.
  """
  run = files.read_run(run_dir)
  metric = metric or run["progress_metric"]
  rows = files.read_metrics(run_dir)
  if not rows:
    raise files.RunError(f"{run_dir!r} has no metrics yet.")
  if metric not in rows[0]:
    raise files.RunError(
        f"Unknown metric {metric!r}; this run logs: "
        f"{', '.join(k for k in rows[0] if k not in ('update', 'seed'))}.")
  for r in rows:  # a hand-edited row: named, not a NumPy error
    for key, value in ((run["units"], r.get(run["units"])),
                       (metric, r.get(metric))):
      if not (value is None and key == metric) and (
          isinstance(value, bool) or not isinstance(value, (int, float))):
        raise files.RunFileError(
            f"{os.path.join(run_dir, 'metrics.jsonl')}: the row of update "
            f"{r['update']}, seed {r['seed']}: `{key}` must be a number"
            + (" or null" if key == metric else "") + f", got "
            f"{files.describe(value) if key in r else 'nothing'}.")
  seeds = sorted({r["seed"] for r in rows})
  by_update: dict[int, dict[int, dict]] = {}
  for r in rows:
    by_update.setdefault(r["update"], {})[r["seed"]] = r
  updates = sorted(u for u, s in by_update.items() if len(s) == len(seeds))
  steps = np.array([by_update[u][seeds[0]][run["units"]] for u in updates],
                   float)
  values = np.array([[np.nan if by_update[u][s][metric] is None
                      else by_update[u][s][metric] for u in updates]
                     for s in seeds], float)
  return steps, values


def plot_runs(run_dirs: Sequence[str], out: str, *,
              metric: str | None = None,
              labels: Sequence[str] | None = None) -> str:
  """One figure: each run's mean over seeds, with a band from the lowest to
  the highest seed (a ±std band would leave the possible range).

  Args:
    run_dirs: run directories (``jaxrl-align train --out``).
    out: PNG path (written atomically).
    metric: a key of ``metrics.jsonl`` (default: the first run's progress
      metric).
    labels: legend entries (default: ``ALGO env (N seeds)``).

  Returns:
    ``out``.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  first = files.read_run(run_dirs[0])
  metric = metric or first["progress_metric"]
  fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
  for i, run_dir in enumerate(run_dirs):
    run = files.read_run(run_dir)
    steps, values = curves(run_dir, metric)
    # Updates where no seed has a value (no episode ended yet) are skipped.
    some = np.isfinite(values).any(axis=0)
    steps, values = steps[some], values[:, some]
    mean = np.nanmean(values, 0)
    low, high = np.nanmin(values, 0), np.nanmax(values, 0)
    task = run["config"].get("env_id")
    label = (labels[i] if labels else
             f"{run['algo'].upper()}{' ' + task if task else ''} "
             f"({values.shape[0]} seeds)")
    line, = ax.plot(steps, mean, label=label)
    ax.fill_between(steps, low, high, alpha=0.2,
                    color=line.get_color(), linewidth=0)
  ax.set_xlabel(first["units"].replace("_", " "))
  ax.set_ylabel(metric.replace("_", " ")
                + " (mean; band: lowest to highest seed)", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(loc="best", fontsize=8)
  fig.tight_layout()
  tmp = f"{out}.tmp-{os.getpid()}.png"  # matplotlib picks the format by suffix
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, out)
  return out
