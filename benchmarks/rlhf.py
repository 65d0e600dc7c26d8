"""RLHF part 1 throughput on this machine, at the default sizes.

Pretraining tokens/s (one ``sft.step`` on 32 x 128 tokens); generation
tokens/s for a batch of 64 prompts of 16 tokens and 48 new tokens, with the
key-value cache (``generation.generate``) and without it (every step runs
the whole fixed-length sequence, the usual cache-free way under ``jit``);
reward-model pairs/s (one ``reward_model.step`` on 32 pairs of 49 tokens,
with the default dropout and without, interleaved);
peak resident memory of the process. Weights are random: speed does not
depend on them. Compile time is excluded (each program runs once first).

Usage: ``python benchmarks/rlhf.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import resource
import time

import jax
import jax.numpy as jnp

from jaxrl_align.rlhf import generation
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import reward_model
from jaxrl_align.rlhf import sft

VOCAB = 1024


def timed(fn, *args, repeats):
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def generate_uncached(apply_fn, params, prompt, prompt_mask, key, *,
                      max_new_tokens):
  """Sampling without a cache: each step runs the model over the whole
  ``[B, P + N]`` buffer (fixed shape) and reads the next position."""
  b, p = prompt.shape
  n = max_new_tokens
  tokens = jnp.concatenate([prompt, jnp.zeros((b, n), prompt.dtype)], 1)
  mask = jnp.concatenate([prompt_mask, jnp.zeros((b, n), bool)], 1)

  def _step(carry, inputs):
    tokens, mask = carry
    t, step_key = inputs
    logits, _, _ = apply_fn(params, tokens, mask)
    last = jax.lax.dynamic_index_in_dim(logits, p + t - 1, axis=1,
                                        keepdims=False)
    token = jax.random.categorical(step_key, last).astype(tokens.dtype)
    tokens = jax.lax.dynamic_update_index_in_dim(tokens, token, p + t, 1)
    mask = jax.lax.dynamic_update_index_in_dim(mask, jnp.ones((b,), bool),
                                               p + t, 1)
    return (tokens, mask), None

  (tokens, _), _ = jax.lax.scan(
      _step, (tokens, mask), (jnp.arange(n), jax.random.split(key, n)))
  return tokens


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  config = model_lib.TransformerConfig(vocab_size=VOCAB)
  print(f"JAX {jax.__version__} on {jax.default_backend()}, "
        f"{platform.machine()}, {os.cpu_count()} cores; model: "
        f"{config.num_layers} layers, width {config.width}, context "
        f"{config.max_len}, vocab {VOCAB}")
  key = jax.random.key(0)
  sft_config = sft.SFTConfig(model=config)
  tokens = jax.random.randint(key, (32, config.max_len), 0, VOCAB)
  mask = jnp.ones(tokens.shape, bool)
  state = sft.init(sft_config, key, sft.SFTData(tokens, tokens))
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  print(f"parameters: {n_params:,}")

  step = jax.jit(functools.partial(sft.step, sft_config))
  t = timed(step, state, tokens, mask, repeats=args.repeats)
  print(f"pretraining: {tokens.size / t:,.0f} tokens/s "
        f"({t * 1e3:.0f} ms per step of 32 x {config.max_len})")

  apply_fn = model_lib.Transformer(config).apply
  prompt = jax.random.randint(key, (64, 16), 2, VOCAB)
  prompt_mask = jnp.ones(prompt.shape, bool)
  n = 48
  cached = jax.jit(lambda p, k: generation.generate(
      apply_fn, p, config, prompt, prompt_mask, k, max_new_tokens=n).response)
  uncached = jax.jit(lambda p, k: generate_uncached(
      apply_fn, p, prompt, prompt_mask, k, max_new_tokens=n))
  t_cached = timed(cached, state.params, key, repeats=args.repeats)
  t_uncached = timed(uncached, state.params, key, repeats=args.repeats)
  print(f"generation, batch 64, 16 + {n} tokens: with cache "
        f"{64 * n / t_cached:,.0f} tokens/s, without "
        f"{64 * n / t_uncached:,.0f} tokens/s "
        f"({t_uncached / t_cached:.1f}x faster with the cache)")

  pair = jax.random.randint(key, (32, 49), 2, VOCAB)
  pair_mask = jnp.ones(pair.shape, bool)
  rm_steps = {}
  for dropout in (0.1, 0.0):  # the default, and without dropout
    rm_config = reward_model.RMConfig(model=config, dropout=dropout)
    opt_state = reward_model.optimizer(rm_config).init(state.params)
    rm_steps[dropout] = functools.partial(
        jax.jit(functools.partial(reward_model.step, rm_config)),
        state.params, opt_state, pair, pair_mask, pair, pair_mask, key)
  times = {d: float("inf") for d in rm_steps}
  for _ in range(args.repeats):  # interleaved, so drift hits both alike
    for d, fn in rm_steps.items():
      times[d] = min(times[d], timed(fn, repeats=1))
  print(f"reward model: {32 / times[0.1]:,.0f} pairs/s with dropout 0.1 "
        f"(the default), {32 / times[0.0]:,.0f} without (32 pairs of 49 "
        f"tokens per step, {times[0.1] * 1e3:.0f} / {times[0.0] * 1e3:.0f} "
        f"ms)")
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"peak resident memory: {peak:,.0f} MB")


if __name__ == "__main__":
  main()
