"""``jaxrl-align rlhf rm``: the Bradley–Terry reward model trained on a
``prefs`` run's pairs from an ``sft`` run's parameters. The run directory
holds ``config.json``, ``metrics.jsonl``, ``model/`` (rewards normalised on
reference samples) and ``summary.json``."""

from __future__ import annotations

import dataclasses
import functools
import json
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
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf_runs import _common


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


@dataclasses.dataclass(frozen=True)
class RMRunSettings:
  """What an ``rm`` run does besides the optimisation.

  Attributes:
    dev_fraction: share of the training prompts whose pairs are kept out of
      training to choose the parameters (early stopping); the data set's
      held-out pairs are used for reporting only.
    eval_every: steps between development-set accuracies.
    seed: seeds the development split, the batch order and dropout.
  """
  dev_fraction: float = 0.125
  eval_every: int = 50
  seed: int = 0

  def __post_init__(self):
    _checks.check_scalar_in_range("dev_fraction", self.dev_fraction, 0, 1,
                                  low_inclusive=False, high_inclusive=False)
    _checks.check_positive_int("eval_every", self.eval_every)
    _checks.check_positive_int("seed", self.seed, allow_zero=True)


def _dev_split(records, fraction: float, seed: int):
  """``(train, dev)``: the pairs of a seeded ``fraction`` of the prompts go
  to ``dev`` (whole prompts, so no continuation is in both)."""
  prompts = sorted({r["prompt"] for r in records})
  n_dev = max(1, int(round(fraction * len(prompts))))
  dev = set(np.random.default_rng(seed).permutation(prompts)[:n_dev])
  return ([r for r in records if r["prompt"] not in dev],
          [r for r in records if r["prompt"] in dev])


def _accuracy(model_config, params, pairs) -> float:
  r_c = _score(model_config, params, pairs[0], pairs[1])
  r_r = _score(model_config, params, pairs[2], pairs[3])
  return float(np.mean(r_c > r_r))


def run_rm(out: str, sft_dir: str, prefs_dir: str, config=None,
           settings: RMRunSettings = RMRunSettings(), *,
           overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
  """Trains the reward model from the pretrained parameters on the
  preference pairs, keeping the parameters with the best accuracy on a
  development split of the training prompts; reports accuracy on the
  data set's held-out prompts against the annotators' labels and against
  the gold reward; normalises the saved model's rewards on the reference
  policy's samples (all responses in the data set)."""
  from jaxrl_align.rlhf import reward_model

  config = config or reward_model.RMConfig()
  model_config, params, tokenizer = _common.load_sft(sft_dir)
  with open(os.path.join(prefs_dir, "prefs.jsonl")) as f:
    records = [json.loads(line) for line in f]
  train, dev = _dev_split([r for r in records if r["split"] == "train"],
                          settings.dev_fraction, settings.seed)
  valid = [r for r in records if r["split"] == "valid"]
  if not train or not dev or not valid:
    raise ValueError(f"{prefs_dir}: the reward model needs training, "
                     f"development and held-out pairs; found {len(train)}, "
                     f"{len(dev)} and {len(valid)}.")
  experiment.prepare_run_dir(out, resume=False, overwrite=overwrite)
  length = model_config.max_len
  tr, dv, va = (_encode_pairs(tokenizer, x, length) for x in (train, dev, valid))
  _common.write_json(os.path.join(out, "config.json"), {
      "rm": dataclasses.asdict(config),
      "settings": dataclasses.asdict(settings),
      "sft_run": os.path.abspath(sft_dir),
      "prefs_run": os.path.abspath(prefs_dir),
      "model": dataclasses.asdict(model_config), "train_pairs": len(train),
      "dev_pairs": len(dev), "valid_pairs": len(valid)})
  state = reward_model.init(params, config)
  step = jax.jit(functools.partial(reward_model.step, model_config, config))
  rng = np.random.default_rng(settings.seed)
  key = jax.random.key(settings.seed)
  b = config.batch_size
  steps_per_epoch = max(1, len(train) // b)
  total = config.epochs * steps_per_epoch
  best = (_accuracy(model_config, state.params, dv), 0, state.params)
  bar = experiment.progress_bar(total, 0, progress)
  start = time.perf_counter()
  losses, accs = [], []
  with open(os.path.join(out, "metrics.jsonl"), "w") as f:
    for i in range(1, total + 1):
      if (i - 1) % steps_per_epoch == 0:
        order = rng.permutation(len(train))
      s = (i - 1) % steps_per_epoch
      idx = order[s * b:(s + 1) * b]
      if len(idx) < b:  # one shape: top up from the start of the order
        idx = np.concatenate([idx, order[:b - len(idx)]])
      key, sub = jax.random.split(key)
      state, loss, acc = step(state, *(jnp.asarray(x[idx]) for x in tr), sub)
      losses.append(float(loss))
      accs.append(float(acc))
      if i % settings.eval_every == 0 or i == total:
        dev_acc = _accuracy(model_config, state.params, dv)
        if dev_acc > best[0]:
          best = (dev_acc, i, state.params)
        f.write(json.dumps({"step": i, "epoch": i / steps_per_epoch,
                            "train_loss": float(np.mean(losses)),
                            "train_accuracy": float(np.mean(accs)),
                            "dev_accuracy": dev_acc}) + "\n")
        f.flush()
        losses, accs = [], []
        if bar is not None:
          bar.set_postfix(dev=f"{dev_acc:.3f}")
      if bar is not None:
        bar.update(1)
  wall = time.perf_counter() - start
  if bar is not None:
    bar.close()
  dev_accuracy, best_step, params = best

  # Normalise on reference-policy samples: every response of the data set.
  ref_rewards = np.concatenate([
      _score(model_config, params, x[j], x[j + 1])
      for x in (tr, dv, va) for j in (0, 2)])
  params = reward_model.normalize_head(params, float(ref_rewards.mean()),
                                       float(ref_rewards.std()))
  store = checkpoints.Checkpoints(os.path.join(out, "model"), keep=1)
  store.save(best_step, params)
  store.close()
  rm_first = (_score(model_config, params, va[0], va[1])
              > _score(model_config, params, va[2], va[3]))
  gold_c = np.array([r["gold_chosen"] for r in valid])
  gold_r = np.array([r["gold_rejected"] for r in valid])
  decided = gold_c != gold_r
  summary = {
      "valid_accuracy_vs_annotators": float(np.mean(rm_first)),
      "valid_accuracy_vs_gold": _common.mean_or_none(
          rm_first[decided] == (gold_c > gold_r)[decided]),
      "annotator_labels_vs_gold": _common.mean_or_none(
          (gold_c > gold_r)[decided]),
      "dev_accuracy": dev_accuracy, "best_step": best_step, "steps": total,
      "valid_pairs": len(valid), "dev_pairs": len(dev),
      "train_pairs": len(train),
      "pairs_per_second": total * b / wall,
      "reference_reward_mean_before": float(ref_rewards.mean()),
      "reference_reward_std_before": float(ref_rewards.std()),
      "wall_seconds": wall}
  _common.write_json(os.path.join(out, "summary.json"), summary)
  return summary
