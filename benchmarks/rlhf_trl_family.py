"""RLHF speed of the critic-free and offline methods, side by side in one
process: TRL 1.16.0's ``GRPOTrainer``, ``RLOOTrainer`` and ``DPOTrainer``
(PyTorch on CPU, fp32, no vLLM, no gradient checkpointing) against ours
(:mod:`jaxrl_align.rlhf.grpo`, :mod:`~jaxrl_align.rlhf.rloo`,
:mod:`~jaxrl_align.rlhf.dpo`), at equal settings.

The same weights on both sides, as ``rlhf_trl.py`` (TRL's PPO) builds them
(its ``setup``): our transformer (by default vocabulary 1,024, max_len 128,
4 layers, 4 heads, width 128; ``--size small``: 256, 64, 2, 2, 64), random
from one seed, is the policy and the reference; a second one with a random
scalar head is the reward model. They are exported to ``GPT2LMHeadModel``
(saved to a temporary directory, from which TRL loads the policy and its
reference, in fp32) and ``GPT2ForSequenceClassification`` (one label) and
the export is checked (largest logit and score difference, printed).

Measured, per method: our compile time, then seconds per iteration of the
jitted ``LEARNER.update`` after ``--warmup`` iterations; TRL's seconds per
iteration of ``train()`` (between its ``on_step_end`` callbacks; an
iteration is ``epochs`` optimizer steps for GRPO and RLOO, one for DPO)
after as many warm-up iterations; episodes/s and response tokens/s (GRPO,
RLOO: ``prompts × G`` responses of ``response_length`` tokens per
iteration), pairs/s (DPO), ours over TRL; where TRL's iteration goes (its
generation with tokenising and decoding, the reward model with its
re-tokenising, the old-policy and reference log-probabilities, the update's
forward and loss, backward, the gradient clip, the optimizer step; the
rest is the Trainer's loop, data loading and logging), by wrapping the
trainer's methods; its forward passes per model (hooks); the peak resident
memory; torch's thread count and the dtype and flags that show fp32 without
checkpointing. torch uses ``--threads`` threads (default: the cores this
process may use); XLA uses every core the process may use. Before each TRL
loop the heap is frozen (``gc.freeze``) so that a collection does not scan
JAX's objects too (slightly favours TRL). On a machine busy with other
work the timings are noisy and torch's OpenMP threads spin against the
load (``rlhf_trl.py``'s docstring; here, at ``--size small``, 2 threads
on 2 busy cores made TRL's RLOO iteration 60 times slower than 1 thread):
time on an idle machine, or give both sides one core (``taskset -c 0``).

Settings, mapped field by field from our config to TRL's
(:func:`setting_pairs` lists them and they are printed side by side; a
test checks that they agree): GRPO and RLOO: ``prompts`` prompts per
iteration (``batch_size / group_size``; TRL: the generation batch of
``per_device_train_batch_size = generation_batch_size = batch_size``
completions, ``num_generations = group_size``, one gradient-accumulation
step, so one minibatch), 16-token prompts, ``max_completion_length`` =
``response_length`` 48, temperature 1, no top-k or nucleus, β (ours
``kl_coef``, our default 0.2, ``kl_control="fixed"``; TRL ``beta``),
``num_iterations`` = ``epochs`` (``--epochs``, by default 1 and 2), the
clip ε 0.2 on both sides of 1, Adam at a constant learning rate 1e-4 (our
default; TRL ``lr_scheduler_type="constant"``, AdamW with weight decay 0
and ``adam_epsilon`` our 1e-5), global-norm clip 1, dropout off. GRPO: the
KL as a ``k3`` loss term (TRL's only placement), ``scale_rewards="group"``,
``loss_type="dapo"``, token ratios (``importance_sampling_level``), no dual
clip (``delta=None``). RLOO: ``k1`` summed into the sequence reward,
the leave-one-out baseline, sequence ratios (TRL's only), no advantage
normalisation. DPO: 64 random token-id pairs per step (16-token prompts,
48-token responses ending in the stop token; TRL reads them as text of a
word-level tokenizer, ``t{id}``, and the script checks that its tokenised
pairs are ours), the sigmoid loss, β 0.1, Adam at a constant 1e-6 with ε
1e-8, global-norm clip 1, the reference's log-probabilities computed once
before training on both sides (TRL ``precompute_ref_log_probs=True``).

What could not be made equal, and why:

* TRL generates with Hugging Face ``generate`` (a prefill and 47 cached
  steps, sampling through its logits processors), then decodes the
  completions to text, and its reward model re-tokenises prompt + completion
  text; ours samples token ids with our cached sampler (one cached step
  more, the last token's, unused) and scores the ids. The text round trip
  is part of TRL's pipeline and is timed with its phases.
* TRL decodes the completions with ``skip_special_tokens``, so the text its
  reward model re-tokenises lacks the stop token and any sampled pad id
  (1); ours scores the response's ids, its stop token included. A stop is
  sampled in a few percent of the random policy's responses (``stop
  fraction``, printed), so the work differs by less than a token per
  response. TRL pads completions to the batch's longest, ours to
  ``response_length``: the same here, where nearly all run to full length.
* TRL's GRPO with one epoch skips the old policy's log-probabilities (the
  ratio is 1, it uses the update's own, detached); ours always computes them
  in the rollout: one more policy forward per iteration at ``epochs=1``.
  With two epochs both compute them; TRL's RLOO always does.
* Our iteration also computes metrics TRL does not: the exact KL to the
  reference over the vocabulary (the rollout's forwards, merged by XLA) and
  distinct-1/2.
* TRL has no ``missing_eos_penalty`` in GRPO or RLOO: ours is set to 0.
* TRL's DPO runs one forward over the chosen and rejected halves of the
  batch stacked (``[2B, T]``), as ours does; its collator pads each batch
  to its longest sequence (all are equal here) and builds tensors from
  Python lists in every step.

Usage: ``python benchmarks/rlhf_trl_family.py [--methods grpo,rloo,dpo]
[--size small|default] [--epochs 1,2] [--iterations 3] [--warmup 1]
[--threads N] [--json FILE]`` in the main environment (``make
bench-rlhf-trl-family``; trl 1.16.0 is in the ``test`` extra).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import warnings

import jax
import numpy as np

from jaxrl_align.rlhf import dpo
from jaxrl_align.rlhf import grpo
from jaxrl_align.rlhf import pairs as pairs_lib
from jaxrl_align.rlhf import rl
from jaxrl_align.rlhf import rloo

import rlhf_trl  # benchmarks/, next to this file
import trl_common
from trl_common import PAD
from trl_common import STOP

NEEDED = ("trl", "torch", "transformers", "datasets", "accelerate",
          "tokenizers")
SIZES = {
    "small": dict(vocab=256, max_len=64, layers=2, heads=2, width=64,
                  prompts=4, group=4, prompt_length=8, response_length=16,
                  pairs=16),
    "default": dict(vocab=1024, max_len=128, layers=4, heads=4, width=128,
                    prompts=8, group=8, prompt_length=16, response_length=48,
                    pairs=64),
}
RL_CONFIGS = {"grpo": grpo.RLHFGRPOConfig, "rloo": rloo.RLHFRLOOConfig}
LEARNERS = {"grpo": grpo.LEARNER, "rloo": rloo.LEARNER, "dpo": dpo.LEARNER}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add = parser.add_argument
  add("--methods", default="grpo,rloo,dpo")
  add("--size", choices=tuple(SIZES), default="default")
  add("--epochs", default="1,2",
      help="GRPO and RLOO epochs (TRL's num_iterations) to run, each a row")
  add("--iterations", type=int, default=3, help="timed iterations per side")
  add("--warmup", type=int, default=1, help="untimed iterations first")
  add("--threads", type=int, default=len(os.sched_getaffinity(0)),
      help="torch threads (default: the cores this process may use)")
  add("--json", default=None, help="also write the figures here")
  add("--seed", type=int, default=0)
  add("--precision", choices=("fp32", "bf16"), default="fp32",
      help="bf16: mixed precision on both sides (ours: matmul_dtype "
           "bfloat16; TRL: bf16=True, torch's CPU autocast)")
  args = parser.parse_args(argv)
  args.methods = args.methods.split(",")
  unknown = set(args.methods) - set(LEARNERS)
  if unknown:
    parser.error(f"unknown methods {sorted(unknown)}")
  args.epochs = [int(e) for e in args.epochs.split(",")]
  size = SIZES[args.size]
  # rlhf_trl.setup's names: 4 × batch prompts to draw from.
  vars(args).update(size, batch=size["prompts"] * size["group"])
  return args


# ------------------------------------------------------------- settings


def our_config(method: str, args, model, epochs: int = 1):
  """Our config at the benchmark's settings (everything else our
  defaults)."""
  steps = args.warmup + args.iterations
  if method == "dpo":
    train = 4 * args.pairs
    return dpo.DPOConfig(
        model=model, stop_token=STOP, pad_token=PAD, train_pairs=train,
        batch_size=args.pairs, epochs=-(-steps * args.pairs // train),
        response_length=args.response_length, anneal_lr=False,
        matmul_dtype="bfloat16" if args.precision == "bf16" else "float32")
  return RL_CONFIGS[method](
      model=model, stop_token=STOP, pad_token=PAD, iterations=steps,
      batch_size=args.prompts * args.group, group_size=args.group,
      response_length=args.response_length, epochs=epochs,
      num_minibatches=1, kl_control="fixed", anneal_lr=False,
      missing_eos_penalty=0.0,
      matmul_dtype="bfloat16" if args.precision == "bf16" else "float32")


def trl_config(method: str, ours, args, output_dir: str):
  """TRL's config of ``method`` with ``ours``'s settings, field by field."""
  import trl

  f = float
  common = dict(
      output_dir=output_dir, seed=args.seed, use_cpu=True,
      bf16=getattr(args, "precision", "fp32") == "bf16",
      fp16=False, activation_checkpointing=False, report_to="none",
      save_strategy="no", eval_strategy="no", disable_tqdm=True,
      disable_dropout=True, per_device_train_batch_size=ours.batch_size,
      gradient_accumulation_steps=1, learning_rate=f(ours.learning_rate),
      lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
      max_grad_norm=f(ours.max_grad_norm), dataloader_num_workers=0)
  if method == "dpo":
    if ours.label_smoothing:
      raise ValueError("TRL 1.16.0's sigmoid loss has no label smoothing.")
    return trl.DPOConfig(
        **common, max_steps=args.warmup + args.iterations,
        adam_epsilon=dpo.ADAM_EPS, beta=f(ours.beta),
        loss_type=[ours.loss_type], precompute_ref_log_probs=True,
        max_length=None)
  if ours.kl_control != "fixed" or ours.anneal_lr or ours.missing_eos_penalty:
    raise ValueError("TRL's GRPO and RLOO have a fixed β, no annealing "
                     "option here and no missing-stop penalty.")
  rl_common = dict(
      **common, max_steps=ours.iterations * ours.epochs,
      adam_epsilon=1e-5,  # sgd.clipped_adam's ε
      generation_batch_size=ours.batch_size,
      num_generations=ours.group_size,
      max_completion_length=ours.response_length,
      temperature=f(ours.temperature), top_k=ours.top_k,
      top_p=f(ours.top_p), beta=f(ours.kl_coef), num_iterations=ours.epochs,
      epsilon=f(ours.clip_eps), epsilon_high=f(ours.clip_eps_high),
      use_vllm=False, log_completions=False)
  if method == "rloo":
    if ours.ratio != "sequence" or ours.kl_estimator != "k1":
      raise ValueError("TRL's RLOO has sequence ratios and k1 only.")
    return trl.RLOOConfig(**rl_common,
                          normalize_advantages=ours.normalize_advantages)
  if ours.kl_in != "loss" or ours.kl_estimator != "k3":
    raise ValueError("TRL's GRPO has the k3 KL in the loss only.")
  return trl.GRPOConfig(
      **rl_common, loss_type=ours.loss_type,
      scale_rewards=ours.scale_rewards,
      importance_sampling_level=ours.ratio,
      delta=f(ours.dual_clip) if ours.dual_clip else None)


def setting_pairs(method: str, ours, theirs) -> dict[str, tuple]:
  """``{setting: (ours, TRL's)}``: what each side's config says (TRL's
  ``epsilon_high`` and ``delta`` resolved as its trainer does)."""
  f = float
  pairs = {
      "learning rate": (f(ours.learning_rate), theirs.learning_rate),
      "constant learning rate": (not ours.anneal_lr,
                                 theirs.lr_scheduler_type == "constant"),
      "max grad norm": (f(ours.max_grad_norm), theirs.max_grad_norm),
      "batch per optimizer step": (
          ours.batch_size // getattr(ours, "num_minibatches", 1),
          theirs.per_device_train_batch_size
          * theirs.gradient_accumulation_steps),
      "precision": (
          "bf16" if getattr(ours, "matmul_dtype", "float32") == "bfloat16"
          else "fp32",
          "bf16" if theirs.bf16 else "fp16" if theirs.fp16 else "fp32"),
      "no gradient checkpointing": (True, not (
          theirs.activation_checkpointing or theirs.gradient_checkpointing)),
  }
  if method == "dpo":
    pairs.update({
        "beta": (f(ours.beta), theirs.beta),
        "loss": ([ours.loss_type], list(theirs.loss_type)),
        "adam eps": (dpo.ADAM_EPS, theirs.adam_epsilon),
        "reference log-probs precomputed": (True,
                                            theirs.precompute_ref_log_probs)})
    return pairs
  high = (theirs.epsilon if theirs.epsilon_high is None
          else theirs.epsilon_high)
  pairs.update({
      "responses per iteration": (ours.batch_size,
                                  theirs.generation_batch_size),
      "group size G": (ours.group_size, theirs.num_generations),
      "response length": (ours.response_length,
                          theirs.max_completion_length),
      "temperature": (f(ours.temperature), theirs.temperature),
      "top k, top p": ((ours.top_k, f(ours.top_p)),
                       (theirs.top_k, theirs.top_p)),
      "beta": (f(ours.kl_coef), theirs.beta),
      "epochs (num_iterations)": (ours.epochs, theirs.num_iterations),
      "clip eps low, high": ((f(ours.clip_eps), f(ours.clip_eps_high)),
                             (theirs.epsilon, high)),
      "adam eps": (1e-5, theirs.adam_epsilon),
  })
  if method == "grpo":
    pairs.update({
        "loss type": (ours.loss_type, theirs.loss_type),
        "scale rewards": (ours.scale_rewards, theirs.scale_rewards),
        "ratio": (ours.ratio, theirs.importance_sampling_level),
        "dual clip": (f(ours.dual_clip), f(theirs.delta or 0.0))})
  else:
    pairs["normalize advantages"] = (ours.normalize_advantages,
                                     theirs.normalize_advantages)
  return pairs


# ------------------------------------------------------------------ ours


def random_pairs(args, prompts) -> pairs_lib.PreferencePairs:
  """``4 × pairs`` pairs: our prompts, random responses of
  ``response_length`` tokens whose last is the stop token."""
  n, r = 4 * args.pairs, args.response_length
  rng = np.random.default_rng(args.seed + 4)
  prompt = np.asarray(prompts[:n], np.int32)
  sides = [np.concatenate([rng.integers(2, args.vocab, (n, r - 1)),
                           np.full((n, 1), STOP)], 1).astype(np.int32)
           for _ in range(2)]
  full = lambda x: np.ones(x.shape, bool)  # noqa: E731
  return pairs_lib.PreferencePairs(prompt, full(prompt), sides[0],
                                   full(sides[0]), sides[1], full(sides[1]))


def our_data(method, model, policy, reward, prompts, pairs):
  if method == "dpo":
    return dpo.DPOData(train=pairs, valid=jax.tree.map(lambda x: x[:8], pairs),
                       ref_params=policy)
  mask = np.ones(prompts.shape, bool)
  return rl.RLData(prompts=prompts, prompt_mask=mask,
                   eval_prompts=prompts[:8], eval_prompt_mask=mask[:8],
                   ref_params=policy, reward_params=reward,
                   critic_params=reward, score_fn=rl.RewardModelScore(model))


def run_ours(method, config, data, args):
  """Compile time, then seconds of each timed iteration (one jitted
  ``update``)."""
  return trl_common.time_updates(LEARNERS[method], config, data, args.seed,
                                 args.warmup, args.iterations)


# ------------------------------------------------------------------- TRL


def _text(tok, rows, trailing: str = "") -> list[str]:
  """Each row of token ids as the tokenizer's words, space-separated."""
  return [" ".join(tok.convert_ids_to_tokens(row.tolist())) + trailing
          for row in rows]


def _trl_trainer(method, config, args, model, policy, reward, prompts,
                 pairs, out):
  """TRL's trainer of ``method`` on our weights and data, and the export's
  error."""
  import datasets
  import transformers
  import trl

  lm = trl_common.hf_model(transformers.GPT2LMHeadModel, model, policy,
                           False)
  tok = trl_common.tokenizer(model.vocab_size)
  if method == "dpo":
    error = trl_common.export_error(model, policy, None, lm, None, prompts)
    # The prompt ends in a space: TRL tokenises prompt + response text.
    dataset = datasets.Dataset.from_dict({
        "prompt": _text(tok, pairs.prompt, " "),
        "chosen": _text(tok, pairs.chosen),
        "rejected": _text(tok, pairs.rejected)})
    ref = trl_common.hf_model(transformers.GPT2LMHeadModel, model, policy,
                              False)
    trainer = trl.DPOTrainer(model=lm, ref_model=ref, args=config,
                             train_dataset=dataset, processing_class=tok)
    got = trainer.train_dataset
    for name, ids in (("prompt", pairs.prompt), ("chosen", pairs.chosen),
                      ("rejected", pairs.rejected)):
      if got[f"{name}_ids"] != ids.tolist():
        raise RuntimeError(f"TRL's tokenised {name} ids are not ours")
    return trainer, error
  rm = trl_common.hf_model(transformers.GPT2ForSequenceClassification, model,
                           reward, True)
  error = trl_common.export_error(model, policy, reward, lm, rm, prompts)
  path = os.path.join(out, "policy")
  lm.save_pretrained(path)  # TRL loads the policy and its reference here
  texts = _text(tok, prompts, " ")
  if tok(texts)["input_ids"] != prompts.tolist():
    raise RuntimeError("TRL's tokenised prompts are not ours")
  cls = trl.GRPOTrainer if method == "grpo" else trl.RLOOTrainer
  trainer = cls(model=path, reward_funcs=rm, args=config,
                train_dataset=datasets.Dataset.from_dict({"prompt": texts}),
                processing_class=tok, reward_processing_classes=tok)
  return trainer, error


def _instrument(method, trainer, phases, stops):
  """Wrap the trainer's phases in ``phases``'s clock, count its models'
  forward passes, and mark each optimizer step's end."""
  import torch
  import transformers

  wrap = phases.wrap
  t = trainer
  if method == "dpo":
    t.compute_loss = wrap(t.compute_loss, lambda *a, **k: "forward + loss")
    models = (("policy", t.model),)
  else:
    generate = t._generate

    def generate_and_count(prompts):
      out = generate(prompts)
      ends = [ids[-1] in t.eos_token_ids for ids in out[1] if ids]
      stops.append(float(np.mean(ends)) if ends else 0.0)
      return out

    t._generate = wrap(generate_and_count, lambda *a, **k: (
        "generation (tokenise, HF generate, decode)"))
    t._calculate_rewards = wrap(t._calculate_rewards, lambda *a, **k: (
        "reward model (re-tokenise, forward)"))
    t._get_per_token_logps_and_entropies = wrap(
        t._get_per_token_logps_and_entropies, lambda m, *a, **k: (
            "reference forward" if m is t.ref_model else
            "update forward" if torch.is_grad_enabled() else
            "old log-probabilities forward"))
    models = (("policy", t.model), ("reference", t.ref_model),
              ("reward", t.reward_funcs[0]))
  t.accelerator.backward = wrap(t.accelerator.backward,
                                lambda *a, **k: "backward")
  t._clip_grad_norm = wrap(t._clip_grad_norm,
                           lambda *a, **k: "gradient clip")
  hooks = [m.register_forward_pre_hook(phases.count(name), with_kwargs=True)
           for name, m in models if m is not None]
  clock = {}

  def before_step(*a, **k):
    clock["start"] = time.perf_counter()

  def after_step(*a, **k):
    phases.seconds["optimizer step"] += time.perf_counter() - clock["start"]
    phases.calls["optimizer step"] += 1

  trainer.add_callback(type("Clock", (transformers.TrainerCallback,), {
      "on_train_begin": phases.mark, "on_step_end": phases.mark,
      "on_pre_optimizer_step": before_step,
      "on_optimizer_step": after_step})())
  for callback in (transformers.PrinterCallback,
                   transformers.ProgressCallback):
    trainer.remove_callback(callback)
  return hooks


def run_trl(method, ours, args, model, policy, reward, prompts, pairs):
  os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
  os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's reference pass
  import datasets
  import torch
  import transformers

  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  transformers.logging.set_verbosity_error()
  transformers.logging.disable_progress_bar()
  datasets.disable_progress_bars()
  warnings.filterwarnings("ignore", category=FutureWarning)
  warnings.filterwarnings("ignore", category=UserWarning)
  epochs = 1 if method == "dpo" else ours.epochs
  with tempfile.TemporaryDirectory() as out:
    config = trl_config(method, ours, args, os.path.join(out, "run"))
    trainer, export_error = _trl_trainer(method, config, args, model, policy,
                                         reward, prompts, pairs, out)
    phases, stops = trl_common.Phases(), []
    hooks = _instrument(method, trainer, phases, stops)
    gc.collect()
    gc.freeze()  # a collection would otherwise scan JAX's heap too
    try:
      trainer.train()
    finally:
      gc.unfreeze()
      for hook in hooks:
        hook.remove()
  seconds, (phase_s, calls, forwards) = phases.per_iteration(
      args.warmup * epochs, epochs)
  total = float(np.mean(seconds))
  share = {k: v / total for k, v in phase_s.items()}
  share["other (Trainer loop, data, loss arithmetic, logging)"] = (
      1 - sum(share.values()))
  policy_model = trainer.model
  return {"iteration_seconds": seconds, "phase_share": share,
          "calls_per_iteration": calls, "forwards_per_iteration": forwards,
          "stop_fraction": (float(np.mean(stops[args.warmup:])) if stops
                            else float("nan")),
          "settings": {k: [repr(a), repr(b)] for k, (a, b) in setting_pairs(
              method, ours, trainer.args).items()},
          "policy_dtype": str(next(policy_model.parameters()).dtype),
          "mixed_precision": trainer.accelerator.mixed_precision,
          "gradient_checkpointing": [
              trainer.args.gradient_checkpointing,
              policy_model.is_gradient_checkpointing],
          "optimizer": type(trainer.optimizer.optimizer).__name__,
          "attention": policy_model.config._attn_implementation,
          "export_max_abs_error": {"logits": export_error[0],
                                   "score": export_error[1]},
          "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
          "peak_rss_mb_after": trl_common.rss_mb()}


# ------------------------------------------------------------------ main


def _runs(args):
  """``(row name, method, epochs)`` in the order they run."""
  for method in args.methods:
    for epochs in ([1] if method == "dpo" else args.epochs):
      name = method if method == "dpo" else f"{method}, {epochs} epoch" + (
          "s" if epochs > 1 else "")
      yield name, method, epochs


def main():
  args = parse_args()
  missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
  if missing:
    print(f"rlhf_trl_family.py: {', '.join(missing)} not installed; install "
          f"the test extra (`make bench-rlhf-trl-family`).", file=sys.stderr)
    sys.exit(2)
  model, policy, reward, prompts = rlhf_trl.setup(args)
  pairs = random_pairs(args, prompts)
  print(f"JAX {jax.__version__} on {jax.default_backend()}, "
        f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cores "
        f"({args.threads} torch threads), "
        f"{platform.machine()}; size {args.size}: {args.layers} layers, "
        f"width {args.width}, vocabulary {args.vocab}; {args.prompts} prompts"
        f" × G={args.group} of {args.prompt_length} tokens, "
        f"{args.response_length}-token responses; DPO {args.pairs} pairs per "
        f"step; {args.warmup} warm-up + {args.iterations} timed iterations "
        f"per side", flush=True)
  results = {}
  for name, method, epochs in _runs(args):
    config = our_config(method, args, model, epochs)
    data = our_data(method, model, policy, reward, prompts, pairs)
    ours = run_ours(method, config, data, args)
    print(f"{name}: ours compiled in {ours['compile_seconds']:.1f} s, "
          f"{np.mean(ours['iteration_seconds']):.3f} s per iteration; TRL "
          f"next", flush=True)
    theirs = run_trl(method, config, args, model, policy, reward, prompts,
                     pairs)
    units = args.pairs if method == "dpo" else config.batch_size
    for side in (ours, theirs):
      seconds = float(np.mean(side["iteration_seconds"]))
      side.update(seconds_per_iteration=seconds,
                  units_per_second=units / seconds,
                  response_tokens_per_second=(
                      None if method == "dpo" else
                      units * args.response_length / seconds))
    results[name] = {"method": method, "epochs": epochs,
                     "unit": "pairs" if method == "dpo" else "episodes",
                     "ours": ours, "trl": theirs,
                     "ours_over_trl": (ours["units_per_second"]
                                       / theirs["units_per_second"])}
    print(f"{name}: TRL {theirs['seconds_per_iteration']:.3f} s per "
          f"iteration; ours / TRL {results[name]['ours_over_trl']:.2f}x",
          flush=True)
  report(args, results)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"settings": vars(args), "results": results,
                 "platform": {"jax": jax.__version__,
                              "cores": os.cpu_count(),
                              "cores_used": len(os.sched_getaffinity(0)),
                              "machine": platform.machine()}}, f, indent=1)


def report(args, results):
  """The markdown table, then each run's settings, checks and TRL's
  phases."""
  first = next(iter(results.values()))["trl"]
  print(f"\nTRL: policy parameters {first['policy_dtype']}, mixed precision "
        f"{first['mixed_precision']!r}, gradient checkpointing (arg, model) "
        f"{first['gradient_checkpointing']}, optimizer {first['optimizer']}, "
        f"attention {first['attention']!r}, torch {first['torch']} with "
        f"{first['torch_threads']} threads")
  print("\n| method | ours (units/s) | TRL (units/s) | ours / TRL | ours "
        "tokens/s | TRL tokens/s | ours s/iter | TRL s/iter | our compile "
        "(s) |")
  print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  tokens = lambda v: "-" if v is None else f"{v:,.0f}"  # noqa: E731
  for name, r in results.items():
    ours, theirs = r["ours"], r["trl"]
    print(f"| {name} | {ours['units_per_second']:.1f} {r['unit']} | "
          f"{theirs['units_per_second']:.1f} {r['unit']} | "
          f"**{r['ours_over_trl']:.2f}x** | "
          f"{tokens(ours['response_tokens_per_second'])} | "
          f"{tokens(theirs['response_tokens_per_second'])} | "
          f"{ours['seconds_per_iteration']:.3f} | "
          f"{theirs['seconds_per_iteration']:.3f} | "
          f"{ours['compile_seconds']:.1f} |")
  last = list(results.values())[-1]
  print(f"\npeak resident memory of the process: "
        f"{last['trl']['peak_rss_mb_after']:,.0f} MB")
  for name, r in results.items():
    theirs = r["trl"]
    err = theirs["export_max_abs_error"]
    unequal = {k: v for k, v in theirs["settings"].items() if v[0] != v[1]}
    print(f"\n{name}: export max |Δ logit| {err['logits']:.1e}, max "
          f"|Δ score| {err['score']:.1e}; stop fraction ours "
          f"{r['ours']['stop_fraction']:.3f}, TRL "
          f"{theirs['stop_fraction']:.3f}; settings "
          + ("equal" if not unequal else f"DIFFER: {unequal}"))
    fwd = theirs["forwards_per_iteration"]
    print("  TRL forwards per iteration: " + ", ".join(
        f"{m} {fwd[m]:g} ({fwd[m + ' tokens']:,.0f} tokens)"
        for m in ("policy", "reference", "reward") if m in fwd))
    print("  TRL's iteration: " + ", ".join(
        f"{k} {v:.1%}" for k, v in sorted(theirs["phase_share"].items(),
                                          key=lambda kv: -kv[1])))


if __name__ == "__main__":
  main()
