"""RLHF PPO speed, side by side in one process: TRL's ``PPOTrainer`` (trl
1.12.0, ``trl.experimental.ppo``, PyTorch on CPU) against ours
(:mod:`jaxrl_align.rlhf.ppo`, one jitted iteration), at equal settings.

The same weights on both sides: our transformer (GPT-2 layout; by default
vocabulary 1,024, max_len 128, 4 layers, 4 heads, width 128), random from
one seed, is the policy and the reference; a second one, with a random
scalar head, is the reward model and the critic's start. They are exported
to ``GPT2LMHeadModel`` and ``GPT2ForSequenceClassification`` (one label) by
:func:`jaxrl_align.host.rlhf.gpt2.state_dict`, and the export is checked
(largest logit and score difference, printed). 64 random 16-token prompts
per iteration, 48-token responses, temperature 1, no top-k or nucleus, a
stop token (id 0, TRL's ``stop_token_id`` and the tokenizer's eos; the pad
id is 1) with ``missing_eos_penalty`` 1, 4 PPO epochs of one minibatch of
64, a fixed ``kl_coef`` (our default, 0.2; k1), no reward whitening, ``vf_coef`` 0.1, both
clip ranges 0.2, γ 1, λ 0.95, Adam at a constant 1e-4 with ε 1e-5: our
``RLHFPPOConfig``'s defaults (``kl_control="fixed"``, ``anneal_lr=False``),
handed to TRL's ``PPOConfig`` field by field. TRL runs in
fp32 (``bf16=False``, ``fp16=False``) without gradient checkpointing; the
script prints the policy's parameter dtype and the flag to show it.
``--precision bf16``: mixed precision on both sides (ours
``matmul_dtype="bfloat16"``; TRL ``bf16=True`` and, because its
PPOTrainer's Accelerator ignores that flag, ``train()`` under
``torch.autocast("cpu", bfloat16)``).

Measured: our compile time, then seconds per iteration of
``ppo.LEARNER.update`` (prompt draw, rollout, metrics, update) after
``--warmup`` iterations; TRL's seconds per iteration of ``train()`` (between
its ``on_step_end`` callbacks) after as many warm-up iterations, and where
they went (``batch_generation``, the reference and update forwards,
``get_reward`` for values and scores, ``selective_log_softmax``, backward,
the optimizer step, ``gc.collect``; the rest is TRL's arithmetic, GAE
loop and logging), by wrapping the module-level names the trainer calls.
Also episodes/s, response tokens/s (64 × 48 per iteration), ours over TRL,
and the peak resident memory after each side (ours runs first; the second
figure is the process's peak, ours included). ``--our-phases`` adds our
per-phase times (``benchmarks/rlhf_rl.py``'s, one compiled program per
phase). torch uses ``--threads`` threads (default: the cores this process
may use); XLA uses every core the process may use (restrict both with
``taskset``). On a machine busy with other work, torch's OpenMP threads
spin against the load: 2 threads on 2 busy cores made TRL's generation 40
times slower than 1 thread, so time on an idle machine. Before TRL's loop
the heap is frozen (``gc.freeze``) so that TRL's two ``gc.collect`` calls
per iteration do not scan JAX's objects too (a standalone TRL run would
still scan the libraries' own, so this slightly favours TRL).

Work per iteration, read from both loops (TRL's counted by forward hooks
and printed). TRL: generation (a prefill and 47 cached steps; the
policy's log-probabilities come from the generation's logits), one
reference forward, one value-model forward, one reward-model forward; then
4 × (policy and value forward, backward, Adam step). Ours: generation (a
prefill and 48 cached steps), then a policy forward for the
log-probabilities, the reference, critic and reward forwards, and the same
4 × (forward, backward, Adam) over policy and critic. Inequalities:

* ours recomputes the policy's log-probabilities with a full forward pass
  after sampling (so that they come from the same program as the update's);
  TRL reuses the sampler's logits: one more full forward on our side;
* our iteration also computes metrics TRL does not: the exact KL to the
  reference over the vocabulary and distinct-1/2. The exact KL's two
  forwards are the rollout's own (same parameters, same tokens) and XLA's
  common-subexpression elimination merges them: the compiled iteration has
  three ``[4096, 1024]`` logit products (rollout policy, reference, update)
  and, per layer, one ``[4096, 512]`` MLP product for each of the
  rollout's four models;
* our sampler runs one cached step more (the last token's, unused);
* ours clips the gradient at global norm 1 (``max_grad_norm``); TRL's PPO
  loop calls ``optimizer.step()`` with no clipping;
* TRL treats every pad-id token as padding (it masks ``== pad_token_id``),
  so a sampled pad id (id 1) is dropped from its later forward passes;
  ours keeps it (a difference in meaning, not in the work);
* the critic: ours is a whole transformer whose unused language-model head
  XLA removes; TRL's value model has no such head.

Usage: ``python benchmarks/rlhf_trl.py [--iterations 5] [--warmup 2]
[--threads N] [--json FILE]`` in the ``.venv-trl`` environment (``make
bench-rlhf-trl`` creates it and runs this).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import sys
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import ppo
from jaxrl_align.rlhf import rl

import trl_common  # benchmarks/, next to this file
from trl_common import rss_mb

STOP, PAD = trl_common.STOP, trl_common.PAD
NEEDED = ("trl", "torch", "transformers", "datasets", "accelerate",
          "tokenizers")


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add = parser.add_argument
  add("--iterations", type=int, default=5, help="timed iterations per side")
  add("--warmup", type=int, default=2, help="untimed iterations first")
  add("--threads", type=int, default=len(os.sched_getaffinity(0)),
      help="torch threads (default: the cores this process may use)")
  add("--json", default=None, help="also write the figures here")
  add("--device", choices=("cpu", "cuda"), default="cpu",
      help="where TRL's torch runs (ours: JAX's default backend)")
  add("--batch", type=int, default=64, help="prompts per iteration")
  add("--prompt-length", type=int, default=16)
  add("--response-length", type=int, default=48)
  add("--epochs", type=int, default=4)
  add("--vocab", type=int, default=1024)
  add("--layers", type=int, default=4)
  add("--heads", type=int, default=4)
  add("--width", type=int, default=128)
  add("--max-len", type=int, default=128)
  add("--seed", type=int, default=0)
  add("--precision", choices=("fp32", "bf16"), default="fp32",
      help="bf16: mixed precision on both sides (ours: matmul_dtype "
           "bfloat16; TRL: bf16=True, torch's CPU autocast)")
  add("--our-phases", action="store_true",
      help="also time our phases one by one (rlhf_rl.py's; slower)")
  return parser.parse_args()


def setup(args):
  """Our model, policy and reward parameters (numpy), and the prompts."""
  model = model_lib.TransformerConfig(
      vocab_size=args.vocab, max_len=args.max_len, num_layers=args.layers,
      num_heads=args.heads, width=args.width)
  init = model_lib.Transformer(model).init
  dummy = jnp.zeros((1, 2), jnp.int32)
  policy = init(jax.random.key(args.seed), dummy)
  reward = init(jax.random.key(args.seed + 1), dummy)
  # The scalar head starts at zero; a random one makes the scores vary.
  kernel = reward["params"]["score"]["kernel"]
  reward["params"]["score"]["kernel"] = jax.random.normal(
      jax.random.key(args.seed + 2), kernel.shape) / np.sqrt(args.width)
  to_np = lambda tree: jax.tree.map(np.asarray, tree)  # noqa: E731
  prompts = np.asarray(jax.random.randint(
      jax.random.key(args.seed + 3), (4 * args.batch, args.prompt_length),
      2, args.vocab))  # never the stop or the pad id
  return model, to_np(policy), to_np(reward), prompts


def config_of(args, model) -> ppo.RLHFPPOConfig:
  return ppo.RLHFPPOConfig(
      model=model, stop_token=STOP, pad_token=PAD,
      iterations=args.warmup + args.iterations, batch_size=args.batch,
      response_length=args.response_length, epochs=args.epochs,
      num_minibatches=1, kl_control="fixed", anneal_lr=False,
      whiten_rewards=False,
      matmul_dtype="bfloat16" if args.precision == "bf16" else "float32")


# ------------------------------------------------------------------ ours


def run_ours(args, model, policy, reward, prompts):
  config = config_of(args, model)
  mask = jnp.ones(prompts.shape, bool)
  data = rl.RLData(
      prompts=prompts, prompt_mask=mask, eval_prompts=prompts[:args.batch],
      eval_prompt_mask=mask[:args.batch], ref_params=policy,
      reward_params=reward, critic_params=reward,
      score_fn=rl.RewardModelScore(model))
  data = jax.device_put(data)
  out = trl_common.time_updates(ppo.LEARNER, config, data, args.seed, args.warmup,
                                args.iterations)
  if args.our_phases:
    import rlhf_rl  # benchmarks/, next to this file

    out["phase_seconds"] = rlhf_rl.phases("ppo", config, data,
                                          repeats=args.iterations)[0]
  return out


# ------------------------------------------------------------------- TRL


def _hf_models(model, policy, reward):
  """Policy, reference, value and reward models with our weights."""
  import transformers

  lm, seq = transformers.GPT2LMHeadModel, (
      transformers.GPT2ForSequenceClassification)
  return (trl_common.hf_model(lm, model, policy, False),
          trl_common.hf_model(lm, model, policy, False),
          trl_common.hf_model(seq, model, reward, True),
          trl_common.hf_model(seq, model, reward, True))


def _trainer(args, model, policy, reward, prompts, output_dir):
  """TRL's trainer at our config's settings, and the export's error."""
  import datasets
  import transformers
  from trl.experimental.ppo import PPOConfig
  from trl.experimental.ppo import PPOTrainer

  ours = config_of(args, model)
  hf_policy, hf_ref, hf_value, hf_reward = _hf_models(model, policy, reward)
  error = trl_common.export_error(model, policy, reward, hf_policy,
                                  hf_reward, prompts)
  tokenizer = trl_common.tokenizer(model.vocab_size)
  assert (len(tokenizer), tokenizer.eos_token_id,
          tokenizer.pad_token_id) == (model.vocab_size, STOP, PAD)
  dataset = datasets.Dataset.from_dict({"input_ids": prompts.tolist()})
  f = float
  config = PPOConfig(
      output_dir=output_dir, seed=args.seed, use_cpu=args.device == "cpu",
      bf16=args.precision == "bf16", fp16=False,
      gradient_checkpointing=False, report_to="none",
      save_strategy="no", eval_strategy="no", disable_tqdm=True,
      num_sample_generations=0,
      total_episodes=ours.batch_size * ours.iterations,
      per_device_train_batch_size=ours.batch_size,
      gradient_accumulation_steps=1, num_mini_batches=ours.num_minibatches,
      local_rollout_forward_batch_size=ours.batch_size,
      num_ppo_epochs=ours.epochs, response_length=ours.response_length,
      temperature=f(ours.temperature), stop_token_id=ours.stop_token,
      missing_eos_penalty=f(ours.missing_eos_penalty),
      kl_coef=f(ours.kl_coef), kl_estimator=ours.kl_estimator,
      whiten_rewards=ours.whiten_rewards, vf_coef=f(ours.vf_coef),
      cliprange=f(ours.clip_eps), cliprange_value=f(ours.value_clip),
      gamma=f(ours.gamma), lam=f(ours.lam),
      learning_rate=f(ours.learning_rate), lr_scheduler_type="constant",
      adam_epsilon=1e-5, weight_decay=0.0)  # sgd.clipped_adam's ε
  trainer = PPOTrainer(
      args=config, processing_class=tokenizer, model=hf_policy,
      ref_model=hf_ref, reward_model=hf_reward, value_model=hf_value,
      train_dataset=dataset, eval_dataset=dataset.select(range(8)))
  for callback in (transformers.PrinterCallback,
                   transformers.ProgressCallback):
    trainer.remove_callback(callback)
  return trainer, error


def run_trl(args, model, policy, reward, prompts):
  import gc
  import types

  os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
  import torch
  import transformers
  from trl.experimental.ppo import ppo_trainer as trl_ppo

  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  transformers.logging.set_verbosity_error()
  warnings.filterwarnings("ignore", ".*gradient_checkpointing.* deprecated",
                          FutureWarning)
  with tempfile.TemporaryDirectory() as out:
    trainer, export_error = _trainer(args, model, policy, reward, prompts,
                                     out)
    phases, stops = trl_common.Phases(), []

    def reward_name(m, query_responses, pad_id, context):
      if m is trainer.reward_model:
        stops.append(float((query_responses[:, context:] == STOP).any(1)
                           .float().mean()))
        return "reward-model forward"
      return "value-model forward (rollout)"

    # The module-level names train() calls, and two of its objects.
    patches = {
        "batch_generation": phases.wrap(trl_ppo.batch_generation,
                                        lambda *a, **k: "generation"),
        "forward": phases.wrap(trl_ppo.forward, lambda m, *a, **k: (
            "reference forward" if m is trainer.ref_model else
            "policy + value forward (update)")),
        "get_reward": phases.wrap(trl_ppo.get_reward, reward_name),
        "selective_log_softmax": phases.wrap(
            trl_ppo.selective_log_softmax, lambda *a, **k: "log-softmax"),
        "gc": types.SimpleNamespace(collect=phases.wrap(
            gc.collect, lambda *a, **k: "gc.collect")),
    }
    saved = {name: getattr(trl_ppo, name) for name in patches}
    trainer.accelerator.backward = phases.wrap(
        trainer.accelerator.backward, lambda *a, **k: "backward")
    trainer.optimizer.step = phases.wrap(
        trainer.optimizer.step, lambda *a, **k: "optimizer step")
    hooks = [m.register_forward_pre_hook(phases.count(name),
                                         with_kwargs=True)
             for name, m in (("policy", trainer.model.policy),
                             ("reference", trainer.ref_model),
                             ("value", trainer.model.value_model.transformer),
                             ("reward", trainer.reward_model.transformer))]
    trainer.add_callback(type("Clock", (transformers.TrainerCallback,), {
        "on_train_begin": phases.mark, "on_step_end": phases.mark})())
    for name, fn in patches.items():
      setattr(trl_ppo, name, fn)
    # TRL's gc.collect would otherwise scan JAX's heap too (one process).
    gc.collect()
    gc.freeze()
    # TRL 1.12.0's PPOTrainer builds its Accelerator without the mixed-
    # precision setting, so bf16=True alone changes nothing (its
    # accelerator reports "no"): the whole loop then runs under torch's CPU
    # autocast, what accelerate's bf16 does for the other trainers.
    autocast = (torch.autocast(args.device, dtype=torch.bfloat16)
                if args.precision == "bf16" else contextlib.nullcontext())
    try:
      with autocast:
        trainer.train()
    finally:
      gc.unfreeze()
      for name, fn in saved.items():
        setattr(trl_ppo, name, fn)
      for hook in hooks:
        hook.remove()
  seconds = list(np.diff(phases.marks))[args.warmup:]
  first, last = phases.snapshots[args.warmup], phases.snapshots[-1]
  per_iteration = [{k: (b[k] - a[k]) / args.iterations for k in b}
                   for a, b in zip(first, last)]
  total = sum(seconds)
  split = {k: v * args.iterations / total
           for k, v in per_iteration[0].items()}
  split["other (arithmetic, GAE, logging)"] = 1 - sum(split.values())
  opt = trainer.optimizer.optimizer
  return {"iteration_seconds": seconds, "phase_share": split,
          "calls_per_iteration": per_iteration[1],
          "forwards_per_iteration": per_iteration[2],
          "stop_fraction": float(np.mean(stops[args.warmup:])),
          "policy_dtype": str(next(trainer.model.policy.parameters()).dtype),
          "value_dtype": str(next(
              trainer.model.value_model.parameters()).dtype),
          "mixed_precision": ("bf16 (torch.autocast around train)"
                              if args.precision == "bf16" else
                              trainer.accelerator.mixed_precision),
          "gradient_checkpointing": [
              trainer.args.gradient_checkpointing,
              trainer.model.policy.is_gradient_checkpointing],
          "optimizer": f"{type(opt).__name__}(fused="
                       f"{opt.defaults.get('fused')})",
          "attention": trainer.model.policy.config._attn_implementation,
          "export_max_abs_error": {"logits": export_error[0],
                                   "score": export_error[1]},
          "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
          "torch_device": str(next(trainer.model.policy.parameters()).device),
          "peak_rss_mb_after": rss_mb()}


# ------------------------------------------------------------------ main


def main():
  args = parse_args()
  missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
  if missing:
    print(f"rlhf_trl.py: {', '.join(missing)} not installed; run `make "
          f"bench-rlhf-trl` (it makes .venv-trl with them).", file=sys.stderr)
    sys.exit(2)
  model, policy, reward, prompts = setup(args)
  tokens = args.batch * args.response_length
  print(f"JAX {jax.__version__} on {jax.default_backend()}, "
        f"{os.cpu_count()} cores ({args.threads} torch threads), "
        f"{platform.machine()}; {args.batch} prompts of {args.prompt_length} "
        f"tokens, {args.response_length}-token responses, {args.epochs} PPO "
        f"epochs; {args.warmup} warm-up + {args.iterations} timed "
        f"iterations per side")
  ours = run_ours(args, model, policy, reward, prompts)
  print(f"ours done: compiled in {ours['compile_seconds']:.1f} s, "
        f"{np.mean(ours['iteration_seconds']):.3f} s per iteration; TRL "
        f"next", flush=True)
  theirs = run_trl(args, model, policy, reward, prompts)
  for side in (ours, theirs):
    seconds = float(np.mean(side["iteration_seconds"]))
    side.update(seconds_per_iteration=seconds,
                episodes_per_second=args.batch / seconds,
                response_tokens_per_second=tokens / seconds)
  ratio = ours["episodes_per_second"] / theirs["episodes_per_second"]
  print(f"\nTRL policy parameters {theirs['policy_dtype']}, value "
        f"{theirs['value_dtype']}, mixed precision "
        f"{theirs['mixed_precision']!r}, gradient checkpointing (arg, "
        f"model) {theirs['gradient_checkpointing']}, optimizer "
        f"{theirs['optimizer']}, attention {theirs['attention']!r}, torch "
        f"{theirs['torch']} with {theirs['torch_threads']} threads")
  err = theirs["export_max_abs_error"]
  print(f"export check, ours vs Hugging Face: max |Δ logit| "
        f"{err['logits']:.1e}, max |Δ score| {err['score']:.1e}")
  rows = (("s / iteration", "seconds_per_iteration", "{:.3f}"),
          ("episodes / s", "episodes_per_second", "{:.1f}"),
          ("response tokens / s", "response_tokens_per_second", "{:,.0f}"),
          ("stop fraction", "stop_fraction", "{:.3f}"),
          ("peak RSS after (MB)", "peak_rss_mb_after", "{:,.0f}"))
  print(f"\n{'':22s}{'ours (JAX)':>14s}{'TRL (torch)':>14s}")
  for label, key, fmt in rows:
    print(f"{label:22s}{fmt.format(ours[key]):>14s}"
          f"{fmt.format(theirs[key]):>14s}")
  print(f"{'compile (s)':22s}{ours['compile_seconds']:>14.1f}{'-':>14s}")
  print(f"\nours / TRL, episodes per second: {ratio:.2f}x (target >= 1.5)")
  if "phase_seconds" in ours:
    phase = ours["phase_seconds"]
    print("\nours, phase by phase (best of --iterations; s):")
    for name, seconds in phase.items():
      print(f"  {name:36s} {seconds:6.3f}")
  print("\nTRL, share of the iteration:")
  for name, share in sorted(theirs["phase_share"].items(),
                            key=lambda kv: -kv[1]):
    print(f"  {name:36s} {share:6.1%}")
  fwd, calls = theirs["forwards_per_iteration"], theirs["calls_per_iteration"]
  print("\nwork per iteration, TRL (forward hooks): " + ", ".join(
      f"{m} {fwd.get(m, 0):g} forwards ({fwd.get(m + ' tokens', 0):,.0f} "
      f"tokens)" for m in ("policy", "reference", "value", "reward"))
      + f"; {calls['backward']:g} backward, {calls['optimizer step']:g} "
      f"optimizer steps")
  r, e = args.response_length, args.epochs
  print(f"work per iteration, ours (the code): policy a prefill + {r} "
        f"cached steps, then 1 + {e} forwards; reference 1; critic 1 + {e}; "
        f"reward 1; {e} backward, {e} optimizer steps")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"settings": vars(args), "ours": ours, "trl": theirs,
                 "ours_over_trl_episodes_per_second": ratio,
                 "platform": {"jax": jax.__version__,
                              "cores": os.cpu_count(),
                              "machine": platform.machine()}}, f, indent=1)


if __name__ == "__main__":
  main()
