"""The offline English corpus and a byte-level BPE tokenizer trained on it.

Source: the Lee Background Corpus, 300 news articles from the Australian
Broadcasting Corporation's news mail service (Lee, Pincombe & Welsh 2005,
"An empirical evaluation of models of text document similarity", CogSci),
one article per line (293 distinct, 58,599 words). It ships inside the ``gensim`` wheel
on PyPI as ``gensim/test/test_data/lee_background.cor`` (gensim is
LGPL-2.1; the articles remain the ABC's, distributed by gensim for research
and testing). We read the file from the installed package, never import
gensim, and do not redistribute the text.

The tokenizer is a byte-level BPE (as GPT-2's) trained locally with Hugging
Face ``tokenizers``: lossless on any text, saved as one ``tokenizer.json``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re

import numpy as np

from jaxrl_align import _checks
from jaxrl_align.host.errors import RunError

SOURCE = {
    "name": "Lee Background Corpus",
    "package": "gensim",
    "path": "test/test_data/lee_background.cor",
    "licence": "distributed in the gensim wheel (LGPL-2.1); articles (c) ABC",
    "reference": "Lee, Pincombe & Welsh (2005), CogSci 27",
}
EOS = "<|endoftext|>"
PAD = "<pad>"


def corpus_path() -> str:
  """Path of the corpus file inside the installed ``gensim`` package.

  Raises:
    FileNotFoundError: gensim (the ``rlhf`` extra) is not installed.
  """
  spec = importlib.util.find_spec(SOURCE["package"])  # finds, never imports
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "The RLHF corpus ships inside the `gensim` package: install it with "
        "`pip install 'jaxrl_align[rlhf]'`.")
  path = os.path.join(list(spec.submodule_search_locations)[0],
                      *SOURCE["path"].split("/"))
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing from the installed gensim.")
  return path


def load_documents(path: str | None = None) -> list[str]:
  """The articles, one string each, whitespace normalised, duplicates
  dropped (the file repeats 7 of its 300 articles; a repeat on both sides of
  a train/validation split would leak)."""
  with open(path or corpus_path(), encoding="utf-8") as f:
    docs = [re.sub(r"\s+", " ", line).strip() for line in f]
  return list(dict.fromkeys(d for d in docs if d))


def split(documents: list[str], valid_fraction: float, seed: int = 0):
  """``(train, valid)``: a seeded shuffle of whole documents."""
  _checks.check_scalar_in_range("valid_fraction", valid_fraction, 0, 1,
                                low_inclusive=False, high_inclusive=False)
  order = np.random.default_rng(seed).permutation(len(documents))
  n_valid = max(1, int(round(valid_fraction * len(documents))))
  valid = [documents[i] for i in sorted(order[:n_valid])]
  train = [documents[i] for i in sorted(order[n_valid:])]
  return train, valid


def train_tokenizer(texts: list[str], vocab_size: int):
  """A byte-level BPE ``tokenizers.Tokenizer`` with ``EOS`` and ``PAD``.

  Args:
    texts: training texts.
    vocab_size: final vocabulary size (>= 258: 256 bytes and 2 specials).
  """
  _checks.check_positive_int("vocab_size", vocab_size)
  _checks.check_scalar_in_range("vocab_size", vocab_size, 258, math.inf)
  from tokenizers import ByteLevelBPETokenizer  # rlhf extra

  tokenizer = ByteLevelBPETokenizer(add_prefix_space=False)
  tokenizer.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2,
                                special_tokens=[EOS, PAD], show_progress=False)
  return tokenizer._tokenizer  # the plain Tokenizer: saves as one JSON file


def load_tokenizer(path: str):
  """A tokenizer saved with ``tokenizer.save(path)``."""
  from tokenizers import Tokenizer  # rlhf extra

  if not os.path.isfile(path):
    raise RunError(f"{path}: no such tokenizer file.")
  try:
    return Tokenizer.from_file(path)
  except Exception as e:  # noqa: BLE001 - the library raises bare Exception
    raise RunError(f"{path}: not a tokenizer ({e}).") from None


def special_ids(tokenizer) -> tuple[int, int]:
  """``(eos_id, pad_id)``."""
  return tokenizer.token_to_id(EOS), tokenizer.token_to_id(PAD)


def token_stream(tokenizer, texts: list[str]) -> np.ndarray:
  """All texts encoded and joined, ``EOS`` after each: ``[tokens]`` int32."""
  eos, _ = special_ids(tokenizer)
  ids = []
  for encoding in tokenizer.encode_batch(texts):
    ids.extend(encoding.ids)
    ids.append(eos)
  return np.asarray(ids, np.int32)


def windows(stream: np.ndarray, length: int) -> np.ndarray:
  """Non-overlapping ``[N, length]`` windows of a token stream (the tail
  shorter than ``length`` is dropped)."""
  n = len(stream) // length
  if n == 0:
    raise ValueError(f"The token stream ({len(stream)} tokens) is shorter "
                     f"than one window of {length}.")
  return stream[:n * length].reshape(n, length)


def left_pad(sequences: list[list[int]], length: int, pad_id: int):
  """``(tokens [B, length] int32, mask [B, length] bool)``: each sequence
  keeps its last ``length`` tokens, right-aligned after padding."""
  tokens = np.full((len(sequences), length), pad_id, np.int32)
  mask = np.zeros((len(sequences), length), bool)
  for i, seq in enumerate(sequences):
    seq = list(seq)[-length:]
    if seq:
      tokens[i, length - len(seq):] = seq
      mask[i, length - len(seq):] = True
  return tokens, mask


def prompts(tokenizer, documents: list[str], count: int, length: int,
            seed: int) -> list[list[int]]:
  """``count`` prefixes of ``length`` tokens taken at evenly spaced offsets
  (every ``3 * length`` tokens) of the documents, in an order shuffled by
  ``seed``; ``ValueError`` when the documents give fewer."""
  streams = [tokenizer.encode(d).ids for d in documents]
  starts = [(i, s) for i, ids in enumerate(streams)
            for s in range(0, max(len(ids) - 2 * length, 1), 3 * length)]
  order = np.random.default_rng(seed).permutation(len(starts))
  picked = [starts[j] for j in order[:count]]
  if len(picked) < count:
    raise ValueError(f"The corpus gives only {len(picked)} prompts of "
                     f"{length} tokens; ask for fewer.")
  return [streams[i][s:s + length] for i, s in picked]
