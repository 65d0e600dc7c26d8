"""``jaxrl-align rlhf sft``: trains the byte-level BPE tokenizer and
pretrains the transformer on the corpus, keeping the parameters with the
lowest validation loss. The run directory holds::

    config.json      model and training settings, corpus source
    tokenizer.json   the tokenizer
    metrics.jsonl    one JSON object per logged step
    model/           orbax checkpoint of the kept parameters
    samples.txt      continuations of validation prompts
    summary.json     what the run reached
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import _checks
from jaxrl_align import checkpoints
from jaxrl_align import experiment
from jaxrl_align.rlhf import corpus
from jaxrl_align.rlhf import generation
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import sft
from jaxrl_align.rlhf_runs import _common


@dataclasses.dataclass(frozen=True)
class SFTRunSettings:
  """What an ``sft`` run does besides the optimisation.

  Attributes:
    vocab_size: BPE vocabulary size (>= 258).
    valid_fraction: share of the documents held out for validation.
    eval_every: steps between validation losses.
    seed: seeds the split, the batches and the initialisation.
    num_samples: validation prompts continued at the end.
  """
  vocab_size: int = 1024
  valid_fraction: float = 0.1
  eval_every: int = 50
  seed: int = 0
  num_samples: int = 4

  def __post_init__(self):
    _checks.check_positive_int("vocab_size", self.vocab_size)
    _checks.check_scalar_in_range("vocab_size", self.vocab_size, 258, math.inf)
    for name in ("eval_every", "num_samples"):
      _checks.check_positive_int(name, getattr(self, name))
    _common.check_split_and_seed(self)


def run_sft(out: str, model_fields: dict[str, Any] | None = None,
            config: sft.SFTConfig = sft.SFTConfig(),
            settings: SFTRunSettings = SFTRunSettings(), *,
            documents: list[str] | None = None, overwrite: bool = False,
            progress: bool = True) -> dict[str, Any]:
  """Trains the tokenizer and pretrains the model; returns the summary.

  Args:
    out: run directory (must be empty or absent unless ``overwrite``).
    model_fields: :class:`TransformerConfig` fields other than
      ``vocab_size`` (which the tokenizer sets).
    config: optimisation settings.
    settings: tokenizer, split, logging.
    documents: texts to use instead of the corpus (tests).
    overwrite: replace a non-empty ``out``.
    progress: show a progress bar.
  """
  model_fields = dict(model_fields or {})
  if "vocab_size" in model_fields:
    raise ValueError("vocab_size is set by the tokenizer: use "
                     "SFTRunSettings.vocab_size.")
  # Build the model config now so bad fields fail before any work.
  model_lib.TransformerConfig(vocab_size=settings.vocab_size, **model_fields)
  experiment.prepare_run_dir(out, resume=False, overwrite=overwrite)
  docs = documents if documents is not None else corpus.load_documents()
  train_docs, valid_docs = corpus.split(docs, settings.valid_fraction,
                                        settings.seed)
  tokenizer = corpus.train_tokenizer(train_docs, settings.vocab_size)
  tokenizer.save(os.path.join(out, "tokenizer.json"))
  model_config = model_lib.TransformerConfig(
      vocab_size=tokenizer.get_vocab_size(), **model_fields)
  length = model_config.max_len
  train = corpus.windows(corpus.token_stream(tokenizer, train_docs), length)
  valid = corpus.windows(corpus.token_stream(tokenizer, valid_docs), length)
  _common.write_json(os.path.join(out, "config.json"), {
      "model": dataclasses.asdict(model_config),
      "sft": dataclasses.asdict(config),
      "settings": dataclasses.asdict(settings),
      "corpus": corpus.SOURCE if documents is None else "given documents",
      "train_windows": int(train.shape[0]),
      "valid_windows": int(valid.shape[0]),
      "jax": jax.__version__})

  apply_fn = model_lib.Transformer(model_config).apply
  step = jax.jit(functools.partial(sft.step, model_config, config))
  valid_loss = jax.jit(lambda p, t: sft.next_token_loss(
      apply_fn, p, t, jnp.ones(t.shape, bool)))
  state = sft.init(model_config, config, jax.random.key(settings.seed))
  rng = np.random.default_rng(settings.seed)
  mask = jnp.ones((config.batch_size, length), bool)
  valid_tokens = jnp.asarray(valid)
  best = (float(valid_loss(state.params, valid_tokens)), 0, state.params)
  first_valid = best[0]
  bar = experiment.progress_bar(config.steps, 0, progress)
  start = time.perf_counter()
  with open(os.path.join(out, "metrics.jsonl"), "w") as f:
    for i in range(1, config.steps + 1):
      batch = train[rng.integers(0, len(train), config.batch_size)]
      state, loss = step(state, jnp.asarray(batch), mask)
      if i % settings.eval_every == 0 or i == config.steps:
        vl = float(valid_loss(state.params, valid_tokens))
        if vl < best[0]:
          best = (vl, i, state.params)
        f.write(json.dumps({"step": i, "train_loss": float(loss),
                            "valid_loss": vl}) + "\n")
        f.flush()
        if bar is not None:
          bar.set_postfix(loss=f"{float(loss):.2f}", valid=f"{vl:.2f}")
      if bar is not None:
        bar.update(1)
  wall = time.perf_counter() - start
  if bar is not None:
    bar.close()
  best_loss, best_step, params = best
  store = checkpoints.Checkpoints(os.path.join(out, "model"), keep=1)
  store.save(best_step, params)
  store.close()

  samples = _samples(apply_fn, params, model_config, tokenizer, valid_docs,
                     settings)
  with open(os.path.join(out, "samples.txt"), "w") as f:
    for prompt, text in samples:
      f.write(f"PROMPT: {prompt}\nCONTINUATION: {text}\n\n")
  summary = {
      "valid_loss_initial": first_valid, "valid_loss_best": best_loss,
      "best_step": best_step, "steps": config.steps,
      "train_tokens_per_second": config.steps * config.batch_size * length
                                 / wall,
      "wall_seconds": wall, "samples": [s[1] for s in samples]}
  _common.write_json(os.path.join(out, "summary.json"), summary)
  return summary


def _samples(apply_fn, params, model_config, tokenizer, docs, settings,
             prompt_tokens: int = 16, new_tokens: int = 48):
  eos, pad = corpus.special_ids(tokenizer)
  prompts = [tokenizer.encode(d).ids[:prompt_tokens]
             for d in docs[:settings.num_samples]]
  tokens, mask = corpus.left_pad(prompts, prompt_tokens, pad)
  new_tokens = min(new_tokens, model_config.max_len - prompt_tokens)
  gen = jax.jit(lambda p, k: generation.generate(
      apply_fn, p, model_config, jnp.asarray(tokens), jnp.asarray(mask), k,
      max_new_tokens=new_tokens, temperature=0.8, top_k=40, stop_token=eos,
      pad_token=pad))(params, jax.random.key(settings.seed + 1))
  out = []
  for prompt, response, live in zip(prompts, np.asarray(gen.response),
                                    np.asarray(gen.response_mask)):
    out.append((tokenizer.decode(prompt),
                tokenizer.decode([int(t) for t in response[live] if t != eos])))
  return out
