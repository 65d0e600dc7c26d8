"""PPO and TRPO training speed, side by side with rejax's PPO, in one run.

For each task (CartPole-v1 at 100k env steps, Pendulum-v1 at 200k), each
setting and each number of seeds trained in one ``vmap`` (1, 8, 32): compile
time, warm training time, aggregate env steps/s and the final mean
evaluation return, for our PPO and TRPO and for rejax 0.1.3's PPO. Our PPO
runs twice: on one device (``ppo``) and as ``jaxrl-align train`` runs it by
default (``ppo-cores``: the process has one CPU device per core, as the
command makes, and the seeds are spread over as many as divide them; one
seed stays on one device). rejax runs on one device, as its users run it.
Ours use the straight-line CPU lowering of JAX's random hash, as the
command does (``compiler.unroll_threefry_on_cpu``: the same bits);
``--rolled-threefry`` keeps JAX's own looped one, for comparison.

Settings (``--settings``): ``preset`` is our PPO preset for the task;
``rejax`` is rejax's published CartPole PPO configuration (5 envs x 100
steps, 5 epochs of 5 minibatches). In both, rejax's PPO and ours run the same
hyperparameters, the same 64-64 tanh actor and critic, value clipping on
(rejax always clips values) and no learning-rate annealing (rejax has none).
What still differs: rejax clips each gradient element at ``max_grad_norm``
where we clip the global norm, and it steps actor and critic with two Adam
optimisers. TRPO always runs its own preset (the speed target compares it
to our PPO).

Ours compile with ``agents.compiler_options()`` (on CPU, LLVM optimisation
level 1), as our runner does; rejax with its own ``jax.jit`` defaults, as
its users would. The rejax row also says how long rejax takes to compile
with our options, so the reader can separate the option from the program.

rejax 0.1.3 breaks on gymnax 1.x (six-value ``step``), so it runs in its own
virtual environment with ``gymnax==0.0.9``: ``make bench-learners`` creates
``.venv-rejax`` and runs this script; or pass ``--rejax-python PATH``.

Usage: ``python benchmarks/learners.py [--seeds 1 8 32] [--envs ...]
[--settings preset rejax] [--rejax-python .venv-rejax/bin/python]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

from jaxrl_align.host import launch

launch.one_device_per_core()  # before JAX starts: as the command does

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxrl_align import agents  # noqa: E402
from jaxrl_align import compiler  # noqa: E402
from jaxrl_align import parallel  # noqa: E402
from jaxrl_align.host import settings  # noqa: E402
from jaxrl_align.agents import ppo  # noqa: E402
from jaxrl_align.agents import trpo  # noqa: E402

import timing  # noqa: E402

STEPS = {"CartPole-v1": 100_000, "Pendulum-v1": 200_000}

# rejax's configs/gymnax/cartpole.yaml (PPO), as PPOConfig fields.
REJAX_SETTINGS = {"CartPole-v1": dict(
    num_envs=5, num_steps=100, update_epochs=5, num_minibatches=5,
    learning_rate=7.5e-4, max_grad_norm=0.5, gamma=0.99, gae_lambda=0.95,
    clip_eps=0.2, ent_coef=0.01, vf_coef=0.5)}

_REJAX_SNIPPET = r"""
import json, sys
import jax, jax.numpy as jnp
from rejax import PPO
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec.pop("benchmarks"))
from timing import compile_and_run, compile_timed
seeds = spec.pop("seeds")
options = spec.pop("compiler_options")
algo = PPO.create(**spec)
train = jax.jit(jax.vmap(algo.train))
keys = jax.random.split(jax.random.key(0), seeds)
_, compile_ours_s = compile_timed(train, keys, compiler_options=options)
(state, evaluation), compile_s, warm_s = compile_and_run(train, keys)
returns = evaluation[1]  # [seeds, evaluations, episodes]
print(json.dumps({"compile": compile_s, "compile_ours": compile_ours_s,
                  "warm": warm_s,
                  "return": float(jnp.mean(returns[:, -1]))}))
"""


def ppo_config(env_id, setting):
  """Our PPO at a benchmark setting (what rejax runs too)."""
  fields = dict(REJAX_SETTINGS[env_id]) if setting == "rejax" else {}
  fields.update(anneal_lr=False, clip_value=True)
  config = ppo.PPOConfig(env_id=env_id, total_timesteps=STEPS[env_id],
                         **fields)
  return config.replace(vf_clip_eps=config.clip_eps)


def ours(module, config, seeds, compiler_options):
  """Compile, then one timed run (the first call of the compiled program).

  ``compiler_options`` are what our runner compiles with
  (``agents.compiler_options()``) or ``{}`` for XLA's defaults.
  """
  keys = jax.random.split(jax.random.key(0), seeds)
  train = jax.jit(jax.vmap(module.train, in_axes=(None, 0)),
                  compiler_options=compiler_options)
  (states, _), compile_s, warm_s = timing.compile_and_run(train, config,
                                                          keys)
  returns = jax.jit(jax.vmap(lambda s, k: module.evaluate(config, s, k, 16)))(
      states, jax.random.split(jax.random.key(1), seeds))
  return {"compile": compile_s, "warm": warm_s,
          "return": float(np.mean(returns))}


def ours_cores(module, config, seeds, compiler_options):
  """:func:`ours` as ``jaxrl-align train`` runs it by default: the seeds
  spread over one CPU device per core, as many as divide them
  (``settings.spread``; one seed: one device)."""
  d = settings.spread(seeds)
  keys = jax.random.split(jax.random.key(0), seeds)
  with jax.set_mesh(parallel.mesh(seeds=d)):
    train = jax.jit(parallel.vmap_seeds(module.train, in_axes=(None, 0)),
                    compiler_options=compiler_options)
    (states, _), compile_s, warm_s = timing.compile_and_run(train, config,
                                                            keys)
    returns = jax.jit(parallel.vmap_seeds(
        lambda s, k: module.evaluate(config, s, k, 16)))(
            states, jax.random.split(jax.random.key(1), seeds))
  return {"compile": compile_s, "warm": warm_s, "devices": d,
          "return": float(np.mean(returns))}


def rejax_ppo(python, config, seeds):
  spec = dict(
      env=config.env_id, total_timesteps=config.total_timesteps,
      num_envs=config.num_envs, num_steps=config.num_steps,
      num_epochs=config.update_epochs, num_minibatches=config.num_minibatches,
      learning_rate=float(config.learning_rate), gamma=float(config.gamma),
      gae_lambda=float(config.gae_lambda), clip_eps=float(config.clip_eps),
      vf_coef=float(config.vf_coef), ent_coef=float(config.ent_coef),
      max_grad_norm=float(config.max_grad_norm),
      eval_freq=config.total_timesteps, skip_initial_evaluation=True,
      agent_kwargs={"activation": "tanh",
                    "hidden_layer_sizes": list(config.hidden)},
      seeds=seeds, compiler_options=agents.compiler_options(),
      benchmarks=os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([python, "-c", _REJAX_SNIPPET, json.dumps(spec)],
                       capture_output=True, text=True, check=False)
  if out.returncode:
    return {"error": out.stderr.strip().splitlines()[-1]}
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8, 32])
  parser.add_argument("--envs", nargs="+", default=list(STEPS))
  parser.add_argument("--settings", nargs="+", default=["preset", "rejax"],
                      choices=["preset", "rejax"])
  parser.add_argument("--rejax-python", default=".venv-rejax/bin/python")
  parser.add_argument("--rows", default="rejax,ppo,ppo-cores,trpo",
                      help="which learners to run (comma-separated)")
  parser.add_argument("--json", default=None, help="also write the figures")
  parser.add_argument("--rolled-threefry", action="store_true",
                      help="keep JAX's own CPU lowering of the random hash "
                           "(the command unrolls it)")
  args = parser.parse_args()
  if not args.rolled_threefry:
    compiler.unroll_threefry_on_cpu()  # as the command does
  wanted = set(args.rows.split(","))
  unknown = wanted - {"rejax", "ppo", "ppo-cores", "trpo"}
  if unknown:
    parser.error(f"unknown rows {sorted(unknown)}")
  results = []
  have_rejax = os.path.exists(args.rejax_python) and "rejax" in wanted
  print(f"JAX {jax.__version__} on {jax.default_backend()}, "
        f"{platform.machine()}, {os.cpu_count()} cores; rejax: "
        f"{args.rejax_python if have_rejax else 'not found (make bench-learners)'}"
        f"; ours with JAX's random hash "
        f"{'looped (JAX on CPU)' if args.rolled_threefry else 'unrolled'}")
  print(f"{'task':12s} {'setting':7s} {'seeds':>5s} {'learner':9s} "
        f"{'compile':>8s} {'warm':>8s} {'steps/s':>10s} {'return':>8s}  "
        f"vs rejax PPO")
  for env_id in args.envs:
    for setting in args.settings:
      if setting == "rejax" and env_id not in REJAX_SETTINGS:
        continue
      config = ppo_config(env_id, setting)
      for seeds in args.seeds:
        rows = {}
        if have_rejax:
          rows["rejax"] = rejax_ppo(args.rejax_python, config, seeds)
        options = agents.compiler_options()
        if "ppo" in wanted:
          rows["ppo"] = ours(ppo, config, seeds, options)
        if "ppo-cores" in wanted:
          rows["ppo-cores"] = ours_cores(ppo, config, seeds, options)
        if setting == "preset" and "trpo" in wanted:
          rows["trpo"] = ours(
              trpo, trpo.TRPOConfig(env_id=env_id,
                                    total_timesteps=STEPS[env_id]), seeds,
              options)
        work = seeds * STEPS[env_id]
        for name, r in rows.items():
          head = f"{env_id:12s} {setting:7s} {seeds:5d} {name:9s}"
          if "error" in r:
            print(f"{head} failed: {r['error']}")
            continue
          rate = work / r["warm"]
          ratio = ""
          if name != "rejax" and "error" not in rows.get("rejax", {
              "error": None}):
            ratio = (f"  {rows['rejax']['warm'] / r['warm']:.2f}x steps/s, "
                     f"{r['compile'] / rows['rejax']['compile']:.2f}x "
                     f"compile")
          if name == "trpo" and "ppo" in rows:
            ratio += f"  {rows['ppo']['warm'] / r['warm']:.2f}x our PPO"
          if name == "rejax":
            ratio = (f"  (compiled with our options: "
                     f"{r['compile_ours']:.1f}s)")
          if name == "ppo-cores":
            ratio += f"  on {r['devices']} device(s)"
          print(f"{head} {r['compile']:7.1f}s {r['warm']:7.1f}s {rate:10.0f} "
                f"{r['return']:8.1f}{ratio}", flush=True)
        results.append({"env": env_id, "setting": setting, "seeds": seeds,
                         "env_steps": work, "rows": rows})
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"jax": jax.__version__, "backend": jax.default_backend(),
                 "devices": [str(d) for d in jax.devices()],
                 "machine": platform.machine(), "cores": os.cpu_count(),
                 "results": results}, f, indent=1)


if __name__ == "__main__":
  sys.exit(main())
