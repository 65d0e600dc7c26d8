"""XLA options for compiling whole training programs, and a faster CPU
lowering of JAX's random-number hash."""

from __future__ import annotations

from typing import Any

import jax
import jax.extend.random
import numpy as np
from jax.interpreters import mlir


def compiler_options(backend: str | None = None) -> dict[str, Any]:
  """XLA options for compiling whole training programs.

  On CPU, LLVM optimisation level 1 instead of XLA's default (the highest):
  measured on a 2-core x86 machine (jax 0.10.2), it compiles the PPO and
  TRPO ``train`` programs in 0.57-0.67x the time and runs them as fast
  (``benchmarks/learners.py``). The code generated differs, so float results
  may differ in the last bits from a program compiled with the defaults
  (PPO's did not, TRPO's did); each program is still deterministic. Other
  backends get no options.

  Use: ``jax.jit(jax.vmap(ppo.train, in_axes=(None, 0)),
  compiler_options=compiler_options())``.

  Args:
    backend: ``"cpu"``, ``"gpu"``, ...; the default backend when None.

  Returns:
    A dict for ``jax.jit(..., compiler_options=...)``.
  """
  if (backend or jax.default_backend()) == "cpu":
    return {"xla_backend_optimization_level": 1}
  return {}


# Threefry-2x32's rotation constants, alternating between groups of four
# rounds (Salmon et al. 2011, Table 4; JAX's `threefry2x32` uses the same).
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x, d: int):
  return (jax.lax.shift_left(x, np.uint32(d))
          | jax.lax.shift_right_logical(x, np.uint32(32 - d)))


def threefry2x32(key1, key2, x1, x2):
  """Threefry-2x32 with 20 rounds, JAX's key schedule, as straight-line
  integer arithmetic: the same bits as ``jax.extend.random.threefry_2x32``.

  Args:
    key1, key2: uint32 arrays (broadcastable), the key's two words.
    x1, x2: uint32 arrays, the counter's two words.

  Returns:
    ``(y1, y2)``, uint32 arrays of the broadcast shape.

  References:
    Salmon, Moraes, Dror and Shaw, 2011, "Parallel random numbers: as easy
    as 1, 2, 3", SC '11 (the Random123 known-answer vectors are in
    ``tests/test_compiler.py``).
  """
  ks = (key1, key2, key1 ^ key2 ^ _KEY_PARITY)
  a, b = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      a = a + b
      b = _rotate_left(b, r) ^ a
    a = a + ks[(i + 1) % 3]
    b = b + ks[(i + 2) % 3] + np.uint32(i + 1)
  return a, b


_unrolled = []


def unroll_threefry_on_cpu() -> None:
  """Lowers JAX's Threefry hash on CPU as straight-line code, for every
  program compiled after the call (in this process).

  On CPU, JAX lowers ``threefry2x32`` (behind every ``jax.random`` draw)
  to a while loop of five iterations, to keep compile times short. In an
  environment rollout each step draws random numbers (the action, the
  reset state that auto-reset selects), and each iteration of that loop
  is a score of tiny XLA kernels (loop-carried copies, the rounds, the
  counter): a profile of PPO on CartPole at rejax's configuration shows
  more kernel launches in these loops than in everything else together.
  Straight-line, the 20 rounds fuse into one kernel. The bits are the same
  (:func:`threefry2x32`, tested against JAX's and the Random123 vectors),
  so every result is unchanged; measured on a 2-core x86 machine (jax
  0.10.2, ``benchmarks/learners.py``): PPO at rejax's CartPole
  configuration trains 1.13x faster with one seed, 1.05x and 1.07x with 8
  and 32 on one device, compile time unchanged; TRPO's preset as fast;
  our CartPole vector env 2.3-2.5x at 1,024 envs. Not every program
  gains: a categorical draw over 64 x 1,024 logits ran 1.2x slower (the
  hash alone 4x faster at that size) and gymnax's own vmapped ``step``
  1.4-1.9x slower, causes not found, while the language-model RL
  iteration, which samples so, measured the same either way. The
  ``jaxrl-align`` command calls it; from Python, call it once before
  compiling. Other backends keep their own lowering. Calling again does
  nothing.
  """
  if _unrolled:
    return
  mlir.register_lowering(
      jax.extend.random.threefry2x32_p,
      mlir.lower_fun(threefry2x32, multiple_results=True), platform="cpu")
  _unrolled.append(True)
