"""Host-stepped training against stepping the same Gymnasium env at random.

For each MuJoCo task (issue 31's five and InvertedPendulum-v5), an
algorithm's preset and a number of seeds, in one process, timed in
alternation (median of ``--repeats``):

* random: the Gymnasium vector env our host path builds (``make_vec``,
  ``"sync"``, every seed's envs in one, auto-reset in the same step)
  stepped with uniform random actions drawn beforehand, nothing else;
* bare: the same envs stepped with random actions in a bare Python loop
  (each env's ``step``, ``reset()`` where an episode ended), without the
  vector env's bookkeeping, which our host path skips too (it steps a
  ``SyncVectorEnv``'s envs itself): the strictest baseline;
* collect: our host loop's rollouts (``HostPrograms.rollout``: the
  learner's ``prepare`` program, then every step normalised and sampled by
  the NumPy actor and taken through
  :class:`~jaxrl_align.envs.GymnasiumVecEnv`, then its ``replay`` program
  through the wrappers, with values and log-probabilities), without the
  updates;
* train: whole chunks, rollouts and updates (``HostPrograms.chunk``), as
  the command runs them;
* compiled (``--compiled``, needs ``mujoco-mjx``): the same config on the
  task compiled with MJX (``mjx/Hopper-v5``), the same number of updates
  as one program (``jit(vmap(train))`` over the seeds).

Reported as env steps/s over all seeds and as ratios to random (issue 31's
target: at least 0.8x) and to bare. Compile is excluded (a warm-up chunk first).

Usage: ``python benchmarks/host_throughput.py [--envs Hopper-v5 ...]
[--algos ppo trpo] [--seeds 1 4] [--updates 4] [--repeats 3] [--compiled]
[--json F]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import time

import gymnasium
import jax

from jaxrl_align import compiler
from jaxrl_align.agents import ppo
from jaxrl_align.agents import trpo
from jaxrl_align.host import stepping

ENVS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Swimmer-v5",
        "InvertedDoublePendulum-v5", "InvertedPendulum-v5")
CONFIGS = {"ppo": (ppo.LEARNER, ppo.PPOConfig),
           "trpo": (trpo.LEARNER, trpo.TRPOConfig)}
MODULES = {"ppo": ppo, "trpo": trpo}


def random_steps_per_s(env_id: str, num_envs: int, steps: int) -> float:
  """Env steps/s of the sync vector env under random actions."""
  env = gymnasium.make_vec(env_id, num_envs, vectorization_mode="sync",
                           vector_kwargs={"autoreset_mode": gymnasium.vector.
                                          AutoresetMode.SAME_STEP})
  env.reset(seed=0)
  env.action_space.seed(0)
  actions = [env.action_space.sample() for _ in range(steps)]
  start = time.perf_counter()
  for a in actions:
    env.step(a)
  elapsed = time.perf_counter() - start
  env.close()
  return steps * num_envs / elapsed


def bare_steps_per_s(env_id: str, num_envs: int, steps: int) -> float:
  """Env steps/s of the same envs under random actions stepped in a bare
  loop (each env's ``step``, ``reset()`` where an episode ended), without
  the vector env's bookkeeping: the least any host loop could cost."""
  env = gymnasium.make_vec(env_id, num_envs, vectorization_mode="sync")
  env.reset(seed=0)
  env.action_space.seed(0)
  actions = [env.action_space.sample() for _ in range(steps)]
  start = time.perf_counter()
  for a in actions:
    for i, e in enumerate(env.envs):
      _, _, terminated, truncated, _ = e.step(a[i])
      if terminated or truncated:
        e.reset()
  elapsed = time.perf_counter() - start
  env.close()
  return steps * num_envs / elapsed


def compiled_steps_per_s(algo: str, env_id: str, seeds: int, updates: int,
                         repeats: int) -> float:
  """Env steps/s of ``updates`` updates of every seed on the MJX task, one
  program (compiled by a first call)."""
  _, config_type = CONFIGS[algo]
  probe = config_type(env_id="mjx/" + env_id)
  n = seeds * probe.num_envs
  steps = updates * probe.num_steps
  config = config_type(env_id="mjx/" + env_id,
                       total_timesteps=probe.num_envs * steps)
  train = jax.jit(jax.vmap(MODULES[algo].train, in_axes=(None, 0)),
                  static_argnums=0)
  keys = jax.random.split(jax.random.key(0), seeds)
  jax.block_until_ready(train(config, keys))
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(train(config, keys))
    rates.append(steps * n / (time.perf_counter() - start))
  return statistics.median(rates)


def measure(algo: str, env_id: str, seeds: int, updates: int,
            repeats: int, compiled: bool) -> dict:
  learner, config_type = CONFIGS[algo]
  probe = config_type(env_id=env_id)
  batch = probe.num_envs * probe.num_steps
  config = config_type(env_id=env_id, total_timesteps=batch * updates)
  programs = stepping.HostPrograms(learner, updates, 1)
  keys = jax.random.split(jax.random.key(0), seeds)
  states = programs.init(config, keys)
  states, _ = programs.chunk(config, states)  # compiles every program
  jax.block_until_ready(states)
  n = seeds * config.num_envs
  steps = updates * config.num_steps
  rows = {"random": [], "bare": [], "collect": [], "train": []}
  for _ in range(repeats):
    rows["random"].append(random_steps_per_s(env_id, n, steps))
    rows["bare"].append(bare_steps_per_s(env_id, n, steps))
    start = time.perf_counter()
    for _ in range(updates):
      trajectory, states = programs.rollout(config, states)
    jax.block_until_ready((trajectory, states))
    rows["collect"].append(steps * n / (time.perf_counter() - start))
    start = time.perf_counter()
    states, metrics = programs.chunk(config, states)
    jax.block_until_ready((states, metrics))
    rows["train"].append(steps * n / (time.perf_counter() - start))
  programs.close()
  med = {k: statistics.median(v) for k, v in rows.items()}
  if compiled:
    med["compiled"] = compiled_steps_per_s(algo, env_id, seeds, updates,
                                           repeats)
  return dict(algo=algo, env=env_id, seeds=seeds, num_envs=config.num_envs,
              num_steps=config.num_steps, **{f"{k}_steps_per_s": v
                                             for k, v in med.items()},
              collect_vs_random=med["collect"] / med["random"],
              train_vs_random=med["train"] / med["random"],
              collect_vs_bare=med["collect"] / med["bare"],
              **({"compiled_vs_random": med["compiled"] / med["random"]}
                 if compiled else {}))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=ENVS)
  parser.add_argument("--algos", nargs="+", default=["ppo", "trpo"],
                      choices=sorted(CONFIGS))
  parser.add_argument("--seeds", nargs="+", type=int, default=[1, 4])
  parser.add_argument("--updates", type=int, default=4,
                      help="updates per timed chunk (default 4)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--compiled", action="store_true",
                      help="also train the task compiled with MJX")
  parser.add_argument("--json", default=None, help="also write the figures")
  args = parser.parse_args()
  if min(args.seeds + [args.updates, args.repeats]) < 1:
    parser.exit(2, "host_throughput.py: --seeds, --updates and --repeats "
                   "must be at least 1\n")
  if args.compiled:
    try:
      importlib.import_module("jaxrl_align.envs.mujoco_tasks")
    except ImportError:
      parser.exit(2, "host_throughput.py: --compiled needs mujoco-mjx "
                     "(pip install 'jaxrl_align[mjx]')\n")
  compiler.unroll_threefry_on_cpu()  # as the command does
  print(f"{platform.processor() or platform.machine()}, JAX "
        f"{jax.__version__} on {jax.devices()[0].platform}; median of "
        f"{args.repeats}")
  extra = (" compiled | compiled / random |", " ---: | ---: |") if (
      args.compiled) else ("", "")
  print("| algo | task | seeds x envs | random (steps/s) | bare | collect "
        "| train | collect / random | train / random | collect / bare |"
        + extra[0])
  print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        + extra[1])
  results = []
  for algo in args.algos:
    for env_id in args.envs:
      for seeds in args.seeds:
        r = measure(algo, env_id, seeds, args.updates, args.repeats,
                    args.compiled)
        results.append(r)
        compiled = (f" {r['compiled_steps_per_s']:,.0f} | "
                    f"{r['compiled_vs_random']:.2f}x |" if args.compiled
                    else "")
        print(f"| {algo} | {env_id} | {seeds} x {r['num_envs']} | "
              f"{r['random_steps_per_s']:,.0f} | "
              f"{r['bare_steps_per_s']:,.0f} | "
              f"{r['collect_steps_per_s']:,.0f} | "
              f"{r['train_steps_per_s']:,.0f} | "
              f"{r['collect_vs_random']:.2f}x | "
              f"{r['train_vs_random']:.2f}x | "
              f"{r['collect_vs_bare']:.2f}x |{compiled}", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
