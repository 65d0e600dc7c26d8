"""The one measurement every benchmark of a compiled training program takes:
compile it, then time its first run.

It imports nothing of ours, so the peers' environments use it too (rejax's
PPO in `peers.py --worker` and in `learners.py`'s subprocess).
"""

from __future__ import annotations

import time

import jax


def compile_timed(jitted, *args, compiler_options=None):
  """``(compiled, compile_s)``: a ``jax.jit`` function traced, lowered and
  compiled for ``args``, and the seconds that took.

  Args:
    jitted: a ``jax.jit``-wrapped function.
    *args: its arguments.
    compiler_options: XLA options for this compilation (``None``: the
      ones given to ``jax.jit``, else XLA's defaults).
  """
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  compiled = (lowered.compile() if compiler_options is None
              else lowered.compile(compiler_options=compiler_options))
  return compiled, time.perf_counter() - start


def compile_and_run(jitted, *args, compiler_options=None):
  """``(outputs, compile_s, warm_s)``: :func:`compile_timed`, then one call
  of the compiled program, timed until every output is ready (nothing is
  compiled or cached in it)."""
  compiled, compile_s = compile_timed(jitted, *args,
                                      compiler_options=compiler_options)
  start = time.perf_counter()
  outputs = jax.block_until_ready(compiled(*args))
  return outputs, compile_s, time.perf_counter() - start
