"""``jaxrl-align rlhf prefs``: continuations of corpus prefixes sampled from
the pretrained model, compared by simulated annotators. The run directory
holds ``prefs.jsonl`` (one pair per line: prompt, chosen and rejected as
texts and as token ids, annotator, gold scores, split; see
:mod:`.pair_files`) and ``summary.json``."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import _checks
from jaxrl_align import learner
from jaxrl_align.host import files
from jaxrl_align.host import monitor
from jaxrl_align.host import runner
from jaxrl_align.host.rlhf import _common
from jaxrl_align.host.rlhf import pair_files
from jaxrl_align.rlhf import generation
from jaxrl_align.rlhf import model as model_lib


FILES = (pair_files.FILE,)  # besides summary.json
KIND = "prefs"  # of its run directories
files.declare(KIND, FILES + ("summary.json",), runner=False)


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
    batch_size: prompts per generation call (at most ``num_prompts``).
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
    _common.check_split_and_seed(self)


def run_prefs(out: str, sft_dir: str, settings: PrefsSettings = PrefsSettings(),
              *, documents: list[str] | None = None, overwrite: bool = False,
              progress: bool = True) -> dict[str, Any]:
  """Samples continuations with the pretrained model and has simulated
  annotators compare them; writes ``prefs.jsonl`` and ``summary.json``.

  Prompts come from the sft run's training documents (``documents``: the
  texts that run was given instead of the corpus, for tests).

  Raises:
    RunError: the data set has no training or no held-out pair (every pair
      of a split was a tie); the files are written, for inspection.
  """
  from jaxrl_align.host.rlhf import corpus

  sft_identity = _common.identity(sft_dir, "sft", "--sft")
  model_config, params, tokenizer = _common.load_sft(sft_dir)
  total = settings.prompt_tokens + settings.response_tokens
  if total > model_config.max_len:
    raise ValueError(f"`prompt_tokens` + `response_tokens` = {total} exceeds "
                     f"the model's max_len {model_config.max_len}.")
  docs = documents if documents is not None else corpus.load_documents()
  train_docs, _ = corpus.split(docs, *_common.sft_split(sft_dir))
  prompts = corpus.prompts(tokenizer, train_docs, settings.num_prompts,
                           settings.prompt_tokens, settings.seed)
  with files.prepare_run_dir(out, KIND, overwrite=overwrite):
    start = time.perf_counter()
    responses, generated = _sample(model_config, params, tokenizer, prompts,
                                   settings, progress)
    summary = _label(out, tokenizer, prompts, responses, settings)
    summary.update(generated_tokens_per_second=generated
                   / (time.perf_counter() - start),
                   sft_run=os.path.abspath(sft_dir),
                   **{_common.IDENTITIES: {"sft": sft_identity}},
                   settings=dataclasses.asdict(settings))
    files.write_json(os.path.join(out, "summary.json"), summary)
  train = summary["pairs"] - summary["valid_pairs"]
  if not train or not summary["valid_pairs"]:
    raise runner.RunError(
        f"{out}: {train} training and {summary['valid_pairs']} held-out "
        f"pairs ({summary['ties_left_out']} ties left out): a reward model "
        f"needs both; ask for more prompts or longer responses.")
  return summary


def _sample(model_config, params, tokenizer, prompts, settings, progress):
  """``samples_per_prompt`` continuations of each prompt, as ``(token ids
  as sampled, text)`` pairs (the text without the stop token), and the
  number of tokens generated."""
  from jaxrl_align.host.rlhf import corpus

  eos, pad = corpus.special_ids(tokenizer)
  k = settings.samples_per_prompt
  apply_fn = model_lib.Transformer(model_config).apply
  generate = jax.jit(lambda p, t, m, key: generation.generate(
      apply_fn, p, model_config, t, m, key,
      max_new_tokens=settings.response_tokens,
      temperature=settings.temperature, stop_token=eos, pad_token=pad))
  key = jax.random.key(settings.seed)
  responses: list[tuple[list[int], str]] = []
  bar = monitor.progress_bar(len(prompts) * k, 0, progress, unit="sample")
  generated = 0
  size = min(settings.batch_size, len(prompts))  # not more than there are
  for i in range(0, len(prompts), size):
    batch = [p for p in prompts[i:i + size] for _ in range(k)]
    rows = len(batch)
    batch += [batch[0]] * (size * k - rows)  # one shape
    tokens, mask = corpus.left_pad(batch, settings.prompt_tokens, pad)
    key, sub = jax.random.split(key)
    gen = generate(params, jnp.asarray(tokens), jnp.asarray(mask), sub)
    response = np.asarray(gen.response)[:rows]
    live = np.asarray(gen.response_mask)[:rows]
    generated += int(live.sum())
    responses += [([int(t) for t in r[m]],
                   tokenizer.decode([int(t) for t in r[m] if t != eos]))
                  for r, m in zip(response, live)]
    if bar is not None:
      bar.update(rows)
  if bar is not None:
    bar.close()
  return responses, generated


def _label(out, tokenizer, prompts, responses, settings) -> dict[str, Any]:
  """Every pair of a prompt's continuations, labelled by two annotators;
  writes ``prefs.jsonl`` (ties left out) and returns the counts."""
  from jaxrl_align.host.rlhf import annotators

  k = settings.samples_per_prompt
  ids = [i for i, _ in responses]
  responses = [text for _, text in responses]
  lexicon = annotators.load_lexicon()
  scores = annotators.scores(lexicon, responses)        # [N, 10]
  gold = annotators.gold_scores(lexicon, responses)     # [N]
  rng = np.random.default_rng(settings.seed + 1)
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
  records = []
  for j in kept:
    c, r = (first[j], second[j]) if label[j] else (second[j], first[j])
    prompt = prompts[prompt_of_pair[j]]
    records.append(pair_files.record(
        prompt, ids[c], ids[r], prompt=tokenizer.decode(prompt),
        chosen=responses[c], rejected=responses[r],
        annotator=int(who[j]), gold_chosen=float(gold[c]),
        gold_rejected=float(gold[r]),
        split="valid" if prompt_of_pair[j] in valid_prompts else "train"))
  pair_files.write(out, records)
  label, label2 = label[kept], label2[kept]
  gold_margin = gold_margin[kept]
  decided = gold_margin != 0
  return {
      "pairs": int(len(kept)),
      "ties_left_out": int(np.sum(tie)),
      "valid_pairs": int(sum(p in valid_prompts
                             for p in prompt_of_pair[kept])),
      "annotator_agreement": learner.finite_mean(label == label2),
      "label_agrees_with_gold": learner.finite_mean(
          label[decided] == (gold_margin[decided] > 0)),
      "pairs_with_gold_tie": int(np.sum(~decided))}


def _report(s: dict[str, Any]) -> str:
  pct = _common.percent
  return (f"{s['pairs']} pairs ({s['valid_pairs']} held out; "
          f"{s['ties_left_out']} ties left out); two annotators agree on "
          f"{pct(s['annotator_agreement'])} of pairs; labels agree with the "
          f"gold reward on {pct(s['label_agrees_with_gold'])}; generation "
          f"{s['generated_tokens_per_second']:.0f} tokens/s.")


def main(out, inputs, options, **flags) -> int:
  """``jaxrl-align rlhf prefs``."""
  summary = run_prefs(out, inputs["sft"],
                      PrefsSettings(**options["preferences"]), **flags)
  text, code = _common.ending("prefs", out, summary, _report)
  print(text, file=sys.stderr if code else sys.stdout)
  return code


COMMAND = _common.Command(
    help="sample continuations and collect simulated preferences",
    description="Continuations of corpus prefixes by the pretrained model, "
                "compared by annotators built from vaderSentiment's "
                "individual human ratings (Bradley-Terry sampling).",
    groups=(("preferences", PrefsSettings, None),), main=main,
    inputs=(("sft", "a `jaxrl-align rlhf sft` run directory"),),
    resumable=False, needs=("tokenizers", "gensim", "vaderSentiment"))
