"""What PPO and TRPO reach on the five classic-control tasks with their presets.

For each algorithm and task: ``Config(env_id=...)`` with nothing else set,
``--seeds`` seeds (16 by default) trained in one ``vmap`` from a key set
(``--key``: the seeds are ``jax.random.split(jax.random.key(KEY), seeds)``;
pick a fresh one to check a claim on seeds nothing was tuned on), then 16
deterministic evaluation episodes per seed. Prints, per task, the mean
evaluation return per seed, their mean, how many seeds reach the task's
threshold (Gymnasium's ``reward_threshold``: CartPole-v1 475, Acrobot-v1
-100, MountainCar-v0 -110, MountainCarContinuous-v0 90; Pendulum-v1 has
none, -200 is used: a swung-up, balanced pendulum) and how many never
finished a training episode except by the time limit, and the wall time
(compile included). ``--json PATH`` also writes the figures.

Usage: ``python benchmarks/presets_report.py [--seeds 16] [--key 0]
[--algos ppo trpo] [--envs CartPole-v1 ...] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium
import jax
import numpy as np

from jaxrl_align import agents
from jaxrl_align import envs
from jaxrl_align.agents import LEARNERS

THRESHOLDS = {"Pendulum-v1": -200.0}  # where Gymnasium states none


def threshold(env_id: str) -> float:
  """The return a seed must reach to count as solving (learning) a task."""
  spec = gymnasium.spec(env_id).reward_threshold
  return THRESHOLDS[env_id] if spec is None else float(spec)


def run(algo, env_id, seeds, key):
  module = getattr(agents, algo)
  config = LEARNERS[algo].config_type(env_id=env_id)
  keys = jax.random.split(jax.random.key(key), seeds)
  start = time.perf_counter()
  states, metrics = jax.jit(jax.vmap(module.train, in_axes=(None, 0)))(
      config, keys)
  returns = jax.jit(jax.vmap(lambda s, k: module.evaluate(config, s, k, 16)))(
      states, jax.random.split(jax.random.key(key + 1), seeds))
  per_seed = np.asarray(returns).mean(axis=1)
  train = np.asarray(metrics["episode_return"])  # [seeds, updates]
  limit = envs.make(env_id)[1].max_steps_in_episode
  stuck = int(np.sum(np.nanmax(np.where(np.isnan(train), -np.inf, train),
                               axis=1) <= -limit)) if env_id in (
                                   "Acrobot-v1", "MountainCar-v0") else None
  return config, per_seed, stuck, time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=16)
  parser.add_argument("--key", type=int, default=0)
  parser.add_argument("--algos", nargs="+", default=list(LEARNERS))
  parser.add_argument("--envs", nargs="+", default=list(envs.ENV_IDS))
  parser.add_argument("--json", default=None)
  args = parser.parse_args()
  print(f"key {args.key}, {args.seeds} seeds")
  print(f"{'algo':5s} {'task':25s} {'steps':>9s} {'mean':>8s} "
        f"{'solved':>9s}  per seed  (time)")
  rows = []
  for algo in args.algos:
    for env_id in args.envs:
      config, per_seed, stuck, seconds = run(algo, env_id, args.seeds,
                                             args.key)
      bar = threshold(env_id)
      solved = int(np.sum(per_seed >= bar))
      seeds = " ".join(f"{r:.1f}" for r in per_seed)
      print(f"{algo:5s} {env_id:25s} {config.total_timesteps:9d} "
            f"{per_seed.mean():8.1f} {solved:3d} of {len(per_seed):2d}  "
            f"{seeds}  ({seconds:.0f}s)"
            + (f"  [{stuck} never reached the goal in training]"
               if stuck else ""), flush=True)
      rows.append({"algo": algo, "env_id": env_id, "key": args.key,
                   "env_steps": config.total_timesteps,
                   "threshold": bar, "solved": solved,
                   "seeds": len(per_seed), "per_seed": per_seed.tolist(),
                   "never_reached_goal": stuck, "seconds": seconds})
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
