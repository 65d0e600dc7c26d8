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


# The files that take minutes, measured (one process, 2 cores): the RLHF
# commands on the small pipeline ~4.5 min, the learning tests ~5, the 1/2/8
# device runs ~4, the RLHF optimum tests ~4, then the next longest. `make
# test` spreads whole files over two processes (pytest-xdist, `--dist
# loadfile --no-loadscope-reorder`), handing the next file to whichever is
# free: run in this order, the longest first, the two finish together
# instead of one starting a long file as the other runs out of work.
LONGEST_FIRST = ("tests/test_rlhf_commands.py", "tests/test_learning.py",
                 "tests/test_parallel.py", "tests/test_rlhf_rl.py",
                 "tests/test_rlhf_grpo.py", "tests/test_trpo.py",
                 "tests/test_experiment.py", "tests/test_ppo.py",
                 "tests/test_rlhf_dpo.py", "notebooks/")


def pytest_collection_modifyitems(config, items):
  """The files of :data:`LONGEST_FIRST` first, in that order; the others
  after them as collected (a stable sort: tests keep their order within a
  file)."""
  del config

  def rank(item):
    return next((i for i, prefix in enumerate(LONGEST_FIRST)
                 if item.nodeid.startswith(prefix)), len(LONGEST_FIRST))

  items.sort(key=rank)
