"""``jaxrl-align rlhf sft``: trains the byte-level BPE tokenizer, then
pretrains the transformer on the corpus through the runner
(:data:`jaxrl_align.rlhf.sft.LEARNER`), keeping the parameters with the
lowest validation loss. The run directory holds, besides the runner's
files (``config.json``, ``metrics.jsonl``, ``checkpoints/``,
``summary.json``, ``learning_curve.png``)::

    tokenizer.json   the tokenizer
    model/           orbax checkpoint of the kept parameters
    samples.txt      continuations of validation prompts
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import _checks
from jaxrl_align.host import files
from jaxrl_align.host.rlhf import _common
from jaxrl_align.host.rlhf import stages
from jaxrl_align.rlhf import generation
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import sft

TOKENIZER = _common.TOKENIZER
SAMPLES = "samples.txt"
# TransformerConfig fields a user sets (the others are defaults).
MODEL_OPTIONS = ("vocab_size", "max_len", "num_layers", "num_heads", "width",
                 "mlp_ratio")


@dataclasses.dataclass(frozen=True)
class SFTRunSettings:
  """What an ``sft`` run does besides the optimisation.

  Attributes:
    valid_fraction: share of the documents held out for validation.
    seed: seeds the split, the batches and the initialisation.
    num_samples: validation prompts continued at the end.
    devices: devices the batch is split over (data parallel; see
      :mod:`jaxrl_align.parallel`); 0: as many as the batch divides over
      (on CPU the command makes one device per core).
  """
  valid_fraction: float = 0.1
  seed: int = 0
  num_samples: int = 4
  devices: int = 0

  def __post_init__(self):
    _checks.check_positive_int("num_samples", self.num_samples)
    _checks.check_positive_int("devices", self.devices, allow_zero=True)
    _common.check_split_and_seed(self)


def _documents(documents):
  from jaxrl_align.host.rlhf import corpus

  return documents if documents is not None else corpus.load_documents()


def _data(tokenizer, documents, settings, length):
  from jaxrl_align.host.rlhf import corpus

  train_docs, valid_docs = corpus.split(documents, settings.valid_fraction,
                                        settings.seed)
  data = sft.SFTData(
      jnp.asarray(corpus.windows(corpus.token_stream(tokenizer, train_docs),
                                 length)),
      jnp.asarray(corpus.windows(corpus.token_stream(tokenizer, valid_docs),
                                 length)))
  return data, valid_docs


def _prepare(out, config, settings, inputs, documents, resume):
  """The tokenizer (trained on the training documents, or read back from
  the run being resumed), the config at the tokenizer's size and the token
  windows."""
  from jaxrl_align.host.rlhf import corpus

  del inputs
  docs = _documents(documents)
  if resume:
    tokenizer = corpus.load_tokenizer(os.path.join(out, TOKENIZER))
  else:
    config = config or sft.SFTConfig()
    train_docs, _ = corpus.split(docs, settings.valid_fraction, settings.seed)
    tokenizer = corpus.train_tokenizer(train_docs, config.model.vocab_size)
    config = config.replace(model=dataclasses.replace(
        config.model, vocab_size=tokenizer.get_vocab_size()))
  data, valid_docs = _data(tokenizer, docs, settings, config.model.max_len)
  return stages.Prepared(
      config, data, record={
          "corpus": corpus.SOURCE if documents is None else "given documents",
          "train_windows": int(data.train.shape[0]),
          "valid_windows": int(data.valid.shape[0])},
      on_create=lambda out: tokenizer.save(os.path.join(out, TOKENIZER)),
      context=(tokenizer, valid_docs, settings))


def _finish(out, prepared, states, evaluation, summary):
  """Saves the kept parameters and continues validation prompts with
  them."""
  del evaluation
  tokenizer, valid_docs, settings = prepared.context
  state = jax.tree.map(lambda x: x[0], states)
  _common.save_model(out, int(state.best_step), state.best_params)
  samples = _samples(prepared.config.model, state.best_params, tokenizer,
                     valid_docs, settings)
  files.atomic_write(os.path.join(out, SAMPLES), "".join(
      f"PROMPT: {prompt}\nCONTINUATION: {text}\n\n" for prompt, text in samples))
  return dict(steps=summary["updates"],
              train_tokens_per_second=stages.per_second(summary, "tokens"),
              samples=[s[1] for s in samples])


def _samples(model_config, params, tokenizer, docs, settings,
             prompt_tokens: int = 16, new_tokens: int = 48):
  from jaxrl_align.host.rlhf import corpus

  eos, pad = corpus.special_ids(tokenizer)
  prompts = [tokenizer.encode(d).ids[:prompt_tokens]
             for d in docs[:settings.num_samples]]
  tokens, mask = corpus.left_pad(prompts, prompt_tokens, pad)
  new_tokens = min(new_tokens, model_config.max_len - prompt_tokens)
  apply_fn = model_lib.Transformer(model_config).apply
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


def _report(s: dict[str, Any]) -> str:
  lines = [f"validation loss {s['valid_loss_initial']:.3f} -> "
           f"{s['valid_loss_best']:.3f} nats/token (best at step "
           f"{s['best_step']}); "
           f"{_common.rate(s['train_tokens_per_second'], 'training tokens')}"]
  lines += ["  sample: " + repr(text)[:200] for text in s["samples"]]
  return "\n".join(lines)


def _config(given) -> sft.SFTConfig:
  model = dataclasses.replace(sft.SFTConfig().model, **given["model"])
  return sft.SFTConfig(model=model, **given["pretraining"])


STAGE = stages.Stage(
    name="sft", learner=sft.LEARNER, settings_type=SFTRunSettings,
    prepare=_prepare, finish=_finish, report=_report, make_config=_config,
    help="train the tokenizer and pretrain the transformer on the corpus",
    description="Byte-level BPE and next-token pretraining on the offline "
                "news corpus; keeps the parameters with the lowest validation "
                "loss.",
    groups=(("model", sft.SFTConfig().model, MODEL_OPTIONS),
            ("pretraining", sft.SFTConfig, None)),
    files=(TOKENIZER, _common.MODEL, SAMPLES), needs=("tokenizers", "gensim"))


def run_sft(out: str, config: sft.SFTConfig | None = None,
            settings: SFTRunSettings = SFTRunSettings(), *,
            documents: list[str] | None = None, overwrite: bool = False,
            resume: bool = False, tensorboard: bool = False,
            progress: bool = True,
            stop_after: int | None = None) -> dict[str, Any]:
  """Trains the tokenizer and pretrains the model; returns the summary
  (:func:`~jaxrl_align.host.rlhf.stages.run_stage` of :data:`STAGE`).

  Args:
    out: run directory (must be empty or absent unless ``overwrite``).
    config: the learner's settings; ``config.model.vocab_size`` is the
      tokenizer's target size, the size it reaches is stored.
    settings: split, seed, samples.
    documents: texts to use instead of the corpus (tests).
    overwrite: replace an earlier run in ``out``.
    resume: continue the run in ``out`` (``config`` and ``settings`` are
      read from it; ``documents`` must be those it was given).
    tensorboard: also write TensorBoard events.
    progress: show a progress bar.
    stop_after: stop with a checkpoint after this many steps, as Ctrl-C
      would (the summary is then empty).
  """
  return stages.run_stage(STAGE, out, config, settings, documents=documents,
                          overwrite=overwrite, resume=resume,
                          tensorboard=tensorboard, progress=progress,
                          stop_after=stop_after)
