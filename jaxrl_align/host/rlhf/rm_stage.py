"""``jaxrl-align rlhf rm``: the Bradley–Terry reward model trained on a
``prefs`` run's pairs from an ``sft`` run's parameters, through the runner
(:data:`jaxrl_align.rlhf.reward_model.LEARNER`). Besides the runner's files
the run directory holds ``model/``: the kept parameters, their rewards
normalised on the reference policy's samples."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import _checks
from jaxrl_align.host import runner
from jaxrl_align.host.rlhf import _common
from jaxrl_align.host.rlhf import pair_files
from jaxrl_align.host.rlhf import stages
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
      :mod:`jaxrl_align.parallel`); 0: as many as the batch divides over
      (on CPU the command makes one device per core).
  """
  dev_fraction: float = 0.125
  seed: int = 0
  devices: int = 0

  def __post_init__(self):
    _checks.check_scalar_in_range("dev_fraction", self.dev_fraction, 0, 1,
                                  low_inclusive=False, high_inclusive=False)
    _common.check_seed(self.seed)
    _checks.check_positive_int("devices", self.devices, allow_zero=True)


# Rewards whose spread over the reference responses is below this fraction
# of their scale are a constant model (the initial zero head, for one).
CONSTANT = 1e-6


def _reward_pairs(records, pad: int) -> reward_model.Pairs:
  """Each pair's prompt followed by its chosen and by its rejected
  response, token ids as sampled (the reward is read at the last real
  token, as it is of the policy's responses in RL)."""
  pairs = pair_files.to_pairs(records, pad)
  return reward_model.Pairs(*pairs.sequence("chosen"),
                            *pairs.sequence("rejected"))


def dev_split(records, fraction: float, seed: int):
  """``(train, dev)``: the pairs of a seeded ``fraction`` of the prompts go
  to ``dev`` (whole prompts, so no continuation is in both)."""
  prompts = sorted({r["prompt"] for r in records})
  n_dev = max(1, int(round(fraction * len(prompts))))
  dev = set(np.random.default_rng(seed).permutation(prompts)[:n_dev])
  return ([r for r in records if r["prompt"] not in dev],
          [r for r in records if r["prompt"] in dev])


def _prepare(out, config, settings, inputs, documents, resume):
  """The pretrained parameters and the pairs: training and development
  (a seeded split of the training prompts) and held-out."""
  from jaxrl_align.host.rlhf import corpus

  del out, documents
  sft_dir, prefs_dir = inputs["sft"], inputs["prefs"]
  model_config, params, tokenizer = _common.load_sft(sft_dir)
  records = pair_files.read(prefs_dir)
  train, dev = dev_split([r for r in records if r["split"] == "train"],
                          settings.dev_fraction, settings.seed)
  valid = [r for r in records if r["split"] == "valid"]
  if not train or not dev or not valid:
    raise runner.RunError(
        f"{prefs_dir}: the reward model needs training, development and "
        f"held-out pairs; found {len(train)}, {len(dev)} and {len(valid)}.")
  _, pad = corpus.special_ids(tokenizer)
  splits = [_reward_pairs(x, pad) for x in (train, dev, valid)]
  pair_files.check_vocabulary(records, model_config.vocab_size, prefs_dir)
  width = max(p.chosen.shape[1] for p in splits)
  if width > model_config.max_len:
    raise runner.RunError(
        f"--prefs {prefs_dir!r}: prompt and response of {width} tokens exceed "
        f"the model's max_len {model_config.max_len}: make the preferences "
        f"from this sft run.")
  data = reward_model.RMData(
      params, *splits,
      jnp.asarray([r["gold_chosen"] - r["gold_rejected"] for r in valid],
                  jnp.float32))
  if not resume:
    config = (config or reward_model.RMConfig()).replace(
        model=model_config, train_pairs=len(train))
  sizes = {"train_pairs": len(train), "dev_pairs": len(dev),
           "valid_pairs": len(valid)}
  return stages.Prepared(config, data, record=sizes, context=sizes)


def _finish(out, prepared, states, evaluation, summary):
  """Saves the kept parameters, their rewards normalised on the reference
  policy's samples, unless they give every response the same reward."""
  state = jax.tree.map(lambda x: x[0], states)
  mean = float(evaluation["reference_mean"][0])
  std = float(evaluation["reference_std"][0])
  saved = bool(std > CONSTANT * (1 + abs(mean)))
  if saved:
    _common.save_model(out, int(state.best_step), reward_model.normalize_head(
        state.best_params, mean, std))
  return dict(steps=summary["updates"], **prepared.context,
              pairs_per_second=stages.per_second(summary, "pairs"),
              wall_seconds=summary["wall_seconds_this_session"],
              model_saved=saved)


def _refuse(s: dict[str, Any]) -> str | None:
  if s["model_saved"]:
    return None
  return (f"the kept reward model (step {s['best_step']}, development "
          f"accuracy {s['dev_accuracy']:.1%}) gives every response the same "
          f"reward (its spread over the reference's responses is below "
          f"{CONSTANT:g} of its scale), so it cannot be normalised: no model "
          f"was saved; train it longer or with a larger --learning-rate.")


def _report(s: dict[str, Any]) -> str:
  pct = _common.percent
  return (f"held-out accuracy: {pct(s['valid_accuracy_vs_annotators'])} "
          f"against the annotators' labels, "
          f"{pct(s['valid_accuracy_vs_gold'])} against the gold reward (the "
          f"labels themselves agree with gold on "
          f"{pct(s['annotator_labels_vs_gold'])}); parameters of step "
          f"{s['best_step']} of {s['steps']} (development accuracy "
          f"{s['dev_accuracy']:.1%}); "
          f"{_common.rate(s['pairs_per_second'], 'pairs')}.")


STAGE = stages.Stage(
    name="rm", learner=reward_model.LEARNER, settings_type=RMRunSettings,
    prepare=_prepare, finish=_finish, report=_report, refuse=_refuse,
    make_config=lambda given: reward_model.RMConfig(**given["reward model"]),
    help="train the Bradley-Terry reward model on the preferences",
    description="Starts from the pretrained model; reports held-out accuracy "
                "against the annotators and the gold reward; saves rewards "
                "normalised on the reference policy's samples.",
    groups=(("reward model", reward_model.RMConfig, None),),
    inputs=(("sft", "a `jaxrl-align rlhf sft` run directory"),
            ("prefs", "a `jaxrl-align rlhf prefs` run directory")),
    files=(_common.MODEL,))


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
  on the reference policy's samples (every response of the data set)
  (:func:`~jaxrl_align.host.rlhf.stages.run_stage` of :data:`STAGE`).

  With ``resume``, ``sft_dir``, ``prefs_dir``, ``config`` and ``settings``
  are read from the run in ``out``. ``stop_after``: stop with a checkpoint
  after this many steps, as Ctrl-C would (the summary is then empty).
  """
  return stages.run_stage(STAGE, out, config, settings,
                          {"sft": sft_dir, "prefs": prefs_dir},
                          overwrite=overwrite, resume=resume,
                          tensorboard=tensorboard, progress=progress,
                          stop_after=stop_after)
