# Runs in its own virtual environment, not the project's: `make
# bench-rlhf-tunix` builds .venv-tunix (google-tunix 0.1.7 with jax 0.10.2,
# flax 0.12.8 and optax 0.2.8, the versions ours uses, and our package) and
# runs this script on every core the process may use; for one core,
# `taskset -c 0 .venv-tunix/bin/python benchmarks/rlhf_tunix.py`.

"""RLHF speed of Google's tunix 0.1.7 (JAX, Flax NNX) against ours, side by
side in one process on the CPU: tunix's ``GRPOLearner`` (with its
``RLCluster``, the vanilla rollout engine, i.e. its own JAX sampler) and
``DPOTrainer`` against :mod:`jaxrl_align.rlhf.grpo` and
:mod:`jaxrl_align.rlhf.dpo`, at the settings of ``rlhf_trl_family.py``
(whose functions build our side: the same model shape, data, config and
timing).

tunix has no GPT-2 model: its model classes (Gemma 1-4, Llama 3, Qwen 2/3)
are loaded from Hugging Face or Kaggle checkpoints in its examples, but
each takes a ``ModelConfig`` and can be built from scratch, so its Llama 3
is built at our shape with random weights (no download): 4 layers, 4 heads
of 32 (4 key-value heads), width 128, vocabulary 1,024, tied embeddings,
fp32, and a SwiGLU MLP of hidden width 341, whose three matrices have the
parameters (and matrix FLOPs) of our GPT-2 MLP's two of 128 × 512. The
policy and the reference are one such model (same seed), the reward model
a second one (another seed) with a random scalar head on the last token.
tunix's sampler and learner speak text: a word-level tokenizer (``t{id}``
is token ``id``, the stop token 0 is the eos, 1 the pad, no BOS) turns our
prompt ids into text and back, and its reward function re-tokenises prompt
and completion text and scores them with the reward model (jitted).

Settings: GRPO: 8 prompts × ``num_generations`` 8 = 64 responses per
iteration (one mini-batch, one micro-batch), 16-token prompts
(``max_prompt_length`` 16, so no padding), ``max_tokens_to_generate`` 48,
KV cache 64, temperature 1, no top-k or nucleus (top_p 1), β 0.2 with the
k3 estimator (``kl_loss_mode="low_var_kl"``) in the loss,
``num_iterations`` 1, clip ε 0.2 both sides, token-mean loss
(``loss_agg_mode="token-mean"``, TRL's and our ``dapo``), Adam at a constant
1e-4 with ε 1e-5 after a global-norm clip of 1 (optax, as ours). DPO: 64 of
our random pairs per step, given as token ids (``TrainingInput``, no text),
the sigmoid loss, β 0.1, no label smoothing, Adam at a constant 1e-6 with
ε 1e-8 after a clip of 1.

Measured: ours as ``rlhf_trl_family.run_ours`` (compile, then seconds per
jitted ``update``); tunix: seconds per iteration after ``--warmup`` (the
first includes its compiles): GRPO from the start of one
``_run_global_step`` (rollout, reference, reward, advantages, the update)
to the next, the last to its end with the parameters ready, and where it
goes (``RLCluster.generate`` with its tokenising and decoding, the
reference log-probabilities, the reward function, ``update_actor``);
DPO from the timed steps' first ``_prepare_inputs`` (the warm-up step
finished first) to the end of ``train()`` with the parameters ready
(tunix keeps up to two steps in flight). Episodes/s and response tokens/s
(GRPO), pairs/s (DPO), ours over tunix. Before each tunix loop the heap is
frozen (``gc.freeze``), as before TRL's. XLA uses every core the process
may use: run under ``taskset -c 0`` for one core.

What could not be made equal, and why:

* The architecture: tunix has no GPT-2 (learned positions, LayerNorm,
  GELU MLP); its Llama 3 at our shape has RoPE, RMSNorm and SwiGLU (same
  matrix sizes in total, see above), so the weights cannot be ours.
* tunix's GRPO works on text: prompts are tokenised, completions decoded
  (without the stop token and pads, like TRL's ``skip_special_tokens``)
  and re-tokenised by the reward function; ours samples and scores ids.
* At ``num_iterations`` 1 neither side computes the old policy's
  log-probabilities (tunix: the ratio is 1; ours: the sampler's). tunix's
  loss also computes the token entropy; ours computes the exact KL to the
  reference (from the rollout's logits) and distinct-n metrics.
* tunix's DPO computes the reference's log-probabilities in every step
  (in ``_prepare_inputs``; it has no precompute option), one more forward
  over the 2 × 64 sequences than ours and TRL's with
  ``precompute_ref_log_probs``; so it is also timed with ``ref_model=None``
  (``dpo, no reference`` row: the same work per step as ours, but the loss
  then lacks the reference terms, so it is not DPO).

Usage: ``python benchmarks/rlhf_tunix.py [--methods grpo,dpo]
[--size small|default] [--iterations 5] [--warmup 1] [--json FILE]`` in
the environment above.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # benchmarks/, the checkout

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import rlhf_trl  # noqa: E402
import rlhf_trl_family as family  # noqa: E402
import trl_common  # noqa: E402
from trl_common import PAD  # noqa: E402
from trl_common import STOP  # noqa: E402

METHODS = ("grpo", "dpo")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add = parser.add_argument
  add("--methods", default="grpo,dpo")
  add("--size", choices=tuple(family.SIZES), default="default")
  add("--iterations", type=int, default=5, help="timed iterations per side")
  add("--warmup", type=int, default=1, help="untimed iterations first")
  add("--json", default=None, help="also write the figures here")
  add("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  args.methods = args.methods.split(",")
  unknown = set(args.methods) - set(METHODS)
  if unknown:
    parser.error(f"unknown methods {sorted(unknown)}")
  size = family.SIZES[args.size]
  # fp32 on both sides (tunix's models take a dtype; not compared here).
  vars(args).update(size, batch=size["prompts"] * size["group"],
                    precision="fp32")
  # SwiGLU's three matrices with the parameters of GPT-2's two (ratio 4).
  args.hidden = round(2 * 4 * args.width / 3)
  return args


# ---------------------------------------------------------------- tunix


class WordTokenizer:
  """tunix's tokenizer protocol (``encode``, ``decode``, ``bos_id``,
  ``eos_id``, ``pad_id``) over our ids: the word ``t{i}`` is token ``i``.
  ``decode`` drops the stop and pad ids (as a tokenizer's
  ``skip_special_tokens``). ``bos_id`` is 0, which tunix's sampler reads
  as no BOS (it prepends one only if the id is truthy)."""

  def encode(self, text, **kwargs):
    return [int(word[1:]) for word in text.split()]

  def decode(self, ids, **kwargs):
    return " ".join(f"t{i}" for i in ids if i not in (STOP, PAD))

  def bos_id(self):
    return 0

  def eos_id(self):
    return STOP

  def pad_id(self):
    return PAD


def text(rows) -> list[str]:
  return [" ".join(f"t{i}" for i in row) for row in np.asarray(rows)]


def llama(args, seed: int):
  """tunix's Llama 3 at our shape, random (its MLP kernels, zeros at init
  because checkpoints fill them, drawn like the others)."""
  from flax import nnx
  from tunix.models.llama3 import model as llama3

  config = llama3.ModelConfig(
      num_layers=args.layers, vocab_size=args.vocab, embed_dim=args.width,
      hidden_dim=args.hidden, num_heads=args.heads,
      head_dim=args.width // args.heads, num_kv_heads=args.heads,
      rope_theta=10_000, norm_eps=1e-5, weight_tying=True)
  net = llama3.Llama3(config, rngs=nnx.Rngs(params=seed))
  state = nnx.state(net, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
  leaves = [0.02 * jax.random.normal(k, x.shape, x.dtype)
            if x.ndim >= 2 and not np.any(np.asarray(x)) else x
            for k, x in zip(keys, leaves)]
  nnx.update(net, jax.tree.unflatten(treedef, leaves))
  return net


def reward_function(args, seed: int):
  """tunix's reward function: re-tokenise prompt + completion text, score
  the last token's final hidden state with a random head (a second random
  Llama 3, jitted)."""
  from flax import nnx

  graphdef, state = nnx.split(llama(args, seed))
  head = jax.random.normal(jax.random.key(seed + 2),
                           (args.width,)) / np.sqrt(args.width)
  tok = WordTokenizer()
  length = args.prompt_length + args.response_length

  @jax.jit
  def score(state, tokens):
    net = nnx.merge(graphdef, state)
    mask = tokens != PAD
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    causal = jnp.tril(jnp.ones((length, length), bool))
    attention = causal[None] & mask[:, None, :]
    x = net.embedder.encode(tokens)
    for layer in net.layers:
      _, x = layer(x, positions, None, attention)
    x = net.final_norm(x)
    last = jnp.sum(mask, axis=1) - 1
    return x[jnp.arange(x.shape[0]), last] @ head

  seen = []

  def reward(prompts, completions, **kwargs):
    rows = [tok.encode(p) + tok.encode(c)
            for p, c in zip(prompts, completions)]
    tokens = np.full((len(rows), length), PAD, np.int32)
    for i, row in enumerate(rows):
      tokens[i, :len(row)] = row[:length]
    seen.append(float(np.mean([len(tok.encode(c)) < args.response_length
                               for c in completions])))
    return np.asarray(score(state, tokens)).tolist()

  return reward, seen


def params_copy(net):
  from flax import nnx
  return [np.array(x) for x in jax.tree.leaves(nnx.state(net, nnx.Param))]


def check_trained(before, net, name):
  """Fails unless tunix's training moved every parameter array that has a
  gradient path (a timed loop that did not train would be no figure)."""
  after = params_copy(net)
  moved = sum(not np.array_equal(a, b) for a, b in zip(before, after))
  if moved < len(after):
    raise RuntimeError(f"tunix {name}: only {moved} of {len(after)} "
                       "parameter arrays changed in training")
  print(f"tunix {name}: {moved} of {len(after)} parameter arrays changed "
        "in training", flush=True)


def mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                           ("fsdp", "tp"))


def run_tunix_grpo(args, prompts):
  import optax
  from flax import nnx
  from tunix.rl import rl_cluster as rl_cluster_lib
  from tunix.rl.grpo import grpo_learner
  from tunix.rl.rollout import base_rollout

  role = rl_cluster_lib.Role
  steps = args.warmup + args.iterations
  grid = mesh()
  training = rl_cluster_lib.RLTrainingConfig(
      actor_optimizer=optax.chain(optax.clip_by_global_norm(1.0),
                                  optax.adam(1e-4, eps=1e-5)),
      eval_every_n_steps=10**9, max_steps=steps)
  rollout = base_rollout.RolloutConfig(
      max_tokens_to_generate=args.response_length,
      max_prompt_length=args.prompt_length,
      kv_cache_size=args.prompt_length + args.response_length,
      temperature=1.0, top_p=1.0, top_k=None)
  cluster = rl_cluster_lib.RLCluster(
      actor=llama(args, args.seed), reference=llama(args, args.seed),
      tokenizer=WordTokenizer(),
      cluster_config=rl_cluster_lib.ClusterConfig(
          role_to_mesh={role.ACTOR: grid, role.REFERENCE: grid,
                        role.ROLLOUT: grid},
          rollout_engine="vanilla", offload_to_cpu=False,
          training_config=training, rollout_config=rollout))
  config = grpo_learner.GRPOConfig(
      num_generations=args.group, num_iterations=1, beta=0.2,
      kl_loss_mode="low_var_kl", epsilon=0.2, loss_agg_mode="token-mean")
  reward, short = reward_function(args, args.seed + 1)
  learner = grpo_learner.GRPOLearner(rl_cluster=cluster, algo_config=config,
                                     reward_fns=reward)
  phases = trl_common.Phases()
  ready = lambda out: jax.block_until_ready(out)  # noqa: E731
  cluster.generate = phases.wrap(cluster.generate, lambda *a, **k: (
      "generation (tokenise, prefill + decode, decode text)"))
  ref = cluster.get_ref_per_token_logps
  cluster.get_ref_per_token_logps = phases.wrap(
      lambda *a, **k: ready(ref(*a, **k)),
      lambda *a, **k: "reference forward")
  learner.reward_manager.reward_fns = [phases.wrap(
      reward, lambda *a, **k: "reward (re-tokenise, forward)")]
  update = cluster.update_actor
  cluster.update_actor = phases.wrap(
      lambda *a, **k: (update(*a, **k),
                       ready(nnx.state(cluster.actor_trainer.model))),
      lambda *a, **k: "update (forward, backward, optimizer)")
  starts, ends = [], []
  step = learner._run_global_step

  def timed_step(*a, **k):
    starts.append(time.perf_counter())
    phases.mark()
    step(*a, **k)
    ready(nnx.state(cluster.actor_trainer.model))
    ends.append(time.perf_counter())

  learner._run_global_step = timed_step
  before = params_copy(cluster.actor_trainer.model)
  # An array, not a list: tunix maps np.repeat over the batch's leaves.
  batches = [{"prompts": np.array(text(prompts[(i * args.prompts) % len(prompts):][
      :args.prompts]))} for i in range(steps)]
  gc.collect()
  gc.freeze()
  try:
    learner.train(batches)
  finally:
    gc.unfreeze()
  phases.mark()
  if len(starts) != steps:
    raise RuntimeError(f"tunix ran {len(starts)} iterations, not {steps}")
  check_trained(before, cluster.actor_trainer.model, "GRPO")
  seconds = [b - a for a, b in zip(starts, starts[1:] + ends[-1:])]
  _, (phase_s, calls, _) = phases.per_iteration(args.warmup, 1)
  total = float(np.mean(seconds[args.warmup:]))
  share = {k: v / total for k, v in phase_s.items()}
  share["other (learner loop, advantages, metrics)"] = 1 - sum(share.values())
  return {"iteration_seconds": seconds[args.warmup:],
          "first_iteration_seconds": seconds[0], "phase_share": share,
          "calls_per_iteration": calls,
          "short_fraction": float(np.mean(short[args.warmup:])),
          "peak_rss_mb_after": trl_common.rss_mb()}


def run_tunix_dpo(args, pairs, reference: bool):
  import optax
  from flax import nnx
  from tunix.sft.dpo import dpo_trainer

  steps = args.warmup + args.iterations
  trainer = dpo_trainer.DPOTrainer(
      model=llama(args, args.seed),
      ref_model=llama(args, args.seed) if reference else None,
      optimizer=optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adam(1e-6, eps=1e-8)),
      training_config=dpo_trainer.DPOTrainingConfig(
          eval_every_n_steps=10**9, max_steps=steps, beta=0.1,
          label_smoothing=0.0))
  ready = lambda: jax.block_until_ready(nnx.state(trainer.model))  # noqa
  starts = []
  prepare = trainer._prepare_inputs

  def timed_prepare(batch):
    if len(starts) == args.warmup:
      ready()  # the warm-up steps are done before the clock starts
    starts.append(time.perf_counter())
    return prepare(batch)

  trainer._prepare_inputs = timed_prepare
  before = params_copy(trainer.model)
  n = args.pairs
  batches = []
  for i in range(steps):
    s = slice((i * n) % len(pairs.prompt), (i * n) % len(pairs.prompt) + n)
    batches.append(dpo_trainer.TrainingInput(
        prompt_ids=pairs.prompt[s], prompt_mask=pairs.prompt_mask[s],
        chosen_ids=pairs.chosen[s], chosen_mask=pairs.chosen_mask[s],
        rejected_ids=pairs.rejected[s],
        rejected_mask=pairs.rejected_mask[s]))
  gc.collect()
  gc.freeze()
  try:
    trainer.train(batches)
    ready()
  finally:
    gc.unfreeze()
  end = time.perf_counter()
  if len(starts) != steps:
    raise RuntimeError(f"tunix ran {len(starts)} steps, not {steps}")
  check_trained(before, trainer.model, "DPO")
  seconds = [b - a for a, b in zip(starts, starts[1:] + [end])]
  total = end - starts[args.warmup]
  return {"iteration_seconds": seconds[args.warmup:],
          "timed_seconds_total": total,
          "seconds_per_iteration": total / args.iterations,
          "first_iteration_seconds": seconds[0],
          "peak_rss_mb_after": trl_common.rss_mb()}


# ------------------------------------------------------------------ main


def main():
  if importlib.util.find_spec("tunix") is None:
    print("rlhf_tunix.py: tunix is not installed here; run it in a separate "
          "environment with google-tunix==0.1.7 (see the top of this file).",
          file=sys.stderr)
    sys.exit(2)
  args = parse_args()
  version = importlib.metadata.version
  print(f"google-tunix {version('google-tunix')}, JAX {jax.__version__}, "
        f"flax {version('flax')}, optax {version('optax')} on "
        f"{jax.default_backend()}, {len(os.sched_getaffinity(0))} of "
        f"{os.cpu_count()} cores, {platform.machine()}; size {args.size}: "
        f"{args.layers} layers, width {args.width}, {args.heads} heads, "
        f"vocabulary {args.vocab} (tunix: Llama 3, SwiGLU hidden "
        f"{args.hidden}); {args.prompts} prompts × G={args.group} of "
        f"{args.prompt_length} tokens, {args.response_length}-token "
        f"responses; DPO {args.pairs} pairs per step; {args.warmup} warm-up "
        f"+ {args.iterations} timed iterations per side", flush=True)
  model, policy, reward, prompts = rlhf_trl.setup(args)
  pairs = family.random_pairs(args, prompts)
  args.epochs = [1]
  ours = {}
  for method in args.methods:  # ours first, before tunix is imported
    config = family.our_config(method, args, model, 1)
    data = family.our_data(method, model, policy, reward, prompts, pairs)
    ours[method] = family.run_ours(method, config, data, args)
    units = args.pairs if method == "dpo" else config.batch_size
    ours[method]["units"] = units
    print(f"{method}: ours compiled in {ours[method]['compile_seconds']:.1f}"
          f" s, {np.mean(ours[method]['iteration_seconds']):.3f} s per "
          f"iteration", flush=True)
  results = {}
  for method in args.methods:
    runs = ([("grpo, 1 epoch", lambda: run_tunix_grpo(args, prompts))]
            if method == "grpo" else
            [("dpo", lambda: run_tunix_dpo(args, pairs, True)),
             ("dpo, no reference (tunix)",
              lambda: run_tunix_dpo(args, pairs, False))])
    for name, run in runs:
      theirs = run()
      mine = ours[method]
      units = mine["units"]
      for side in (mine, theirs):
        seconds = side.get("seconds_per_iteration",
                           float(np.mean(side["iteration_seconds"])))
        side.update(seconds_per_iteration=seconds,
                    units_per_second=units / seconds,
                    response_tokens_per_second=(
                        None if method == "dpo" else
                        units * args.response_length / seconds))
      results[name] = {"method": method,
                       "unit": "pairs" if method == "dpo" else "episodes",
                       "ours": dict(mine), "tunix": theirs,
                       "ours_over_tunix": (mine["units_per_second"]
                                           / theirs["units_per_second"])}
      print(f"{name}: tunix {theirs['seconds_per_iteration']:.3f} s per "
            f"iteration (first, with its compiles, "
            f"{theirs['first_iteration_seconds']:.1f} s); ours / tunix "
            f"{results[name]['ours_over_tunix']:.2f}x", flush=True)
  report(results)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"settings": vars(args), "results": results,
                 "platform": {"jax": jax.__version__,
                              "tunix": version("google-tunix"),
                              "cores": os.cpu_count(),
                              "cores_used": len(os.sched_getaffinity(0)),
                              "machine": platform.machine()}}, f, indent=1)


def report(results):
  print("\n| method | ours (units/s) | tunix (units/s) | ours / tunix | "
        "ours tokens/s | tunix tokens/s | ours s/iter | tunix s/iter | our "
        "compile (s) | tunix first iteration (s) |")
  print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: |")
  tokens = lambda v: "-" if v is None else f"{v:,.0f}"  # noqa: E731
  for name, r in results.items():
    ours, theirs = r["ours"], r["tunix"]
    print(f"| {name} | {ours['units_per_second']:.1f} {r['unit']} | "
          f"{theirs['units_per_second']:.1f} {r['unit']} | "
          f"**{r['ours_over_tunix']:.2f}x** | "
          f"{tokens(ours['response_tokens_per_second'])} | "
          f"{tokens(theirs['response_tokens_per_second'])} | "
          f"{ours['seconds_per_iteration']:.3f} | "
          f"{theirs['seconds_per_iteration']:.3f} | "
          f"{ours['compile_seconds']:.1f} | "
          f"{theirs['first_iteration_seconds']:.1f} |")
  for name, r in results.items():
    theirs = r["tunix"]
    spread = theirs["iteration_seconds"]
    print(f"\n{name}: tunix iterations {', '.join(f'{s:.3f}' for s in spread)}"
          f" s; ours {', '.join(f'{s:.3f}' for s in r['ours']['iteration_seconds'])} s")
    if "phase_share" in theirs:
      print(f"  stop fraction ours {r['ours']['stop_fraction']:.3f}; tunix "
            f"responses shorter than the maximum (stop or pad) "
            f"{theirs['short_fraction']:.3f}")
      print("  tunix's iteration: " + ", ".join(
          f"{k} {v:.1%}" for k, v in sorted(theirs["phase_share"].items(),
                                            key=lambda kv: -kv[1])))
  last = list(results.values())[-1]
  print(f"\npeak resident memory of the process: "
        f"{last['tunix']['peak_rss_mb_after']:,.0f} MB")


if __name__ == "__main__":
  main()
