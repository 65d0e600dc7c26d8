"""How far a member of a vmapped seed batch drifts from its single run.

For each learner and task: two seeds trained in one ``vmap`` and the second
seed trained alone, both for ``u`` updates; prints the largest absolute
difference between their parameters (batched and unbatched programs round
differently, and the differences grow as training goes on).

Usage: ``python benchmarks/vmap_drift.py [--updates 1 2 3 10 30]``.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from jaxrl_align.agents import ppo
from jaxrl_align.agents import trpo

RUNS = {
    "PPO, CartPole-v1 preset": (ppo, ppo.PPOConfig(env_id="CartPole-v1")),
    "PPO, Pendulum-v1 (4 envs x 64 steps, 8 minibatches)": (
        ppo, ppo.PPOConfig(env_id="Pendulum-v1", num_envs=4, num_steps=64,
                           num_minibatches=8)),
    "TRPO, CartPole-v1 preset": (trpo, trpo.TRPOConfig(env_id="CartPole-v1")),
    "TRPO, Pendulum-v1 (4 envs x 64 steps)": (
        trpo, trpo.TRPOConfig(env_id="Pendulum-v1", num_envs=4,
                              num_steps=64)),
}


def drift(module, config, updates: int, member: int = 1) -> float:
  def run(key):
    state = module.init(config, key)
    return jax.lax.scan(lambda s, _: module.update(config, s), state, None,
                        length=updates)[0].params

  keys = jax.random.split(jax.random.key(0), 2)
  batched = jax.jit(jax.vmap(run))(keys)
  single = jax.jit(run)(keys[member])
  return max(float(np.max(np.abs(np.asarray(b)[member] - np.asarray(s))))
             for b, s in zip(jax.tree.leaves(batched),
                             jax.tree.leaves(single)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--updates", type=int, nargs="+",
                      default=[1, 2, 3, 10, 30])
  args = parser.parse_args()
  print("| run | " + " | ".join(f"u = {u}" for u in args.updates) + " |")
  print("| --- |" + " --- |" * len(args.updates))
  for name, (module, config) in RUNS.items():
    cells = [f"{max(drift(module, config, u, 0), drift(module, config, u)):.1e}"
             for u in args.updates]
    print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
  main()
