"""``jaxrl-align rlhf rm``: the Bradley–Terry reward model trained on a
``prefs`` run's pairs from an ``sft`` run's parameters, through the runner
(:data:`jaxrl_align.rlhf.reward_model.LEARNER`). Besides the runner's files
the run directory holds ``model/``: the kept parameters, their rewards
normalised on the reference policy's samples."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import _checks
from jaxrl_align.host import files
from jaxrl_align.host import runner
from jaxrl_align.host.rlhf import _common
from jaxrl_align.rlhf import reward_model


@dataclasses.dataclass(frozen=True)
class RMRunSettings:
  """What an ``rm`` run does besides the optimisation.

  Attributes:
    dev_fraction: share of the training prompts whose pairs are kept out of
      training to choose the parameters (early stopping); the data set's
      held-out pairs are used for reporting only.
    seed: seeds the development split, the batch order and dropout.
    devices: devices the batch is split over (data parallel; see
      :mod:`jaxrl_align.parallel`).
  """
  dev_fraction: float = 0.125
  seed: int = 0
  devices: int = 1

  def __post_init__(self):
    _checks.check_scalar_in_range("dev_fraction", self.dev_fraction, 0, 1,
                                  low_inclusive=False, high_inclusive=False)
    _checks.check_positive_int("seed", self.seed, allow_zero=True)
    _checks.check_positive_int("devices", self.devices)


# Rewards whose spread over the reference responses is below this fraction
# of their scale are a constant model (the initial zero head, for one).
CONSTANT = 1e-6


def _encode_pairs(tokenizer, records, length: int) -> reward_model.Pairs:
  """Left-padded pairs of ``prompt + response`` texts, each ending with EOS
  (the reward is read there), as long as the longest sequence (at most
  ``length``)."""
  from jaxrl_align.host.rlhf import corpus

  eos, pad = corpus.special_ids(tokenizer)
  seqs = {side: [tokenizer.encode(r["prompt"] + r[side]).ids + [eos]
                 for r in records] for side in ("chosen", "rejected")}
  length = min(length, max(len(x) for v in seqs.values() for x in v))
  out = []
  for side in ("chosen", "rejected"):
    out += [jnp.asarray(x) for x in corpus.left_pad(seqs[side], length, pad)]
  return reward_model.Pairs(*out)


def dev_split(records, fraction: float, seed: int):
  """``(train, dev)``: the pairs of a seeded ``fraction`` of the prompts go
  to ``dev`` (whole prompts, so no continuation is in both)."""
  prompts = sorted({r["prompt"] for r in records})
  n_dev = max(1, int(round(fraction * len(prompts))))
  dev = set(np.random.default_rng(seed).permutation(prompts)[:n_dev])
  return ([r for r in records if r["prompt"] not in dev],
          [r for r in records if r["prompt"] in dev])


def _read_pairs(prefs_dir: str) -> list[dict[str, Any]]:
  _common.require_run(prefs_dir, "prefs", "--prefs")
  with open(os.path.join(prefs_dir, "prefs.jsonl")) as f:
    return [json.loads(line) for line in f]


def run_rm(out: str, sft_dir: str | None = None, prefs_dir: str | None = None,
           config: reward_model.RMConfig | None = None,
           settings: RMRunSettings = RMRunSettings(), *,
           overwrite: bool = False, resume: bool = False,
           tensorboard: bool = False, progress: bool = True,
           stop_after: int | None = None) -> dict[str, Any]:
  """Trains the reward model from the pretrained parameters on the
  preference pairs, keeping the parameters with the best accuracy on a
  development split of the training prompts; reports accuracy on the
  data set's held-out prompts against the annotators' labels and against
  the gold reward; saves the kept parameters with their rewards normalised
  on the reference policy's samples (every response of the data set).

  With ``resume``, ``sft_dir``, ``prefs_dir``, ``config`` and ``settings``
  are read from the run in ``out``. ``stop_after``: stop with a checkpoint
  after this many steps, as Ctrl-C would (the summary is then empty).
  """
  if resume:
    _, config, _ = runner.load_config(out, reward_model.LEARNER)
    stored = runner.read_run(out)
    sft_dir, prefs_dir = stored["sft_run"], stored["prefs_run"]
    settings = RMRunSettings(**stored["run_settings"])
  if sft_dir is None or prefs_dir is None:
    raise runner.RunError("The reward model needs --sft and --prefs run "
                          "directories.")
  model_config, params, tokenizer = _common.load_sft(sft_dir)
  records = _read_pairs(prefs_dir)
  train, dev = dev_split([r for r in records if r["split"] == "train"],
                          settings.dev_fraction, settings.seed)
  valid = [r for r in records if r["split"] == "valid"]
  if not train or not dev or not valid:
    raise runner.RunError(
        f"{prefs_dir}: the reward model needs training, development and "
        f"held-out pairs; found {len(train)}, {len(dev)} and {len(valid)}.")
  length = model_config.max_len
  data = reward_model.RMData(
      params, *(_encode_pairs(tokenizer, x, length)
                for x in (train, dev, valid)),
      jnp.asarray([r["gold_chosen"] - r["gold_rejected"] for r in valid],
                  jnp.float32))
  if not resume:
    config = (config or reward_model.RMConfig()).replace(
        model=model_config, train_pairs=len(train))
  result = runner.run(
      reward_model.LEARNER, config, out,
      runner.RunnerSettings(seed=settings.seed, devices=settings.devices,
                            shard="data"), data=data, record={
          "run_settings": dataclasses.asdict(settings),
          "sft_run": os.path.abspath(sft_dir),
          "prefs_run": os.path.abspath(prefs_dir), "train_pairs": len(train),
          "dev_pairs": len(dev), "valid_pairs": len(valid)},
      resume=resume, overwrite=overwrite, tensorboard=tensorboard,
      progress=progress, stop_after=stop_after)
  if result.interrupted:
    return {}
  state = jax.tree.map(lambda x: x[0], result.states)
  mean = float(result.evaluation["reference_mean"][0])
  std = float(result.evaluation["reference_std"][0])
  summary = result.summary
  summary = _common.one_seed(
      summary, steps=summary["updates"], valid_pairs=len(valid),
      dev_pairs=len(dev), train_pairs=len(train),
      pairs_per_second=summary["pairs"] / summary["wall_seconds_this_session"],
      wall_seconds=summary["wall_seconds_this_session"],
      model_saved=bool(std > CONSTANT * (1 + abs(mean))))
  files.write_json(os.path.join(out, "summary.json"), summary)
  if not summary["model_saved"]:
    raise runner.RunError(
        f"the kept reward model (step {summary['best_step']}, development "
        f"accuracy {summary['dev_accuracy']:.1%}) gives every response the "
        f"same reward (std {std:.3g}), so it cannot be normalised: no model "
        f"was saved; train it longer or with a larger --learning-rate.")
  _common.save_model(out, int(state.best_step), reward_model.normalize_head(
      state.best_params, mean, std))
  return summary


def _report(s: dict[str, Any]) -> str:
  pct = _common.percent
  return (f"held-out accuracy: {pct(s['valid_accuracy_vs_annotators'])} "
          f"against the annotators' labels, "
          f"{pct(s['valid_accuracy_vs_gold'])} against the gold reward (the "
          f"labels themselves agree with gold on "
          f"{pct(s['annotator_labels_vs_gold'])}); parameters of step "
          f"{s['best_step']} of {s['steps']} (development accuracy "
          f"{s['dev_accuracy']:.1%}); {s['pairs_per_second']:.0f} pairs/s.")


def main(out, inputs, options, **flags) -> int:
  """``jaxrl-align rlhf rm``."""
  summary = run_rm(out, inputs.get("sft"), inputs.get("prefs"),
                   reward_model.RMConfig(**options["reward model"]),
                   RMRunSettings(**options["run"]), **flags)
  text, code = _common.ending("rm", out, summary, _report)
  print(text, file=sys.stderr if code else sys.stdout)
  return code


COMMAND = _common.Command(
    help="train the Bradley-Terry reward model on the preferences",
    description="Starts from the pretrained model; reports held-out accuracy "
                "against the annotators and the gold reward; saves rewards "
                "normalised on the reference policy's samples.",
    groups=(("reward model", reward_model.RMConfig, None),
            ("run", RMRunSettings, None)),
    main=main, learner="rm",
    inputs=(("sft", "a `jaxrl-align rlhf sft` run directory"),
            ("prefs", "a `jaxrl-align rlhf prefs` run directory")))
