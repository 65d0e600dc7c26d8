"""Host side of RLHF: the run directories behind ``jaxrl-align rlhf ...``.

``sft`` trains the byte-level BPE tokenizer and pretrains the transformer on
the corpus, keeping the parameters with the lowest validation loss. A run
directory holds::

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
    _check_split_and_seed(self)


def _check_split_and_seed(settings) -> None:
  _checks.check_scalar_in_range("valid_fraction", settings.valid_fraction, 0,
                                1, low_inclusive=False, high_inclusive=False)
  _checks.check_positive_int("seed", settings.seed, allow_zero=True)


def _mean(x) -> float | None:
  """Mean of a possibly empty array (None when empty: JSON has no NaN)."""
  x = np.asarray(x, np.float64)
  return float(x.mean()) if x.size else None


def _write_json(path: str, value: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)


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
  _write_json(os.path.join(out, "config.json"), {
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
  bar = experiment._progress_bar(config.steps, 0, progress)
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
  _write_json(os.path.join(out, "summary.json"), summary)
  return summary


def load_sft(run_dir: str):
  """``(model_config, params, tokenizer)`` of an ``sft`` run."""
  with open(os.path.join(run_dir, "config.json")) as f:
    stored = json.load(f)
  model_config = model_lib.TransformerConfig(**stored["model"])
  tokenizer = corpus.load_tokenizer(os.path.join(run_dir, "tokenizer.json"))
  template = model_lib.Transformer(model_config).init(
      jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
  store = checkpoints.Checkpoints(os.path.join(run_dir, "model"), keep=1)
  _, params = store.restore(template)
  store.close()
  return model_config, params, tokenizer


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


# ------------------------------------------------------------ preferences


@dataclasses.dataclass(frozen=True)
class PrefsSettings:
  """How the preference data set is made.

  Attributes:
    num_prompts: prompts (corpus prefixes of training documents).
    prompt_tokens: tokens per prompt.
    response_tokens: tokens sampled after each prompt.
    samples_per_prompt: continuations per prompt; every pair of them is
      compared (k (k - 1) / 2 pairs per prompt).
    beta: annotators' Bradley–Terry inverse temperature.
    temperature: sampling temperature of the pretrained model.
    batch_size: prompts per generation call.
    valid_fraction: share of prompts whose pairs are held out.
    seed: seeds prompts, sampling, annotators.
  """
  num_prompts: int = 1024
  prompt_tokens: int = 16
  response_tokens: int = 48
  samples_per_prompt: int = 6
  beta: float = 10.0
  temperature: float = 1.0
  batch_size: int = 64
  valid_fraction: float = 0.2
  seed: int = 0

  def __post_init__(self):
    for name in ("num_prompts", "prompt_tokens", "response_tokens",
                 "batch_size", "samples_per_prompt"):
      _checks.check_positive_int(name, getattr(self, name))
    _checks.check_scalar_in_range("samples_per_prompt",
                                  self.samples_per_prompt, 2, math.inf)
    for name in ("beta", "temperature"):
      _checks.check_scalar_in_range(name, getattr(self, name), 0, math.inf,
                                    low_inclusive=False)
    _check_split_and_seed(self)


def _prompts(tokenizer, docs, settings: PrefsSettings) -> list[list[int]]:
  """Prefixes of ``prompt_tokens`` tokens taken at evenly spaced offsets of
  the documents, cycling through them, shuffled by the seed."""
  streams = [tokenizer.encode(d).ids for d in docs]
  n = settings.prompt_tokens
  starts = [(i, s) for i, ids in enumerate(streams)
            for s in range(0, max(len(ids) - 2 * n, 1), 3 * n)]
  order = np.random.default_rng(settings.seed).permutation(len(starts))
  picked = [starts[j] for j in order[:settings.num_prompts]]
  if len(picked) < settings.num_prompts:
    raise ValueError(f"The corpus gives only {len(picked)} prompts of "
                     f"{n} tokens; ask for fewer.")
  return [streams[i][s:s + n] for i, s in picked]


def run_prefs(out: str, sft_dir: str, settings: PrefsSettings = PrefsSettings(),
              *, documents: list[str] | None = None, overwrite: bool = False,
              progress: bool = True) -> dict[str, Any]:
  """Samples continuations with the pretrained model and has simulated
  annotators compare them; writes ``prefs.jsonl`` and ``summary.json``.

  Prompts come from the sft run's training documents (``documents``: the
  texts that run was given instead of the corpus, for tests).
  """
  from jaxrl_align.rlhf import annotators

  model_config, params, tokenizer = load_sft(sft_dir)
  total = settings.prompt_tokens + settings.response_tokens
  if total > model_config.max_len:
    raise ValueError(f"prompt_tokens + response_tokens = {total} exceeds the "
                     f"model's max_len {model_config.max_len}.")
  experiment.prepare_run_dir(out, resume=False, overwrite=overwrite)
  with open(os.path.join(sft_dir, "config.json")) as f:
    sft_settings = json.load(f)["settings"]
  docs = documents if documents is not None else corpus.load_documents()
  train_docs, _ = corpus.split(docs,
                               sft_settings["valid_fraction"],
                               sft_settings["seed"])
  prompts = _prompts(tokenizer, train_docs, settings)
  eos, pad = corpus.special_ids(tokenizer)
  k = settings.samples_per_prompt
  apply_fn = model_lib.Transformer(model_config).apply
  generate = jax.jit(lambda p, t, m, key: generation.generate(
      apply_fn, p, model_config, t, m, key,
      max_new_tokens=settings.response_tokens,
      temperature=settings.temperature, stop_token=eos, pad_token=pad))
  key = jax.random.key(settings.seed)
  responses: list[str] = []
  bar = experiment._progress_bar(len(prompts) * k, 0, progress)
  start = time.perf_counter()
  generated = 0
  for i in range(0, len(prompts), settings.batch_size):
    batch = [p for p in prompts[i:i + settings.batch_size] for _ in range(k)]
    rows = len(batch)
    batch += [batch[0]] * (settings.batch_size * k - rows)  # one shape
    tokens, mask = corpus.left_pad(batch, settings.prompt_tokens, pad)
    key, sub = jax.random.split(key)
    gen = generate(params, jnp.asarray(tokens), jnp.asarray(mask), sub)
    response = np.asarray(gen.response)[:rows]
    live = np.asarray(gen.response_mask)[:rows]
    generated += int(live.sum())
    responses += [tokenizer.decode([int(t) for t in r[m] if t != eos])
                  for r, m in zip(response, live)]
    if bar is not None:
      bar.update(rows)
  gen_seconds = time.perf_counter() - start
  if bar is not None:
    bar.close()

  lexicon = annotators.load_lexicon()
  scores = annotators.scores(lexicon, responses)        # [N, 10]
  gold = annotators.gold_scores(lexicon, responses)     # [N]
  rng = np.random.default_rng(settings.seed + 1)
  # Every pair of a prompt's continuations.
  i, j = np.triu_indices(k, 1)
  base = np.arange(len(prompts))[:, None] * k
  first, second = (base + i).ravel(), (base + j).ravel()
  n_pairs = len(first)
  # Each pair is labelled by two different annotators: the first label is
  # the data set's; the second measures agreement.
  who = rng.integers(0, annotators.NUM_RATERS, n_pairs)
  other = (who + rng.integers(1, annotators.NUM_RATERS, n_pairs)
           ) % annotators.NUM_RATERS
  label = annotators.prefer_first(scores[first, who], scores[second, who],
                                  settings.beta, rng)
  label2 = annotators.prefer_first(scores[first, other],
                                   scores[second, other], settings.beta, rng)
  prompt_of_pair = first // k
  valid_prompts = set(np.random.default_rng(settings.seed + 2).permutation(
      len(prompts))[:max(1, int(settings.valid_fraction * len(prompts)))])
  gold_margin = gold[first] - gold[second]
  # An annotator who scores both texts the same (most often: neither has a
  # word in the lexicon) calls it a tie; ties are left out, as preference
  # data sets leave out "no preference" answers.
  tie = scores[first, who] == scores[second, who]
  kept = np.flatnonzero(~tie)
  with open(os.path.join(out, "prefs.jsonl"), "w") as f:
    for j in kept:
      c, r = (first[j], second[j]) if label[j] else (second[j], first[j])
      f.write(json.dumps({
          "prompt": tokenizer.decode(prompts[prompt_of_pair[j]]),
          "chosen": responses[c], "rejected": responses[r],
          "annotator": int(who[j]), "gold_chosen": float(gold[c]),
          "gold_rejected": float(gold[r]),
          "split": "valid" if prompt_of_pair[j] in valid_prompts else "train",
      }) + "\n")
  label, label2 = label[kept], label2[kept]
  gold_margin = gold_margin[kept]
  decided = gold_margin != 0
  summary = {
      "pairs": int(len(kept)),
      "ties_left_out": int(np.sum(tie)),
      "valid_pairs": int(sum(p in valid_prompts
                             for p in prompt_of_pair[kept])),
      "annotator_agreement": _mean(label == label2),
      "label_agrees_with_gold": _mean(
          label[decided] == (gold_margin[decided] > 0)),
      "pairs_with_gold_tie": int(np.sum(~decided)),
      "generated_tokens_per_second": generated / gen_seconds,
      "sft_run": os.path.abspath(sft_dir),
      "settings": dataclasses.asdict(settings),
  }
  _write_json(os.path.join(out, "summary.json"), summary)
  return summary


# ------------------------------------------------------------ reward model


def _encode_pairs(tokenizer, records, length: int):
  """Left-padded ``(chosen, chosen_mask, rejected, rejected_mask)`` of
  ``prompt + response`` texts, each ending with EOS (the reward is read
  there), as long as the longest sequence (at most ``length``)."""
  eos, pad = corpus.special_ids(tokenizer)
  seqs = {side: [tokenizer.encode(r["prompt"] + r[side]).ids + [eos]
                 for r in records] for side in ("chosen", "rejected")}
  length = min(length, max(len(x) for v in seqs.values() for x in v))
  out = []
  for side in ("chosen", "rejected"):
    out += list(corpus.left_pad(seqs[side], length, pad))
  return out


@functools.lru_cache(maxsize=None)
def _scorer(model_config: model_lib.TransformerConfig):
  from jaxrl_align.rlhf import reward_model

  apply_fn = model_lib.Transformer(model_config).apply
  return jax.jit(lambda p, t, m: reward_model.rewards(apply_fn, p, t, m))


def _score(model_config, params, tokens, mask, batch: int = 256) -> np.ndarray:
  """Rewards of ``[N, T]`` sequences, in batches."""
  fn = _scorer(model_config)
  return np.concatenate([np.asarray(fn(params, jnp.asarray(tokens[i:i + batch]),
                                       jnp.asarray(mask[i:i + batch])))
                         for i in range(0, len(tokens), batch)])


def run_rm(out: str, sft_dir: str, prefs_dir: str, config=None, *,
           overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
  """Trains the reward model from the pretrained parameters on the
  preference pairs; reports held-out accuracy against the annotators'
  labels and against the gold reward; normalises the saved model's rewards
  on the reference policy's samples (all responses in the data set)."""
  from jaxrl_align.rlhf import reward_model

  config = config or reward_model.RMConfig()
  model_config, params, tokenizer = load_sft(sft_dir)
  experiment.prepare_run_dir(out, resume=False, overwrite=overwrite)
  with open(os.path.join(prefs_dir, "prefs.jsonl")) as f:
    records = [json.loads(line) for line in f]
  train = [r for r in records if r["split"] == "train"]
  valid = [r for r in records if r["split"] == "valid"]
  if not train or not valid:
    raise ValueError(f"{prefs_dir}: the reward model needs training and "
                     f"held-out pairs; found {len(train)} and {len(valid)}.")
  length = model_config.max_len
  tr = _encode_pairs(tokenizer, train, length)
  va = _encode_pairs(tokenizer, valid, length)
  _write_json(os.path.join(out, "config.json"), {
      "rm": dataclasses.asdict(config), "sft_run": os.path.abspath(sft_dir),
      "prefs_run": os.path.abspath(prefs_dir), "model":
      dataclasses.asdict(model_config), "train_pairs": len(train),
      "valid_pairs": len(valid)})
  state = reward_model.init(params, config)
  step = jax.jit(functools.partial(reward_model.step, model_config, config))
  rng = np.random.default_rng(0)
  b = config.batch_size
  steps_per_epoch = max(1, len(train) // b)
  bar = experiment._progress_bar(config.epochs * steps_per_epoch, 0, progress)
  start = time.perf_counter()
  with open(os.path.join(out, "metrics.jsonl"), "w") as f:
    for epoch in range(config.epochs):
      order = rng.permutation(len(train))
      losses, accs = [], []
      for s in range(steps_per_epoch):
        idx = order[s * b:(s + 1) * b]
        if len(idx) < b:  # one shape: top up from the start of the order
          idx = np.concatenate([idx, order[:b - len(idx)]])
        state, loss, acc = step(state, *(jnp.asarray(x[idx]) for x in tr))
        losses.append(float(loss))
        accs.append(float(acc))
        if bar is not None:
          bar.update(1)
      r_c = _score(model_config, state.params, va[0], va[1])
      r_r = _score(model_config, state.params, va[2], va[3])
      f.write(json.dumps({"epoch": epoch + 1, "train_loss": np.mean(losses),
                          "train_accuracy": np.mean(accs),
                          "valid_accuracy": float(np.mean(r_c > r_r))})
              + "\n")
  wall = time.perf_counter() - start
  if bar is not None:
    bar.close()

  # Normalise on reference-policy samples: every response of the data set.
  ref_rewards = np.concatenate([
      _score(model_config, state.params, t, m)
      for t, m in ((tr[0], tr[1]), (tr[2], tr[3]), (va[0], va[1]),
                   (va[2], va[3]))])
  params = reward_model.normalize_head(state.params, float(ref_rewards.mean()),
                                       float(ref_rewards.std()))
  store = checkpoints.Checkpoints(os.path.join(out, "model"), keep=1)
  store.save(config.epochs, params)
  store.close()
  r_c = _score(model_config, params, va[0], va[1])
  r_r = _score(model_config, params, va[2], va[3])
  gold_c = np.array([r["gold_chosen"] for r in valid])
  gold_r = np.array([r["gold_rejected"] for r in valid])
  decided = gold_c != gold_r
  rm_first = r_c > r_r
  summary = {
      "valid_accuracy_vs_annotators": float(np.mean(rm_first)),
      "valid_accuracy_vs_gold": _mean(
          rm_first[decided] == (gold_c > gold_r)[decided]),
      "annotator_labels_vs_gold": _mean((gold_c > gold_r)[decided]),
      "valid_pairs": len(valid), "train_pairs": len(train),
      "pairs_per_second": config.epochs * steps_per_epoch * b / wall,
      "reference_reward_mean_before": float(ref_rewards.mean()),
      "reference_reward_std_before": float(ref_rewards.std()),
      "wall_seconds": wall}
  _write_json(os.path.join(out, "summary.json"), summary)
  return summary
