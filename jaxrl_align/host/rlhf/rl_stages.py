"""``jaxrl-align rlhf ppo``, ``jaxrl-align rlhf trpo`` and every other RL
learner of :data:`jaxrl_align.rlhf.LEARNERS`: the pretrained model
optimised against the reward model with a KL penalty to itself (the frozen
reference), through the runner. A learner named ``rlhf-NAME`` whose config
is an :class:`~jaxrl_align.rlhf.rl.RLConfig` is the command ``rlhf NAME``:
nothing here names an algorithm.

Prompts are corpus prefixes: training prompts from the ``sft`` run's
training documents, held-out prompts from its validation documents. The
critic starts from the reward model. The gold annotator of part 1 scores
the responses on the host (a callback), reported and never optimised.
Besides the runner's files the run directory holds ``samples.jsonl``: at
each assessment, held-out prompts with the policy's responses, their
reward-model and gold scores (also shown on the terminal).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from typing import Any

import jax

from jaxrl_align import _checks
from jaxrl_align.host import files
from jaxrl_align.host import runner
from jaxrl_align import rlhf as pure_rlhf
from jaxrl_align.host.rlhf import _common
from jaxrl_align.host.rlhf import prompts
from jaxrl_align.host.rlhf import stages
from jaxrl_align.rlhf import rl
from jaxrl_align.host import summaries
from jaxrl_align.rlhf import rollout

PREFIX = "rlhf-"


def rl_learners(registry) -> dict[str, Any]:
  """The RL learners of a learner registry by command name (``"ppo"`` for
  the learner ``"rlhf-ppo"``)."""
  return {learner.name.removeprefix(PREFIX): learner
          for learner in registry.values()
          if issubclass(learner.config_type, rl.RLConfig)
          and learner.name.startswith(PREFIX)}


LEARNERS = rl_learners(pure_rlhf.LEARNERS)
SAMPLES = "samples.jsonl"


@dataclasses.dataclass(frozen=True)
class RLRunSettings:
  """Where an RL run's prompts come from, and what it shows.

  Attributes:
    num_prompts: training prompts (prefixes of the sft run's training
      documents); each iteration draws ``batch_size`` of them.
    eval_prompts: held-out prompts (prefixes of its validation documents):
      assessments and the final evaluation.
    prompt_tokens: tokens per prompt.
    samples: held-out prompts shown with their responses at each
      assessment (0: none).
    seed: seeds the prompts and the learner.
    devices: devices the batch is split over (data parallel; see
      :mod:`jaxrl_align.parallel`); 0: as many as the batch divides over
      (on CPU the command makes one device per core).
  """
  num_prompts: int = 1024
  eval_prompts: int = 64
  prompt_tokens: int = 16
  samples: int = 3
  seed: int = 0
  devices: int = 0

  def __post_init__(self):
    for name in ("num_prompts", "eval_prompts", "prompt_tokens"):
      _checks.check_positive_int(name, getattr(self, name))
    _checks.check_positive_int("devices", self.devices, allow_zero=True)
    _checks.check_positive_int("samples", self.samples, allow_zero=True)
    _common.check_seed(self.seed)
    if self.samples > self.eval_prompts:
      raise ValueError(f"`samples` ({self.samples}) exceeds `eval_prompts` "
                       f"({self.eval_prompts}).")


def build_data(sft_dir: str, rm_dir: str, settings: RLRunSettings,
               documents: list[str] | None = None,
               dpo_dir: str | None = None):
  """``(data, model_config, tokenizer, (eos, pad))`` of a run from its
  inputs (``documents``: the texts the sft run was given instead of the
  corpus, for tests; ``dpo_dir``: a DPO run whose policy the run starts
  from, the sft model staying the reference)."""
  from jaxrl_align.host.rlhf import corpus

  model_config, ref_params, tokenizer = _common.load_sft(sft_dir)
  rm_config, rm_params = _common.load_model(rm_dir, "rm", "--rm")
  if rm_config != model_config:
    raise runner.RunError(f"--rm {rm_dir!r} has another model shape than "
                          f"--sft {sft_dir!r}: train the reward model from "
                          f"that sft run.")
  init_params = None
  if dpo_dir is not None:
    dpo_config, init_params = _common.load_model(dpo_dir, "dpo", "--dpo")
    if dpo_config != model_config:
      raise runner.RunError(f"--dpo {dpo_dir!r} has another model shape "
                            f"than --sft {sft_dir!r}: run DPO from that sft "
                            f"run.")
  eos, pad = corpus.special_ids(tokenizer)
  n = settings.prompt_tokens
  made = prompts.from_documents(
      sft_dir, tokenizer, {"train": settings.num_prompts,
                           "valid": settings.eval_prompts}, n, settings.seed,
      documents)
  data = rl.RLData(
      *made["train"], *made["valid"], ref_params, rm_params, rm_params,
      rl.RewardModelScore(rm_config),
      prompts.GoldScore(tokenizer, n, eos), init_params)
  return data, model_config, tokenizer, (eos, pad)


def _sample_table(config, data, tokenizer, settings, out):
  """``on_assess``: the policy of seed 0 on the first ``samples``
  held-out prompts (a fixed key), added to ``samples.jsonl`` and shown."""
  k = settings.samples

  @jax.jit
  def sample(params):
    gen = rollout.sample(config, params, data.eval_prompts[:k],
                         data.eval_prompt_mask[:k],
                         jax.random.key(settings.seed))
    _, proxy, _ = rollout.scores(config, data, gen.tokens, gen.mask,
                                 gen.response, gen.response_mask)
    return gen.tokens, gen.mask, proxy

  def show(done, states):
    tokens, mask, score = jax.device_get(sample(
        jax.tree.map(lambda x: x[0], states.params)))
    gold = data.gold_fn.host(tokens, mask)
    texts = data.gold_fn.texts(tokens, mask)
    rows = [{"update": done, "prompt": tokenizer.decode(
        [int(t) for t, m in zip(row[:settings.prompt_tokens],
                                live[:settings.prompt_tokens]) if m]),
             "response": text, "score": float(s), "gold": float(g)}
            for row, live, text, s, g in zip(tokens, mask, texts, score,
                                              gold)]
    # Rows of updates after this one (a run resumed from an earlier
    # checkpoint) are replaced, not repeated.
    path = os.path.join(out, SAMPLES)
    kept = files.read_lines(path, ("update",))[0] if os.path.exists(
        path) else []
    files.atomic_write(path, "".join(
        json.dumps(r) + "\n" for r in kept if r["update"] < done) + "".join(
            json.dumps(r) + "\n" for r in rows))
    print(f"\nsamples after {done} iterations (score | gold | prompt ... "
          f"response):", file=sys.stderr)
    for r in rows:
      print(f"  {r['score']:+6.2f} | {r['gold']:+5.2f} | "
            f"{r['prompt'][-40:]!r} ... {r['response'][:80]!r}",
            file=sys.stderr)

  return show if k else None


def _prepare(algo, out, config, settings, inputs, documents, resume):
  """The prompts, the reference and the reward model; the config at the
  model's shape and tokens, checked against the prompts."""
  learner = LEARNERS[algo]
  if not resume:  # the sizes, before any prompt is made
    config = config or learner.config_type()
    max_len = _common.stored_model(inputs["sft"], "sft", "--sft").max_len
    if settings.prompt_tokens + config.response_length > max_len:
      raise runner.RunError(
          f"`prompt_tokens` ({settings.prompt_tokens}) + `response_length` "
          f"({config.response_length}) exceed the model's max_len "
          f"({max_len}).")
    if rl.prompts_per_iteration(config) > settings.num_prompts:
      raise runner.RunError(
          f"`batch_size` / `group_size` ({rl.prompts_per_iteration(config)}) "
          f"exceeds `num_prompts` ({settings.num_prompts}).")
  data, model_config, tokenizer, (eos, pad) = build_data(
      inputs["sft"], inputs["rm"], settings, documents, inputs.get("dpo"))
  if not resume:
    config = config.replace(model=model_config, stop_token=eos, pad_token=pad)
  return stages.Prepared(config, data, on_assess=_sample_table(
      config, data, tokenizer, settings, out))


def _finish(out, prepared, states, evaluation, summary):
  del out, prepared, states, evaluation
  if summary["seeds"] > 1:
    return {}
  return dict(episodes_per_second=stages.per_second(summary, "episodes"))


def _report(s: dict[str, Any]) -> str:
  per_seed = s.get("per_seed") or [s]
  text = summaries.rl_report({"per_seed": per_seed})
  if s.get("episodes_per_second") is not None:
    text += f"; {s['episodes_per_second']:.1f} episodes/s"
  return text


def stage(algo: str, learner) -> stages.Stage:
  """The RL learner ``learner`` as the stage ``rlhf algo``."""
  what = algo.upper()
  critic = learner.config_type().value_model == "critic"
  return stages.Stage(
      name=algo, learner=learner, settings_type=RLRunSettings,
      prepare=functools.partial(_prepare, algo), finish=_finish,
      report=_report,
      make_config=lambda given: learner.config_type(**given[algo]),
      help=f"{what} against the reward model, KL-penalised to the pretrained "
           f"model",
      description=f"KL-regularised {what} of the pretrained model against "
                  f"the reward model"
                  f"{' (the critic starts from it)' if critic else ''}, on "
                  f"corpus prompts; reports held-out reward-model and gold "
                  f"scores and the KL to the reference.",
      groups=((algo, learner.config_type,
               rl.option_names(learner.config_type)),),
      inputs=(("sft", "a `jaxrl-align rlhf sft` run directory (the "
                      "reference and the tokenizer)"),
              ("rm", "a `jaxrl-align rlhf rm` run directory"),
              ("dpo", "a `jaxrl-align rlhf dpo` run directory made from "
                      "--sft: the policy starts from its model (the sft "
                      "model stays the reference; default: start there)")),
      optional=("dpo",), files=(SAMPLES,),
      needs=("tokenizers", "gensim", "vaderSentiment"))


def commands(registry) -> dict[str, _common.Command]:
  """The ``rlhf`` commands of a registry's RL learners."""
  return {algo: stages.command(stage(algo, learner))
          for algo, learner in rl_learners(registry).items()}


STAGES = {algo: stage(algo, learner) for algo, learner in LEARNERS.items()}
COMMANDS = {algo: stages.command(s) for algo, s in STAGES.items()}


def run_rl(algo: str, out: str, sft_dir: str | None = None,
           rm_dir: str | None = None, config: rl.RLConfig | None = None,
           settings: RLRunSettings = RLRunSettings(), *,
           dpo_dir: str | None = None,
           seeds: int = 1, documents: list[str] | None = None,
           overwrite: bool = False, resume: bool = False,
           tensorboard: bool = False, progress: bool = True,
           stop_after: int | None = None) -> dict[str, Any]:
  """Optimises the pretrained model against the reward model (``algo``: a
  key of :data:`LEARNERS`, ``"ppo"`` or ``"trpo"``); returns the summary
  (empty when stopped early; :func:`~jaxrl_align.host.rlhf.stages.run_stage`
  of ``STAGES[algo]``).

  With ``resume``, the inputs, ``config`` and ``settings`` are read from the
  run in ``out``. ``seeds``: runs in one ``vmap``. ``documents``: the texts
  the sft run was given instead of the corpus (tests; again to resume).
  ``stop_after``: stop with a checkpoint after this many iterations, as
  Ctrl-C would. ``dpo_dir``: a finished ``rlhf dpo`` run made from
  ``sft_dir``; the policy starts from its model (the reference stays the
  sft model).
  """
  return stages.run_stage(STAGES[algo], out, config, settings,
                          {"sft": sft_dir, "rm": rm_dir, "dpo": dpo_dir},
                          seeds=seeds,
                          documents=documents, overwrite=overwrite,
                          resume=resume, tensorboard=tensorboard,
                          progress=progress, stop_after=stop_after)
