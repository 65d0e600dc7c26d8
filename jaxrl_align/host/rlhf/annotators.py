"""Simulated human annotators built from real human ratings.

vaderSentiment's lexicon (Hutto & Gilbert 2014, ICWSM) lists 7,500 words and
emoticons, each with the valence ratings of ten individual human raters on a
-4..4 scale. Annotator ``j`` reads a text as rater ``j`` would: the sum of
rater ``j``'s ratings of the lexicon words in it, squashed to (-1, 1) with
VADER's normalisation ``x / sqrt(x² + 15)``. The *gold* score uses the mean
rating of each word (the mean rater).

An annotator compares two texts by Bradley–Terry sampling: it prefers ``a``
with probability ``σ(β (s_j(a) - s_j(b)))``. Raters disagree about words, and
the sampling adds noise, so annotators disagree as people do.

Host-side NumPy; the lexicon is read from the installed package (the
``rlhf`` extra) without importing it.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import NamedTuple

import numpy as np

NUM_RATERS = 10
_ALPHA = 15.0  # VADER's normalisation constant
_WORD = re.compile(r"[a-z][a-z'\-]*")


class Lexicon(NamedTuple):
  """Words and their individual ratings.

  Attributes:
    index: ``{word: row}``.
    ratings: ``[words, 10]`` float64, rater ``j``'s rating in column ``j``.
  """
  index: dict[str, int]
  ratings: np.ndarray


def lexicon_path() -> str:
  spec = importlib.util.find_spec("vaderSentiment")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("The annotators need the `vaderSentiment` "
                            "package: `pip install 'jaxrl_align[rlhf]'`.")
  return os.path.join(list(spec.submodule_search_locations)[0],
                      "vader_lexicon.txt")


def load_lexicon(path: str | None = None) -> Lexicon:
  """Reads ``word<TAB>mean<TAB>std<TAB>[r1, ..., r10]`` lines; keeps the
  first entry of each word that has exactly ten ratings."""
  index, rows = {}, []
  with open(path or lexicon_path(), encoding="utf-8") as f:
    for line in f:
      parts = line.rstrip("\n").split("\t")
      if len(parts) < 4:
        continue
      ratings = [float(x) for x in parts[3].strip("[] ").split(",") if x]
      if len(ratings) != NUM_RATERS or parts[0] in index:
        continue  # a few entries repeat; the first one counts
      index[parts[0]] = len(rows)
      rows.append(ratings)
  return Lexicon(index, np.asarray(rows, np.float64))


def word_counts(lexicon: Lexicon, texts: list[str]) -> np.ndarray:
  """``[texts, words]`` counts of lexicon words (lower-cased)."""
  counts = np.zeros((len(texts), len(lexicon.index)), np.float64)
  for i, text in enumerate(texts):
    for word in _WORD.findall(text.lower()):
      row = lexicon.index.get(word)
      if row is not None:
        counts[i, row] += 1
  return counts


def _squash(x: np.ndarray) -> np.ndarray:
  return x / np.sqrt(x * x + _ALPHA)


def scores(lexicon: Lexicon, texts: list[str]) -> np.ndarray:
  """Every annotator's score of every text: ``[texts, 10]`` in (-1, 1)."""
  return _squash(word_counts(lexicon, texts) @ lexicon.ratings)


def gold_scores(lexicon: Lexicon, texts: list[str]) -> np.ndarray:
  """The mean rater's score: ``[texts]`` in (-1, 1)."""
  return _squash(word_counts(lexicon, texts) @ lexicon.ratings.mean(axis=1))


def prefer_first(score_a: np.ndarray, score_b: np.ndarray, beta: float,
                 rng: np.random.Generator) -> np.ndarray:
  """Bradley–Terry draws: ``[N]`` bool, True where ``a`` is preferred.

  Args:
    score_a, score_b: ``[N]`` the annotator's scores of the two texts.
    beta: inverse temperature (> 0; large: nearly deterministic).
    rng: NumPy generator.
  """
  if not beta > 0:
    raise ValueError(f"beta must be > 0, got {beta!r}.")
  p = 1.0 / (1.0 + np.exp(-beta * (score_a - score_b)))
  return rng.random(p.shape) < p


def agreement_rate(labels: np.ndarray) -> float:
  """Mean agreement over pairs of annotators who labelled the same items.

  Args:
    labels: ``[items, annotators]`` bool, each annotator's preference.

  Returns:
    Fraction of (item, annotator pair) in which the two agree.
  """
  k = labels.shape[1]
  if k < 2:
    raise ValueError("agreement needs at least two annotators per item.")
  agree = [np.mean(labels[:, i] == labels[:, j])
           for i in range(k) for j in range(i + 1, k)]
  return float(np.mean(agree))
