"""XLA options for compiling whole training programs."""

from __future__ import annotations

from typing import Any

import jax


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
