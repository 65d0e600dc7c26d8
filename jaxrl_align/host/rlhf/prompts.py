"""What the stages that sample responses are assessed on: prompts cut from
an ``sft`` run's documents (its training split for RL, its validation
split held out) and the gold annotator's score of the responses (part 1's
gold reward, through a host callback: reported, never optimised)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import parallel
from jaxrl_align.host import runner
from jaxrl_align.host.rlhf import _common


@dataclasses.dataclass(frozen=True, eq=False)
class GoldScore:
  """Part 1's gold annotator as ``gold_fn``: each response (the tokens
  after the prompt, the stop token left out) decoded and scored on the
  host, through ``jax.pure_callback``."""
  tokenizer: Any
  prompt_tokens: int
  eos: int

  def texts(self, tokens, mask) -> list[str]:
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    p = self.prompt_tokens
    return [self.tokenizer.decode([int(t) for t, m in zip(row[p:], live[p:])
                                   if m and t != self.eos])
            for row, live in zip(tokens, mask)]

  def host(self, tokens, mask) -> np.ndarray:
    from jaxrl_align.host.rlhf import annotators

    return annotators.gold_scores(_lexicon(), self.texts(tokens, mask)
                                  ).astype(np.float32)

  def __call__(self, tokens, mask):
    tokens, mask = parallel.gather_batch((tokens, mask))
    return jax.pure_callback(
        self.host, jax.ShapeDtypeStruct(tokens.shape[:1], jnp.float32),
        tokens, mask, vmap_method="sequential")


_LEXICON = []


def _lexicon():
  from jaxrl_align.host.rlhf import annotators

  if not _LEXICON:
    _LEXICON.append(annotators.load_lexicon())
  return _LEXICON[0]


def from_documents(sft_dir: str, tokenizer, counts: dict[str, int],
                   length: int, seed: int,
                   documents: list[str] | None = None
                   ) -> dict[str, tuple[jax.Array, jax.Array]]:
  """``{split: (tokens [count, length] int32, mask)}``, left-padded
  prompts of ``length`` tokens cut from the ``sft`` run's ``"train"`` or
  ``"valid"`` documents (split as the run split them), ``counts[split]``
  of each, in an order shuffled by ``seed``; a RunError when the documents
  give fewer. ``documents``: the texts the sft run was given instead of
  the corpus (tests)."""
  from jaxrl_align.host.rlhf import corpus

  docs = documents if documents is not None else corpus.load_documents()
  by_split = dict(zip(("train", "valid"),
                      corpus.split(docs, *_common.sft_split(sft_dir))))
  _, pad = corpus.special_ids(tokenizer)
  out = {}
  for name, count in counts.items():
    try:
      cut = corpus.prompts(tokenizer, by_split[name], count, length, seed)
    except ValueError as e:
      raise runner.RunError(str(e)) from None
    tokens, mask = corpus.left_pad(cut, length, pad)
    out[name] = (jnp.asarray(tokens), jnp.asarray(mask))
  return out
