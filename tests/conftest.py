"""Test-wide JAX settings: strict dtype and rank promotion, as in equinox.

Strict rank promotion turns the classic ``[B, 1]`` against ``[B]`` bug into an
error; strict dtype promotion catches silent float64/float32 mixing.
"""

import gc
import os

import hypothesis
import jax
import pytest

# scripts that test_parallel.py runs in subprocesses (8 forced devices)
collect_ignore = ["parallel_checks.py", "multihost_checks.py"]

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

# jit compiles on the first example, so no per-example deadline. In CI the
# examples are derandomised so a run is reproducible.
hypothesis.settings.register_profile(
    "default", deadline=None, max_examples=40, print_blob=True)
hypothesis.settings.register_profile(
    "ci", deadline=None, max_examples=40, derandomize=True, print_blob=True,
    database=None)
hypothesis.settings.load_profile("ci" if os.environ.get("CI") else "default")


def release_compiled_programs(limit: int = 30_000) -> None:
  """Drops JAX's compiled programs when this process holds more than
  ``limit`` memory mappings. Each compiled XLA CPU training program keeps
  about 700 until its cache entry goes; the whole suite in one process
  would pass the kernel's limit (vm.max_map_count, 65,530) and crash inside
  LLVM (measured: a segfault or abort while compiling, near the end)."""
  try:
    with open("/proc/self/maps") as f:
      count = sum(1 for _ in f)
  except OSError:  # not Linux: no such limit to watch
    return
  if count > limit:
    from jaxrl_align.host import programs

    programs.compiled.cache_clear()
    jax.clear_caches()
    gc.collect()


@pytest.fixture(autouse=True)
def _release_compiled_programs():
  yield
  release_compiled_programs()
