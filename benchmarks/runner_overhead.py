"""What the runner costs: ``runner.run`` against the bare ``train``.

The same config and seeds, in alternation: the pure ``jax.jit(jax.vmap(
train))`` (with the runner's compiler options; compiled once, then timed) and
``runner.run`` (chunks,
progress bar, metrics.jsonl, checkpoints; its programs are compiled by a
throw-away run first and cached, so both are timed warm). The runner's time
is its training loop (``wall_seconds_this_session`` in ``summary.json``);
the whole run, with the final evaluation and the plot, is printed too. The
runner is timed with and without its progress bar, to show what the bar
itself costs.

Usage: ``python benchmarks/runner_overhead.py [--seeds 8] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax

from jaxrl_align import agents
from jaxrl_align.agents import ppo
from jaxrl_align.host import runner


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  config = ppo.PPOConfig(env_id="CartPole-v1", total_timesteps=100_000)
  keys = jax.random.split(jax.random.key(0), args.seeds)
  train = jax.jit(jax.vmap(ppo.train, in_axes=(None, 0)),
                  compiler_options=agents.compiler_options()).lower(
      config, keys).compile()
  settings = runner.RunnerSettings(seeds=args.seeds)
  with tempfile.TemporaryDirectory() as tmp:
    runner.run("ppo", config, os.path.join(tmp, "warm"), settings,
                   progress=False)
    bare, shown, quiet = [], [], []
    for i in range(args.repeats):
      start = time.perf_counter()
      jax.block_until_ready(train(config, keys))
      bare.append(time.perf_counter() - start)
      for progress, times in ((True, shown), (False, quiet)):
        out = os.path.join(tmp, f"run{i}-{progress}")
        start = time.perf_counter()
        runner.run("ppo", config, out, settings, progress=progress)
        total = time.perf_counter() - start
        with open(os.path.join(out, "summary.json")) as f:
          times.append(json.load(f)["wall_seconds_this_session"])
      print(f"repeat {i}: bare train {bare[-1]:.2f} s, runner training loop "
            f"{shown[-1]:.2f} s with the progress bar, {quiet[-1]:.2f} s "
            f"without (last whole run incl. evaluation and plot "
            f"{total:.2f} s)", flush=True)
  print(f"CartPole-v1 PPO preset, {args.seeds} seeds, "
        f"{config.num_updates} updates in chunks of "
        f"{runner.default_chunk(config.num_updates)} (best of "
        f"{args.repeats}): runner / bare = {min(shown) / min(bare):.3f}; "
        f"progress bar on / off = {min(shown) / min(quiet):.3f}")


if __name__ == "__main__":
  main()
