"""What the benchmarks against TRL share (``rlhf_trl.py``: PPO;
``rlhf_trl_family.py``: GRPO, RLOO, DPO): a word-level tokenizer over our
token ids, our transformer exported to Hugging Face GPT-2 models and the
export's error, a clock for the phases of TRL's loop, our side's timed
updates, the peak resident memory. Imported by path (``benchmarks/`` is the scripts' directory); torch,
transformers and tokenizers are imported inside the functions that need
them."""

from __future__ import annotations

import collections
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align.host.rlhf import gpt2
from jaxrl_align.rlhf import model as model_lib

STOP, PAD = 0, 1


def time_updates(learner, config, data, seed: int, warmup: int,
                 iterations: int) -> dict:
  """Our side of a comparison: ``learner.update`` compiled once (timed),
  then ``warmup + iterations`` updates, each timed to its result;
  ``{compile_seconds, iteration_seconds (the last iterations),
  stop_fraction (their mean; NaN for a learner that reports none),
  peak_rss_mb_after}``."""
  data = jax.device_put(data)
  state = learner.init(config, jax.random.key(seed), data)
  start = time.perf_counter()
  update = jax.jit(lambda s, d: learner.update(config, s, d)).lower(
      state, data).compile()
  compile_s = time.perf_counter() - start
  seconds, stops = [], []
  for _ in range(warmup + iterations):
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(update(state, data))
    seconds.append(time.perf_counter() - start)
    stops.append(float(metrics.get("stop_fraction", np.nan)))
  return {"compile_seconds": compile_s,
          "iteration_seconds": seconds[warmup:],
          "stop_fraction": float(np.mean(stops[warmup:])),
          "peak_rss_mb_after": rss_mb()}


def rss_mb() -> float:
  """The process's peak resident memory so far (MB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tokenizer(vocab: int):
  """A ``PreTrainedTokenizerFast`` whose word ``t{i}`` is token ``i``
  (``<stop>`` is 0, the eos; ``<pad>`` is 1), split on whitespace, padded
  on the left; so ``" ".join(f"t{i}" for i in ids)`` tokenizes to ``ids``."""
  import tokenizers
  import transformers

  words = {"<stop>": STOP, "<pad>": PAD,
           **{f"t{i}": i for i in range(2, vocab)}}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(words, "t2"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, eos_token="<stop>", pad_token="<pad>",
      padding_side="left")


def hf_config(model: model_lib.TransformerConfig):
  """``GPT2Config`` of our transformer's shape (eos = stop, pad, one
  label for the sequence-classification head)."""
  import transformers

  hf = {k: v for k, v in gpt2.config_to_hf(model).items()
        if k != "model_type"}
  return transformers.GPT2Config(**hf, bos_token_id=STOP, eos_token_id=STOP,
                                 pad_token_id=PAD, num_labels=1)


def hf_model(cls, model: model_lib.TransformerConfig, params, score: bool):
  """``cls`` (``GPT2LMHeadModel`` or ``GPT2ForSequenceClassification``)
  with our parameters (:func:`jaxrl_align.host.rlhf.gpt2.state_dict`; the
  scalar head with ``score``), in eval mode."""
  import torch

  net = cls(hf_config(model))
  tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in
             gpt2.state_dict(model, params, score=score).items()}
  missing, unexpected = net.load_state_dict(tensors, strict=False)
  if unexpected or set(missing) - {"lm_head.weight"}:
    raise RuntimeError(f"export: missing {missing}, unexpected {unexpected}")
  return net.eval()


def export_error(model, policy, reward, hf_policy, hf_reward, prompts):
  """``(max |Δ logit|, max |Δ score|)``, ours against Hugging Face's, on
  eight prompts followed by 16 random tokens (``hf_reward`` may be None:
  the score's error is then NaN)."""
  import torch

  rng = np.random.default_rng(0)
  tokens = np.concatenate([prompts[:8], rng.integers(
      2, model.vocab_size, (8, 16))], axis=1)
  apply = jax.jit(model_lib.Transformer(model).apply)
  logits, _, _ = apply(policy, jnp.asarray(tokens))
  with torch.no_grad():
    t = torch.from_numpy(tokens)
    hf_logits = hf_policy(input_ids=t).logits.numpy()
    score_error = float("nan")
    if hf_reward is not None:
      _, scalar, _ = apply(reward, jnp.asarray(tokens))
      hidden = hf_reward.transformer(input_ids=t).last_hidden_state
      hf_scalar = hf_reward.score(hidden)[..., 0].numpy()
      score_error = float(np.max(np.abs(np.asarray(scalar) - hf_scalar)))
  return float(np.max(np.abs(np.asarray(logits) - hf_logits))), score_error


class Phases:
  """Wall time and calls of the functions TRL's loop calls, by phase, and
  forward passes (calls and tokens) per model."""

  def __init__(self):
    self.seconds = collections.Counter()
    self.calls = collections.Counter()
    self.forwards = collections.Counter()
    self.marks, self.snapshots = [], []

  def wrap(self, fn, name_of):
    """``fn``, timed under the phase ``name_of(*args, **kwargs)``."""
    def timed(*a, **k):
      start = time.perf_counter()
      try:
        return fn(*a, **k)
      finally:
        name = name_of(*a, **k)
        self.seconds[name] += time.perf_counter() - start
        self.calls[name] += 1
    return timed

  def count(self, name):
    """A forward pre-hook (``with_kwargs=True``) counting ``name``'s passes
    and their input tokens."""
    def hook(module, a, k):
      del module
      ids = k["input_ids"] if "input_ids" in k else a[0]
      self.forwards.update({name: 1, name + " tokens": ids.numel()})
    return hook

  def mark(self, *a, **k):
    """A ``TrainerCallback`` method: the end of an iteration (or step)."""
    del a, k
    self.marks.append(time.perf_counter())
    self.snapshots.append(tuple(collections.Counter(c) for c in (
        self.seconds, self.calls, self.forwards)))

  def per_iteration(self, first: int, every: int = 1):
    """Seconds of each iteration from mark ``first`` on (an iteration is
    ``every`` marks), and the phases' seconds, calls and forwards per
    iteration over them."""
    marks = self.marks[first::every]
    seconds = list(np.diff(marks))
    a, b = self.snapshots[first], self.snapshots[first + every * len(
        seconds)]
    n = max(len(seconds), 1)
    return seconds, [{k: (y[k] - x[k]) / n for k in y} for x, y in zip(a, b)]
