"""``jaxrl-align rlhf dpo``: direct preference optimisation (IPO and
conservative DPO as options) of an ``sft`` run's model on a ``prefs`` run's
pairs, through the runner (:data:`jaxrl_align.rlhf.dpo.LEARNER`).

The pairs are read as token ids (:mod:`.pair_files`): the prompt/response
boundary and the sampled tokens exactly as the annotators saw them. The
held-out pairs give TRL's metrics; held-out prompts (prefixes of the sft
run's validation documents) give the policy's gold score and exact KL to
the reference, as the RL commands report them. Besides the runner's files
the run directory holds ``model/``: the final policy, from which an RL run
may start (``jaxrl-align rlhf ppo --dpo RUN_DIR``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from jaxrl_align import _checks
from jaxrl_align.host import runner
from jaxrl_align.host import summaries
from jaxrl_align.host.rlhf import _common
from jaxrl_align.host.rlhf import pair_files
from jaxrl_align.host.rlhf import prompts
from jaxrl_align.host.rlhf import stages
from jaxrl_align.rlhf import dpo


@dataclasses.dataclass(frozen=True)
class DPORunSettings:
  """What a ``dpo`` run is assessed on, besides the held-out pairs.

  Attributes:
    eval_prompts: held-out prompts (prefixes of the sft run's validation
      documents), one response sampled to each at every assessment and at
      the end: gold score and exact KL (0: none).
    prompt_tokens: tokens per held-out prompt.
    seed: seeds the held-out prompts, the batch order and the samples.
    devices: devices the batch is split over (data parallel; see
      :mod:`jaxrl_align.parallel`); 0: as many as the batch divides over
      (on CPU the command makes one device per core).
  """
  eval_prompts: int = 64
  prompt_tokens: int = 16
  seed: int = 0
  devices: int = 0

  def __post_init__(self):
    _checks.check_positive_int("eval_prompts", self.eval_prompts,
                               allow_zero=True)
    _checks.check_positive_int("prompt_tokens", self.prompt_tokens)
    _checks.check_positive_int("devices", self.devices, allow_zero=True)
    _common.check_seed(self.seed)


def _prepare(out, config, settings, inputs, documents, resume):
  """The reference (the sft model), the training and held-out pairs, and
  the held-out prompts; the config at the model's shape and tokens."""
  from jaxrl_align.host.rlhf import corpus

  del out
  sft_dir, prefs_dir = inputs["sft"], inputs["prefs"]
  model_config, params, tokenizer = _common.load_sft(sft_dir)
  records = pair_files.read(prefs_dir)
  eos, pad = corpus.special_ids(tokenizer)
  split = {name: [r for r in records if r["split"] == name]
           for name in pair_files.SPLITS}
  if not split["train"] or not split["valid"]:
    raise runner.RunError(
        f"--prefs {prefs_dir!r}: DPO needs training and held-out pairs; "
        f"found {len(split['train'])} and {len(split['valid'])}.")
  pair_files.check_vocabulary(records, model_config.vocab_size, prefs_dir)
  train, valid = (pair_files.to_pairs(split[name], pad)
                  for name in pair_files.SPLITS)
  width = max(p.prompt.shape[1] + p.chosen.shape[1] for p in (train, valid))
  if width > model_config.max_len:
    raise runner.RunError(
        f"--prefs {prefs_dir!r}: prompt and response of {width} tokens "
        f"exceed the model's max_len {model_config.max_len}: make the "
        f"preferences from this sft run.")
  config = config if resume else (config or dpo.DPOConfig()).replace(
      model=model_config, stop_token=eos, pad_token=pad,
      train_pairs=len(split["train"]))
  held_out = {}
  if settings.eval_prompts:
    if settings.prompt_tokens + config.response_length > model_config.max_len:
      raise runner.RunError(
          f"`prompt_tokens` ({settings.prompt_tokens}) + `response_length` "
          f"({config.response_length}) exceed the model's max_len "
          f"({model_config.max_len}).")
    tokens, mask = prompts.from_documents(
        sft_dir, tokenizer, {"valid": settings.eval_prompts},
        settings.prompt_tokens, settings.seed, documents)["valid"]
    held_out = dict(eval_prompts=tokens, eval_prompt_mask=mask,
                    gold_fn=prompts.GoldScore(tokenizer,
                                              settings.prompt_tokens, eos))
  sizes = {"train_pairs": len(split["train"]),
           "valid_pairs": len(split["valid"])}
  return stages.Prepared(config, dpo.DPOData(train, valid, params,
                                             **held_out),
                         record=sizes, context=sizes)


def _finish(out, prepared, states, evaluation, summary):
  """Saves seed 0's final policy (what an RL run may start from)."""
  del evaluation
  state = jax.tree.map(lambda x: x[0], states)
  _common.save_model(out, int(state.step), state.params)
  return dict(steps=summary["updates"], **prepared.context,
              pairs_per_second=stages.per_second(summary, "pairs"),
              wall_seconds=summary["wall_seconds_this_session"])


def _report(s: dict[str, Any]) -> str:
  per_seed = s.get("per_seed") or [s]
  text = summaries.dpo_report({"per_seed": per_seed})
  return f"{text}; {_common.rate(s.get('pairs_per_second'), 'pairs')}"


STAGE = stages.Stage(
    name="dpo", learner=dpo.LEARNER, settings_type=DPORunSettings,
    prepare=_prepare, finish=_finish, report=_report,
    make_config=lambda given: dpo.DPOConfig(**given["dpo"]),
    help="DPO (IPO, conservative DPO) of the pretrained model on the "
         "preferences",
    description="Direct preference optimisation from the pretrained model "
                "(the frozen reference) on the preference pairs; reports "
                "TRL's held-out pair metrics, the gold score and the KL to "
                "the reference on held-out prompts; saves the policy (an RL "
                "command may start from it with --dpo).",
    groups=(("dpo", dpo.DPOConfig, None),),
    inputs=(("sft", "a `jaxrl-align rlhf sft` run directory (the reference "
                    "and the tokenizer)"),
            ("prefs", "a `jaxrl-align rlhf prefs` run directory made from "
                      "--sft")),
    files=(_common.MODEL,), needs=("tokenizers", "gensim", "vaderSentiment"))


def run_dpo(out: str, sft_dir: str | None = None,
            prefs_dir: str | None = None,
            config: dpo.DPOConfig | None = None,
            settings: DPORunSettings = DPORunSettings(), *, seeds: int = 1,
            documents: list[str] | None = None, overwrite: bool = False,
            resume: bool = False, tensorboard: bool = False,
            progress: bool = True,
            stop_after: int | None = None) -> dict[str, Any]:
  """DPO of the pretrained model on the preference pairs; returns the
  summary (empty when stopped early; :func:`~.stages.run_stage` of
  :data:`STAGE`). The final policy is saved in ``out/model``.

  With ``resume``, ``sft_dir``, ``prefs_dir``, ``config`` and ``settings``
  are read from the run in ``out``. ``seeds``: runs in one ``vmap``.
  ``documents``: the texts the sft run was given instead of the corpus
  (tests; again to resume). ``stop_after``: stop with a checkpoint after
  this many steps, as Ctrl-C would.
  """
  return stages.run_stage(STAGE, out, config, settings,
                          {"sft": sft_dir, "prefs": prefs_dir}, seeds=seeds,
                          documents=documents, overwrite=overwrite,
                          resume=resume, tensorboard=tensorboard,
                          progress=progress, stop_after=stop_after)
