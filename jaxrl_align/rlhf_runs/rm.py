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


def run_rm(out: str, sft_dir: str, prefs_dir: str, config=None, *,
           overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
  """Trains the reward model from the pretrained parameters on the
  preference pairs; reports held-out accuracy against the annotators'
  labels and against the gold reward; normalises the saved model's rewards
  on the reference policy's samples (all responses in the data set)."""
  from jaxrl_align.rlhf import reward_model

  config = config or reward_model.RMConfig()
  model_config, params, tokenizer = _common.load_sft(sft_dir)
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
  _common.write_json(os.path.join(out, "config.json"), {
      "rm": dataclasses.asdict(config), "sft_run": os.path.abspath(sft_dir),
      "prefs_run": os.path.abspath(prefs_dir), "model":
      dataclasses.asdict(model_config), "train_pairs": len(train),
      "valid_pairs": len(valid)})
  state = reward_model.init(params, config)
  step = jax.jit(functools.partial(reward_model.step, model_config, config))
  rng = np.random.default_rng(0)
  b = config.batch_size
  steps_per_epoch = max(1, len(train) // b)
  bar = experiment.progress_bar(config.epochs * steps_per_epoch, 0, progress)
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
      "valid_accuracy_vs_gold": _common.mean_or_none(
          rm_first[decided] == (gold_c > gold_r)[decided]),
      "annotator_labels_vs_gold": _common.mean_or_none((gold_c > gold_r)[decided]),
      "valid_pairs": len(valid), "train_pairs": len(train),
      "pairs_per_second": config.epochs * steps_per_epoch * b / wall,
      "reference_reward_mean_before": float(ref_rewards.mean()),
      "reference_reward_std_before": float(ref_rewards.std()),
      "wall_seconds": wall}
  _common.write_json(os.path.join(out, "summary.json"), summary)
  return summary
