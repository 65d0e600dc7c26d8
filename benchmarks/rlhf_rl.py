"""RLHF part 2 throughput: one PPO and one TRPO iteration on the language
model, phase by phase, at the default sizes.

The default transformer (4 layers, width 128, vocabulary 1,024) as policy,
reference, critic and reward model, with random weights (speed does not
depend on them; the stop token is never forced, so responses run to their
full length as most of the reference's do); 64 prompts of 16 tokens, 48-token
responses. Phases, each its own compiled program timed alone: generation
(the cached sampler, which also gives the policy's log-probabilities),
the policy's log-probabilities by a forward pass (only with
``behaviour_log_probs="forward"``), the reference's log-probabilities,
the reward model's score, the critic's values, the arithmetic after the
rollout, and the update (PPO: 4 epochs of one minibatch over policy and
critic; TRPO: the trust-region step, then 4 critic epochs); then the whole
iteration as the learner runs it (one program), by default and with
``behaviour_log_probs="forward"``. Reported per iteration:
seconds, episodes/s, response tokens/s, TRPO's iteration over PPO's, the
update's floating-point operations (XLA's cost analysis, every loop
iteration counted) per second as a fraction of the machine's fp32 peak when
given (``--peak-tflops``), and the
peak resident memory. Compile time is excluded (each program runs once
first); the best of ``--repeats`` runs.

Usage: ``python benchmarks/rlhf_rl.py [--repeats 5] [--peak-tflops X]
[--batch 64] [--whole-only] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import jax
import jax.numpy as jnp

from jaxrl_align import fisher
from jaxrl_align.rlhf import credit
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import ppo
from jaxrl_align.rlhf import rl
from jaxrl_align.rlhf import rollout
from jaxrl_align.rlhf import trpo

VOCAB, PROMPT, RESPONSE, BATCH = 1024, 16, 48, 64


def timed(fn, *args, repeats):
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def flops(fn, *args) -> float | None:
  """XLA's count for one call of ``fn``, which counts the body of every
  loop (``scan``, ``while_loop``) once, whatever its trip count."""
  try:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  except Exception:  # noqa: BLE001  (not every backend reports costs)
    return None
  if isinstance(cost, list):
    cost = cost[0] if cost else {}
  return float(cost.get("flops", 0.0)) or None


def update_flops(name, config, state, exp, key) -> float | None:
  """The update's floating-point operations, every loop iteration counted.

  XLA counts a loop's body once, so each loop is counted from loop-free
  programs: an epoch (one pass over the whole batch, whatever the
  minibatches) times the epochs; for TRPO the step with one conjugate-
  gradient iteration and one line-search trial, plus the further
  iterations and trials this step ran, each a Fisher-vector product or a
  surrogate-and-KL evaluation.
  """
  one_epoch = config.replace(epochs=1, num_minibatches=1)
  if name == "ppo":
    epoch = flops(lambda s, e, k: ppo.ALGORITHM.learn(one_epoch, s, e, k),
                  state, exp, key)
    return epoch and epoch * config.epochs
  value = flops(lambda s, e, k: trpo.value_step(
      one_epoch, s.params, s.critic, s.opt_state, e, k, 1e-4), state, exp, key)
  step = flops(lambda p, e: trpo.policy_step(config, p, e), state.params, exp)
  _, info = jax.jit(lambda p, e: trpo.policy_step(config, p, e))(
      state.params, exp)

  def fvp(p, e):
    _, kl, fisher_kl = trpo.objectives(config, p, e)
    return fisher.fisher_vector_product(fisher_kl or kl, p, p)

  def trial(p, e):
    surrogate, kl, _ = trpo.objectives(config, state.params, e)
    return surrogate(p), kl(p)

  product, evaluation = flops(fvp, state.params, exp), flops(
      trial, state.params, exp)
  if None in (value, step, product, evaluation):
    return None
  return (value * config.epochs + step
          + (int(info.cg_iterations) - 1) * product
          + (max(int(info.backtracks), 1) - 1) * evaluation)


def setup(batch):
  model = model_lib.TransformerConfig(vocab_size=VOCAB)
  init = model_lib.Transformer(model).init
  params = [init(jax.random.key(i), jnp.zeros((1, 2), jnp.int32))
            for i in range(3)]
  prompts = jax.random.randint(jax.random.key(9), (4 * batch, PROMPT), 2,
                               VOCAB)
  mask = jnp.ones(prompts.shape, bool)
  data = rl.RLData(prompts, mask, prompts[:batch], mask[:batch], params[0],
                   params[1], params[2], rl.RewardModelScore(model))
  common = dict(model=model, stop_token=0, pad_token=1, batch_size=batch,
                response_length=RESPONSE, iterations=100)
  return data, {"ppo": ppo.RLHFPPOConfig(**common),
                "trpo": trpo.RLHFTRPOConfig(**common)}


def phases(name, config, data, repeats, whole_only=False):
  batch = config.batch_size
  learner = ppo.LEARNER if name == "ppo" else trpo.LEARNER
  algorithm = ppo.ALGORITHM if name == "ppo" else trpo.ALGORITHM
  state = learner.init(config, jax.random.key(0), data)
  iterate = jax.jit(lambda s, d: learner.update(config, s, d))
  if whole_only:  # one program: what an accelerator run has time for
    return {"whole iteration": timed(iterate, state, data,
                                     repeats=repeats)}, None
  prompt, pmask = data.prompts[:batch], data.prompt_mask[:batch]
  key = jax.random.key(1)
  gen = jax.jit(lambda p, t, m, k: rollout.sample(config, p, t, m, k))
  g = gen(state.params, prompt, pmask, key)
  forward = jax.jit(lambda p, t, m, r, rm: rollout.token_log_probs(
      rollout.response_outputs(config, p, t, m)[0], r, rm))
  score = jax.jit(lambda p, t, m: data.score_fn(p, t, m))
  value = jax.jit(lambda c, t, m: rollout.response_outputs(config, c, t,
                                                           m)[1])
  exp = jax.jit(lambda s, t, m, k: rollout.rollout(config, s, data, t, m,
                                                   k))(state, prompt, pmask,
                                                       key)
  arithmetic = jax.jit(lambda e, beta: credit.gae_advantages(
      config, e.scores, e.log_probs, e.ref_log_probs, e.values,
      e.response_mask, beta))
  update_fn = lambda s, e, k: algorithm.learn(config, s, e, k)  # noqa: E731
  update = jax.jit(update_fn)
  forward_config = config.replace(behaviour_log_probs="forward")
  iterate_forward = jax.jit(lambda s, d: learner.update(forward_config, s, d))
  seq = (g.tokens, g.mask)
  out = {
      "generation": timed(gen, state.params, prompt, pmask, key,
                          repeats=repeats),
      "policy log-probs": timed(forward, state.params, *seq, g.response,
                                g.response_mask, repeats=repeats),
      "reference log-probs": timed(forward, data.ref_params, *seq,
                                   g.response, g.response_mask,
                                   repeats=repeats),
      "reward model": timed(score, data.reward_params, *seq,
                            repeats=repeats),
      "critic values": timed(value, state.critic, *seq, repeats=repeats),
      "rewards and advantages": timed(arithmetic, exp, jnp.float32(0.05),
                                      repeats=repeats),
      "update": timed(update, state, exp, key, repeats=repeats),
      "whole iteration": timed(iterate, state, data, repeats=repeats),
      "whole iteration, log-probs by a policy pass": timed(
          iterate_forward, state, data, repeats=repeats)}
  return out, update_flops(name, config, state, exp, key)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="the machine's fp32 peak, for the update's "
                           "fraction of it")
  parser.add_argument("--json", default=None, help="also write the figures")
  parser.add_argument("--batch", type=int, default=BATCH,
                      help="prompts per iteration")
  parser.add_argument("--whole-only", action="store_true",
                      help="time only the whole iteration (one program "
                           "per algorithm)")
  args = parser.parse_args()
  data, configs = setup(args.batch)
  batch = args.batch
  print(f"JAX {jax.__version__} on {jax.default_backend()} "
        f"({jax.devices()[0].device_kind}), {os.cpu_count()} cores, "
        f"{platform.machine()}; {batch} prompts of {PROMPT} tokens, "
        f"{RESPONSE}-token responses")
  results = {}
  for name, config in configs.items():
    times, counted = phases(name, config, data, args.repeats,
                            args.whole_only)
    it = times["whole iteration"]
    results[name] = {
        "seconds": times, "episodes_per_second": batch / it,
        "response_tokens_per_second": batch * RESPONSE / it,
        "update_flops": counted,
        "update_tflops_per_second": (counted / times["update"] / 1e12
                                     if counted else None)}
    print(f"\n{name.upper()}: {it * 1e3:.0f} ms per iteration, "
          f"{batch / it:.1f} episodes/s, {batch * RESPONSE / it:,.0f} "
          f"response tokens/s")
    for phase, seconds in times.items():
      print(f"  {phase:24s} {seconds * 1e3:9.1f} ms")
    if counted:
      rate = counted / times["update"] / 1e12
      share = (f", {rate / args.peak_tflops:.1%} of the fp32 peak"
               if args.peak_tflops else "")
      print(f"  update: {counted / 1e9:.1f} GFLOP, {rate:.3f} "
            f"TFLOP/s{share}")
  ratio = (results["trpo"]["seconds"]["whole iteration"]
           / results["ppo"]["seconds"]["whole iteration"])
  results["trpo_over_ppo_iteration"] = ratio
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  results["peak_rss_mb"] = peak_mb
  stats = getattr(jax.devices()[0], "memory_stats", lambda: None)() or {}
  device_mb = stats.get("peak_bytes_in_use", 0) / 2 ** 20 or None
  results["peak_device_mb"] = device_mb
  print(f"\nTRPO iteration / PPO iteration: {ratio:.2f}x; peak resident "
        f"memory {peak_mb:,.0f} MB"
        + (f", peak device memory {device_mb:,.0f} MB" if device_mb else ""))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
