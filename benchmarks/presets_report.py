"""What PPO and TRPO reach on the five classic-control tasks with their presets.

For each algorithm and task: ``Config(env_id=...)`` with nothing else set,
``--seeds`` seeds trained in one ``vmap``, then 16 deterministic evaluation
episodes per seed. Prints the per-seed mean evaluation returns, their mean,
and the wall time (compile included).

Usage: ``python benchmarks/presets_report.py [--seeds 4] [--algos ppo trpo]
[--envs CartPole-v1 ...]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from jaxrl_align import agents
from jaxrl_align import envs
from jaxrl_align.agents import LEARNERS


def run(algo, env_id, seeds):
  module = getattr(agents, algo)
  config = LEARNERS[algo].config_type(env_id=env_id)
  keys = jax.random.split(jax.random.key(0), seeds)
  start = time.perf_counter()
  states, _ = jax.jit(jax.vmap(module.train, in_axes=(None, 0)))(config, keys)
  returns = jax.jit(jax.vmap(lambda s, k: module.evaluate(config, s, k, 16)))(
      states, jax.random.split(jax.random.key(1), seeds))
  per_seed = np.asarray(returns).mean(axis=1)
  return config, per_seed, time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=4)
  parser.add_argument("--algos", nargs="+", default=list(LEARNERS))
  parser.add_argument("--envs", nargs="+", default=list(envs.ENV_IDS))
  args = parser.parse_args()
  print(f"{'algo':5s} {'task':25s} {'steps':>9s} {'mean':>8s}  per seed"
        f"  (time)")
  for algo in args.algos:
    for env_id in args.envs:
      config, per_seed, seconds = run(algo, env_id, args.seeds)
      seeds = " ".join(f"{r:8.1f}" for r in per_seed)
      print(f"{algo:5s} {env_id:25s} {config.total_timesteps:9d} "
            f"{per_seed.mean():8.1f}  {seeds}  ({seconds:.0f}s)", flush=True)


if __name__ == "__main__":
  main()
