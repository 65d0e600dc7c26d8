"""What the runner shows of an on-policy run: the summary and its text."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxrl_align import envs
from jaxrl_align import learner


def summarize(config, states, evaluation, last_metrics) -> dict[str, Any]:
  del states
  evaluation = np.asarray(evaluation, np.float64)
  per_seed = [learner.finite_mean(row) for row in evaluation]
  means = np.array([np.nan if m is None else m for m in per_seed])
  finite = means[np.isfinite(means)]
  return {
      "env_id": config.env_id,
      "env_path": "jax" if envs.is_jax_native(config.env_id) else "host",
      "total_timesteps": config.total_timesteps,
      "eval_episodes": int(evaluation.shape[1]),
      "eval_episodes_unfinished": int(np.sum(~np.isfinite(evaluation))),
      "eval_return_mean": float(finite.mean()) if finite.size else None,
      "eval_return_std_over_seeds": (float(finite.std()) if finite.size
                                     else None),
      "per_seed": [{"seed": i, "eval_return_mean": per_seed[i],
                    "train_episode_return": last_metrics[i].get(
                        "episode_return")}
                   for i in range(len(per_seed))]}


def report(summary: dict[str, Any]) -> str:
  def num(x, width):
    return f"{x:{width}.1f}" if x is not None else f"{'n/a':>{width}s}"

  lines = [f"{summary['algo'].upper()} on {summary['env_id']}, "
           f"{summary['seeds']} seed{'s' * (summary['seeds'] != 1)} x "
           f"{summary['env_steps']:,} env steps",
           f"  {'seed':>4s} {'eval return':>12s} {'last train return':>18s}"]
  for row in summary["per_seed"]:
    lines.append(f"  {row['seed']:4d} {num(row['eval_return_mean'], 12)} "
                 f"{num(row['train_episode_return'], 18)}")
  std = summary["eval_return_std_over_seeds"]
  lines.append(f"  mean {num(summary['eval_return_mean'], 11)} ± "
               f"{num(std, 1).strip()} (std over seeds, "
               f"{summary['eval_episodes']} deterministic episodes each"
               + (f", {summary['eval_episodes_unfinished']} unfinished"
                  if summary["eval_episodes_unfinished"] else "")
               + f"); {summary['wall_seconds_this_session']:.1f} s")
  return "\n".join(lines)
