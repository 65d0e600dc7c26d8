"""compiler.threefry2x32 and unroll_threefry_on_cpu: the straight-line
Threefry-2x32 gives Random123's known answers and a NumPy loop's bits;
JAX's draws and a PPO run are bit-identical with JAX's own (looped) CPU
lowering and with ours, which leaves no loop in the program; a hash with
a wrong rotation schedule fails the same checks."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_align import compiler

U32 = np.uint32
MASK = 0xFFFFFFFF

# Random123's kat_vectors for threefry2x32_20: (key, counter) -> output.
KNOWN = [((0x00000000, 0x00000000), (0x00000000, 0x00000000),
          (0x6B200159, 0x99BA4EFE)),
         ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
          (0x1CB996FC, 0xBB002BE7)),
         ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3),
          (0xC4923A9C, 0x483DF7A0))]


def numpy_threefry(k1, k2, x1, x2, rotations=((13, 15, 26, 6),
                                              (17, 29, 16, 24))):
  """Threefry-2x32-20 element by element in Python integers mod 2^32."""
  k1, k2, x1, x2 = np.broadcast_arrays(*(np.asarray(v, np.uint64)
                                         for v in (k1, k2, x1, x2)))
  out1, out2 = np.empty(k1.shape, np.uint64), np.empty(k1.shape, np.uint64)
  for idx in np.ndindex(k1.shape):
    ks = [int(k1[idx]), int(k2[idx])]
    ks.append(ks[0] ^ ks[1] ^ 0x1BD11BDA)
    a, b = (int(x1[idx]) + ks[0]) & MASK, (int(x2[idx]) + ks[1]) & MASK
    for i in range(5):
      for r in rotations[i % 2]:
        a = (a + b) & MASK
        b = (((b << r) | (b >> (32 - r))) & MASK) ^ a
      a = (a + ks[(i + 1) % 3]) & MASK
      b = (b + ks[(i + 2) % 3] + i + 1) & MASK
    out1[idx], out2[idx] = a, b
  return out1.astype(U32), out2.astype(U32)


@pytest.mark.parametrize("key,counter,expected", KNOWN)
def test_known_answers(key, counter, expected):
  args = [jnp.asarray(v, jnp.uint32) for v in (*key, *counter)]
  for fn in (compiler.threefry2x32, jax.jit(compiler.threefry2x32)):
    assert tuple(int(v) for v in fn(*args)) == expected
  assert tuple(int(v) for v in numpy_threefry(*key, *counter)) == expected


def test_against_numpy_loop_with_broadcasting_and_vmap():
  rng = np.random.default_rng(0)
  k1 = rng.integers(0, 2**32, (3, 1), dtype=np.uint64).astype(U32)
  k2 = rng.integers(0, 2**32, (3, 1), dtype=np.uint64).astype(U32)
  x1 = rng.integers(0, 2**32, (3, 5), dtype=np.uint64).astype(U32)
  x2 = rng.integers(0, 2**32, (1, 5), dtype=np.uint64).astype(U32)
  want = numpy_threefry(k1, k2, x1, x2)
  got = jax.jit(compiler.threefry2x32)(k1, k2, x1, x2)
  np.testing.assert_array_equal(np.asarray(got[0]), want[0])
  np.testing.assert_array_equal(np.asarray(got[1]), want[1])
  rows = jax.vmap(compiler.threefry2x32)(k1[:, 0], k2[:, 0], x1,
                                         np.broadcast_to(x2, x1.shape))
  np.testing.assert_array_equal(np.asarray(rows[0]), want[0])
  # A wrong rotation schedule (the two groups swapped) fails this check.
  wrong = numpy_threefry(k1, k2, x1, x2, rotations=((17, 29, 16, 24),
                                                    (13, 15, 26, 6)))
  assert not np.array_equal(wrong[0], want[0])


_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jaxrl_align import compiler
from jaxrl_align.agents import ppo
if sys.argv[1] == "unrolled":
  compiler.unroll_threefry_on_cpu()
  compiler.unroll_threefry_on_cpu()  # a second call does nothing
key = jax.random.key(7)
draw = jax.jit(lambda k: (jax.random.uniform(k, (4, 3)),
                          jax.random.categorical(k, jnp.zeros((5, 6))),
                          jax.random.key_data(jax.random.split(k, 3))))
hlo = draw.lower(key).compile().as_text()
config = ppo.PPOConfig(env_id="CartPole-v1", total_timesteps=256,
                       num_envs=4, num_steps=32, num_minibatches=2,
                       update_epochs=2)
state, metrics = jax.jit(jax.vmap(ppo.train, in_axes=(None, 0)))(
    config, jax.random.split(jax.random.key(0), 2))
leaves = jax.tree.leaves(state.params)
print(json.dumps({
    "draws": [np.asarray(x).tolist() for x in draw(key)],
    "params": [np.asarray(x).view(np.uint32).ravel()[:64].tolist()
               for x in leaves],
    "loss": np.asarray(metrics["policy_loss"]).view(np.uint32).tolist(),
    "loop": "while" in hlo}))
"""


def _run(mode):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], env=env,
                       capture_output=True, text=True, timeout=300,
                       check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_unrolled_lowering_same_bits_no_loop():
  default, unrolled = _run("default"), _run("unrolled")
  assert default["loop"] and not unrolled["loop"]
  for name in ("draws", "params", "loss"):
    assert default[name] == unrolled[name], name
