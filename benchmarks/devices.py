"""PPO on CartPole-v1 over 1, 2, 4 and 8 forced CPU devices: aggregate env
steps/s and compile time, seeds spread over devices and one run's batch
split over them (``jaxrl_align.parallel``), in one run.

Each device count runs in its own process (JAX fixes the count when it
starts, ``XLA_FLAGS=--xla_force_host_platform_device_count=N``). Forced
devices share the machine's cores, so on a 2-core machine little gain is
expected: the figures show what the partitioned program costs, and the
per-device work a real accelerator would take (see ``docs/devices.md``).

Usage: ``python benchmarks/devices.py [--devices 1 2 4 8] [--updates 10]
[--out benchmarks/results/devices]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

# seeds: 8 runs of 32 envs spread over the devices; data: one run of 256
# envs split over them; 128 steps per env per update either way
SETUPS = {"seeds": dict(seeds=8, num_envs=32), "data": dict(seeds=1,
                                                              num_envs=256)}
NUM_STEPS = 128


def worker(devices: int, updates: int) -> dict:
  import jax
  from jaxrl_align import parallel
  from jaxrl_align.agents import ppo

  out = {}
  for mode, setup in SETUPS.items():
    config = ppo.PPOConfig(
        env_id="CartPole-v1", num_envs=setup["num_envs"], num_steps=NUM_STEPS,
        num_minibatches=4, update_epochs=4,
        total_timesteps=updates * setup["num_envs"] * NUM_STEPS)
    mesh = (parallel.mesh(seeds=devices) if mode == "seeds"
            else parallel.mesh(data=devices))
    keys = jax.random.split(jax.random.key(0), setup["seeds"])
    with jax.set_mesh(mesh):
      fn = jax.jit(parallel.vmap_seeds(ppo.train, in_axes=(None, 0)))
      t0 = time.perf_counter()
      compiled = fn.lower(config, keys).compile()
      compile_s = time.perf_counter() - t0
      jax.block_until_ready(compiled(config, keys))  # warm-up
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(config, keys))
      warm_s = time.perf_counter() - t0
    steps = setup["seeds"] * updates * setup["num_envs"] * NUM_STEPS
    out[mode] = {"compile_s": compile_s, "warm_s": warm_s,
                 "env_steps": steps, "steps_per_s": steps / warm_s}
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
  parser.add_argument("--updates", type=int, default=10)
  parser.add_argument("--out", default="benchmarks/results/devices")
  parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(args.worker, args.updates)))
    return 0
  if any(d < 1 or 8 % d for d in args.devices) or args.updates < 1:
    parser.exit(2, "devices.py: --devices must divide 8 and --updates be "
                   ">= 1\n")
  os.makedirs(args.out, exist_ok=True)
  results = {}
  for d in args.devices:
    env = dict(os.environ, XLA_FLAGS=(
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={d}"))
    line = subprocess.run(
        [sys.executable, __file__, "--worker", str(d), "--updates",
         str(args.updates)], env=env, check=True, capture_output=True,
        text=True).stdout.strip().splitlines()[-1]
    results[d] = json.loads(line)
    print(d, results[d], flush=True)
  base = results[args.devices[0]]
  rows = ["| devices | mode | compile (s) | warm (s) | env steps/s | × "
          f"{args.devices[0]} device |", "| ---: | --- | ---: | ---: | ---: "
          "| ---: |"]
  for d, by_mode in results.items():
    for mode, r in by_mode.items():
      rows.append(f"| {d} | {mode} | {r['compile_s']:.1f} | "
                  f"{r['warm_s']:.2f} | {r['steps_per_s']:,.0f} | "
                  f"{r['steps_per_s'] / base[mode]['steps_per_s']:.2f} |")
  text = "\n".join(rows)
  print(text)
  with open(os.path.join(args.out, "devices.json"), "w") as f:
    json.dump({"machine": {"processor": platform.processor(),
                           "cores": os.cpu_count()},
               "date": time.strftime("%Y-%m-%d"), "updates": args.updates,
               "setups": SETUPS, "num_steps": NUM_STEPS,
               "results": results}, f, indent=1)
  with open(os.path.join(args.out, "devices.md"), "w") as f:
    f.write(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
