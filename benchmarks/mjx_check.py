"""MJX (MuJoCo in JAX) against MuJoCo's C engine on Gymnasium's models.

For issue 31's compiled path: before any environment is built on MJX,
how far its dynamics drift from the C engine that Gymnasium steps, and how
fast it steps on this machine. For each task, Gymnasium's own model
(``env.unwrapped.model``, its ``frame_skip``):

* drift: ``--trajectories`` start states drawn as Gymnasium's ``reset``
  draws them, then the same uniform random actions through both engines
  for ``--steps`` env steps (each ``frame_skip`` physics steps); the
  largest absolute difference of ``qpos`` and ``qvel`` after 1, 10, 100
  and all steps, compared while the episode lasts in both engines
  (Gymnasium's termination rule: Hopper, Walker2d, InvertedDoublePendulum;
  MJX in float32, its default; the C engine in float64), and the
  episodes that would have ended at a different step in one engine;
* speed: env steps/s of the C engine (``mj_step`` in a Python loop, one
  model) and of MJX (``jit(vmap(step))`` over a batch, physics steps
  scanned) at each ``--batch`` size.

Runs in ``.venv-mjx`` (``make bench-mjx``: mujoco-mjx 3.17.0, which
installs beside mujoco 4.0.0 and jax 0.10.2).

Usage: ``python benchmarks/mjx_check.py [--envs Hopper-v5 ...]
[--steps 200] [--trajectories 8] [--batch 1 64 1024] [--json F]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import time

import gymnasium
import jax
import jax.numpy as jnp
import mujoco
import numpy as np

try:
  with contextlib.redirect_stdout(io.StringIO()):  # its "no warp" notice
    from mujoco import mjx
except ImportError:
  import sys
  print("mjx_check.py: mujoco-mjx is not installed here; run it with "
        "`make bench-mjx` (.venv-mjx)", file=sys.stderr)
  raise SystemExit(2) from None

ENVS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Swimmer-v5",
        "InvertedDoublePendulum-v5")


def _healthy(env_id: str, qpos, site_xpos) -> bool | None:
  """Gymnasium's termination rule (v5 defaults) as "still healthy" for
  the tasks that end on it, from ``qpos`` (Hopper's state-range part also
  reads ``qvel``, far inside it here) or the pole's tip height
  (InvertedDoublePendulum); None for the tasks that never end."""
  if env_id == "Hopper-v5":
    z, angle = qpos[1], qpos[2]
    return bool(0.7 < z and -0.2 < angle < 0.2)
  if env_id == "Walker2d-v5":
    z, angle = qpos[1], qpos[2]
    return bool(0.8 < z < 2.0 and -1.0 < angle < 1.0)
  if env_id == "InvertedDoublePendulum-v5":
    return bool(site_xpos[0][2] > 1)
  return None


def drift(env_id: str, steps: int, trajectories: int) -> dict:
  """The engines' largest ``qpos``/``qvel`` gap, compared while the
  episode lasts in both (Gymnasium's rule; ``steps`` for the tasks that
  never end), and the episodes that ended at different steps."""
  env = gymnasium.make(env_id).unwrapped
  model, skip = env.model, env.frame_skip
  mx = mjx.put_model(model)
  low, high = env.action_space.low, env.action_space.high

  @jax.jit
  def mjx_steps(data, ctrl):
    data = data.replace(ctrl=ctrl)
    return jax.lax.fori_loop(0, skip, lambda _, d: mjx.step(mx, d), data)

  rng = np.random.default_rng(0)
  marks = (1, 10, 100, steps)
  worst = {k: 0.0 for k in marks}
  lasted, ended_apart, last_gap = [], [], []
  for i in range(trajectories):
    env.reset(seed=i)
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:] = env.data.qpos, env.data.qvel
    mujoco.mj_forward(model, data)
    dx = mjx.put_data(model, data)
    t, gap = 0, 0.0
    for t in range(1, steps + 1):
      a = rng.uniform(low, high).astype(np.float64)
      data.ctrl[:] = a
      mujoco.mj_step(model, data, nstep=skip)
      dx = mjx_steps(dx, jnp.asarray(a, jnp.float32))
      gap = float(max(np.abs(np.asarray(dx.qpos) - data.qpos).max(),
                      np.abs(np.asarray(dx.qvel) - data.qvel).max()))
      if t in worst:
        worst[t] = max(worst[t], gap)
      c_ok = _healthy(env_id, data.qpos, data.site_xpos)
      x_ok = _healthy(env_id, np.asarray(dx.qpos), np.asarray(dx.site_xpos))
      if c_ok != x_ok:
        ended_apart.append((i, t))
      if c_ok is False or x_ok is False:
        break
    lasted.append(t)
    last_gap.append(gap)
  return {"largest_gap_after": {str(k): v for k, v in worst.items()
                                if sum(n >= k for n in lasted)},
          "compared_for": [min(lasted), max(lasted)],
          "largest_gap_at_the_end": max(last_gap),
          "episodes_ending_apart": ended_apart}


def speed(env_id: str, batches, seconds: float = 2.0) -> dict:
  env = gymnasium.make(env_id).unwrapped
  model, skip = env.model, env.frame_skip
  data = mujoco.MjData(model)
  nu = model.nu
  ctrl = np.zeros(nu)
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    data.ctrl[:] = ctrl
    mujoco.mj_step(model, data, nstep=skip)
    n += 1
  out = {"c_engine": n / (time.perf_counter() - start)}
  mx = mjx.put_model(model)
  for batch in batches:
    d0 = jax.vmap(lambda _: mjx.make_data(mx))(jnp.arange(batch))

    @jax.jit
    def run(d):
      def body(d, _):
        return jax.vmap(lambda x: jax.lax.fori_loop(
            0, skip, lambda _, y: mjx.step(mx, y), x))(d), None
      return jax.lax.scan(body, d, None, length=10)[0]

    jax.block_until_ready(run(d0))
    n, start = 0, time.perf_counter()
    d = d0
    while time.perf_counter() - start < seconds:
      d = run(d)
      jax.block_until_ready(d)
      n += 10 * batch
    out[f"mjx_batch_{batch}"] = n / (time.perf_counter() - start)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=ENVS)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--trajectories", type=int, default=8)
  parser.add_argument("--batch", type=int, nargs="+", default=[1, 64, 1024])
  parser.add_argument("--json", default=None)
  args = parser.parse_args()
  if min(args.batch + [args.steps, args.trajectories]) < 1:
    parser.exit(2, "mjx_check.py: --steps, --trajectories and --batch must "
                   "be at least 1\n")
  print(f"{platform.processor() or platform.machine()}, mujoco "
        f"{mujoco.__version__}, JAX {jax.__version__} on "
        f"{jax.devices()[0].platform}")
  results = {}
  for env_id in args.envs:
    r = {"drift": drift(env_id, args.steps, args.trajectories),
         "steps_per_s": speed(env_id, args.batch)}
    results[env_id] = r
    d = r["drift"]
    gaps = ", ".join(f"{k} steps {v:.1e}"
                     for k, v in d["largest_gap_after"].items())
    rates = ", ".join(f"{k} {v:,.0f}" for k, v in r["steps_per_s"].items())
    print(f"{env_id}: largest |qpos, qvel| gap after {gaps} (episodes "
          f"compared for {d['compared_for'][0]}-{d['compared_for'][1]} "
          f"steps, largest gap at their end {d['largest_gap_at_the_end']:.1e}"
          f"); episodes ending apart (trajectory, step) "
          f"{d['episodes_ending_apart']}; env steps/s: {rates}", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
