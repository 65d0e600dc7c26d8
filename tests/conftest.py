"""Test-wide JAX settings: strict dtype and rank promotion, as in equinox.

Strict rank promotion turns the classic ``[B, 1]`` against ``[B]`` bug into an
error; strict dtype promotion catches silent float64/float32 mixing.
"""

import os

import hypothesis
import jax

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
