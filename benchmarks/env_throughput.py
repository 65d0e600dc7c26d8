"""Environment steps per second, side by side, in one run.

* raw gymnax: ``jax.vmap(env.step)`` (gymnax 1.x's auto-resetting step, one
  key per env per step) inside ``lax.scan``;
* ours: :func:`jaxrl_align.envs.make_vec` (auto-reset keeping the final
  observation, episode statistics) inside ``lax.scan``;
* ours over every core: the same, the environments split over one CPU
  device per core (as many as divide their number), as the command makes;
* Gymnasium ``make_vec(..., "sync")`` (a Python loop over envs) and
  ``make_vec(..., "vector_entry_point")`` (its NumPy-vectorised
  implementation, where the task has one).

Each figure is the median of 7 timed runs, the implementations timed in
alternation. Every implementation gets the same deterministic action pattern
(``(t + i) % num_actions``, or a sine for continuous tasks), so what is timed
is the environment. JAX compile time is reported apart from the run. The
JAX columns use the straight-line CPU lowering of JAX's random hash, as the
command does (``compiler.unroll_threefry_on_cpu``, the same bits), unless
``--rolled-threefry``.

Usage: ``python benchmarks/env_throughput.py [--env CartPole-v1]
[--sizes 1 8 1024 4096] [--no-gymnasium] [--rolled-threefry]
[--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from jaxrl_align.host import launch

launch.one_device_per_core()  # before JAX starts: as the command does

import gymnasium  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from gymnax.environments import spaces  # noqa: E402

from jaxrl_align import compiler  # noqa: E402
from jaxrl_align import envs  # noqa: E402
from jaxrl_align import parallel  # noqa: E402
from jaxrl_align.envs import registry  # noqa: E402
from jaxrl_align.host import settings  # noqa: E402


def _action(space, t, n):
  """The deterministic action batch at step ``t`` (JAX or NumPy)."""
  xp = jnp if isinstance(t, jax.Array) else np
  i = xp.arange(n)
  if isinstance(space, (spaces.Discrete, gymnasium.spaces.Discrete)):
    return ((t + i) % int(space.n)).astype(xp.int32)
  return xp.sin(0.1 * (t + i)).astype(xp.float32)[:, None]


REPEATS = 7


def _compile(scan_fn, init, steps, n):
  """Compiles; returns (compile seconds, a timed callable, env steps per call)."""
  start = time.perf_counter()
  compiled = jax.jit(scan_fn).lower(init).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(init))  # warm
  return compile_s, lambda: jax.block_until_ready(compiled(init)), steps * n


def _interleaved_rates(runs):
  """Median env steps/s of each callable, timed in alternation so that the
  machine's drifts hit every implementation alike."""
  times = {name: [] for name in runs}
  for _ in range(REPEATS):
    for name, (fn, _) in runs.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: runs[name][1] / float(np.median(t)) for name, t in
          times.items()}


def bench_raw_gymnax(env_id, n, steps):
  env, params = registry.make_gymnax(env_id)
  space = env.action_space(params)
  keys = jax.random.split(jax.random.key(0), n)
  with registry.foreign_numerics():
    _, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)

  def run(init):
    def body(carry, t):
      state, key = carry
      key, sub = jax.random.split(key)
      with registry.foreign_numerics():
        obs, state, reward, *_ = jax.vmap(
            env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(sub, n), state, _action(space, t, n), params)
      return (state, key), reward.sum()
    return jax.lax.scan(body, init, jnp.arange(steps))[1].sum()

  return _compile(run, (state, jax.random.key(1)), steps, n)


def bench_ours(env_id, n, steps):
  venv, params = envs.make_vec(env_id, n)
  space = venv.action_space(params)
  _, state = venv.reset(jax.random.key(0), params)

  def run(init):
    def body(carry, t):
      state, key = carry
      key, sub = jax.random.split(key)
      obs, state, reward, *_ = venv.step(sub, state, _action(space, t, n),
                                         params)
      return (state, key), reward.sum()
    return jax.lax.scan(body, init, jnp.arange(steps))[1].sum()

  return _compile(run, (state, jax.random.key(1)), steps, n)


def bench_ours_cores(env_id, n, steps):
  """:func:`bench_ours` with the environments split over one CPU device
  per core (as many as divide ``n``; the process has one per core, as the
  command makes): each device steps its share, and each environment's
  rewards are summed where it lives (no reduction across devices until
  the end). ``(compile seconds, callable, env steps, devices)``."""
  d = settings.spread(n)
  mesh = parallel.mesh(data=d)
  venv, params = envs.make_vec(env_id, n)
  space = venv.action_space(params)
  _, state = venv.reset(jax.random.key(0), params)

  def run(init):
    def body(carry, t):
      state, key, total = carry
      key, sub = jax.random.split(key)
      obs, state, reward, *_ = venv.step(
          sub, state, parallel.shard_batch(_action(space, t, n)), params)
      state = parallel.shard_batch(state, size=n)
      return (state, key, parallel.shard_batch(total + reward)), None
    total = parallel.shard_batch(jnp.zeros((n,), jnp.float32))
    init = (parallel.shard_batch(init[0], size=n), init[1], total)
    return jax.lax.scan(body, init, jnp.arange(steps))[0][2].sum()

  with jax.set_mesh(mesh):
    compile_s, fn, work = _compile(run, (state, jax.random.key(1)), steps, n)

  def timed():
    with jax.set_mesh(mesh):
      return fn()
  return compile_s, timed, work, d


def bench_gymnasium(env_id, n, steps, mode):
  """A callable stepping Gymnasium's vector env ``steps`` times, or None."""
  try:
    venv = gymnasium.make_vec(env_id, n, vectorization_mode=mode)
  except Exception:  # no NumPy-vectorised implementation of this task
    return None
  venv.reset(seed=0)
  space = venv.single_action_space
  discrete = isinstance(space, gymnasium.spaces.Discrete)
  actions = [_action(space, t, n) for t in range(steps)]
  actions = [a.astype(np.int64) if discrete else a for a in actions]

  def run():
    for a in actions:
      venv.step(a)

  run()  # warm
  return run, steps * n


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--env", default="CartPole-v1", choices=envs.ENV_IDS)
  parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 1024, 4096])
  parser.add_argument("--env-steps", type=int, default=4_000_000,
                      help="approximate env steps per JAX measurement")
  parser.add_argument("--no-gymnasium", action="store_true",
                      help="skip Gymnasium's host envs (large sizes)")
  parser.add_argument("--json", default=None, help="also write the figures")
  parser.add_argument("--rolled-threefry", action="store_true",
                      help="keep JAX's own CPU lowering of the random hash "
                           "(the command unrolls it)")
  args = parser.parse_args()
  if not args.rolled_threefry:
    compiler.unroll_threefry_on_cpu()  # as the command does (the same bits)
  results = []
  print(f"{args.env}: env steps/s (M = million), JAX {jax.__version__} on "
        f"{jax.default_backend()}, {platform.machine()}, gymnasium "
        f"{gymnasium.__version__}")
  header = (f"{'envs':>6s} {'raw gymnax':>16s} {'ours':>16s} {'ours/gymnax':>12s}"
            f" {'gymnasium sync':>15s} {'gymnasium numpy':>16s} "
            f"{'ours/numpy':>11s} {'ours, every core':>22s} "
            f"{'cores/numpy':>12s}")
  print(header)
  for n in args.sizes:
    steps = int(min(20_000, max(200, args.env_steps // n)))
    g_compile, g_fn, g_work = bench_raw_gymnax(args.env, n, steps)
    o_compile, o_fn, o_work = bench_ours(args.env, n, steps)
    c_compile, c_fn, c_work, c_devices = bench_ours_cores(args.env, n, steps)
    host_steps = int(max(20, min(2000, 200_000 // n)))
    runs = {"gymnax": (g_fn, g_work), "ours": (o_fn, o_work),
            "cores": (c_fn, c_work)}
    for name, mode in (() if args.no_gymnasium else (
        ("sync", "sync"), ("numpy", "vector_entry_point"))):
      run = bench_gymnasium(args.env, n, host_steps, mode)
      if run is not None:
        runs[name] = run
    rate = _interleaved_rates(runs)
    fmt = lambda r: f"{r / 1e6:9.3f}M" if r is not None else "      n/a"
    np_rate = rate.get("numpy")
    ratio = f"{rate['ours'] / np_rate:10.2f}x" if np_rate else "        n/a"
    print(f"{n:6d} {fmt(rate['gymnax'])} ({g_compile:3.1f}s) "
          f"{fmt(rate['ours'])} ({o_compile:3.1f}s) "
          f"{rate['ours'] / rate['gymnax']:11.2f}x "
          f"{fmt(rate.get('sync')):>15s} {fmt(np_rate):>16s} {ratio} "
          f"{fmt(rate['cores'])} ({c_devices} dev., {c_compile:3.1f}s) "
          + (f"{rate['cores'] / np_rate:11.2f}x" if np_rate else "n/a"))
    results.append({"envs": n, "steps_per_second": rate,
                    "compile_seconds": {"gymnax": g_compile,
                                        "ours": o_compile,
                                        "cores": c_compile},
                    "cores_devices": c_devices})
  print("(compile time in brackets; run time excludes it)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"env": args.env, "jax": jax.__version__,
                 "backend": jax.default_backend(),
                 "devices": [str(d) for d in jax.devices()],
                 "machine": platform.machine(), "results": results}, f,
                indent=1)


if __name__ == "__main__":
  main()
