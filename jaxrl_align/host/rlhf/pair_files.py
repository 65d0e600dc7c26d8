"""The preference file of a ``prefs`` run, ``prefs.jsonl``: written by
``jaxrl-align rlhf prefs``, read by ``rm`` (and by offline preference
learners).

One JSON object per pair: the texts (``prompt``, ``chosen``, ``rejected``,
for people and text baselines), the token ids the texts were decoded from
(``prompt_ids``, ``chosen_ids``, ``rejected_ids``: the prompt, and each
response as sampled, its stop token included where it was emitted), the
annotator, the gold scores and the split. Learners read the ids, so the
prompt/response boundary and the sampled tokens survive exactly
(:class:`jaxrl_align.rlhf.pairs.PreferencePairs`); the texts are never
encoded again.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

from jaxrl_align.host import files
from jaxrl_align.host import runner
from jaxrl_align.host.errors import RunFileError
from jaxrl_align.host.rlhf import _common
from jaxrl_align.rlhf import pairs as pairs_lib

FILE = _common.PREFS
IDS = ("prompt_ids", "chosen_ids", "rejected_ids")
SPLITS = ("train", "valid")


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and (
      math.isfinite(x))


# The fields learners read besides the ids: (name, test, what it must be).
FIELDS = (("prompt", lambda x: isinstance(x, str), "a string"),
          ("split", lambda x: x in SPLITS, "train or valid"),
          ("gold_chosen", _is_number, "a finite number"),
          ("gold_rejected", _is_number, "a finite number"))


def record(prompt_ids: Sequence[int], chosen_ids: Sequence[int],
           rejected_ids: Sequence[int], **fields: Any) -> dict[str, Any]:
  """One line of the file: the pair's token ids and ``fields`` (texts,
  annotator, gold scores, split)."""
  return {**fields, "prompt_ids": [int(t) for t in prompt_ids],
          "chosen_ids": [int(t) for t in chosen_ids],
          "rejected_ids": [int(t) for t in rejected_ids]}


def write(out: str, records: list[dict[str, Any]]) -> None:
  """``records`` as ``out/prefs.jsonl`` (atomically)."""
  files.atomic_write(os.path.join(out, FILE),
                     "".join(json.dumps(r) + "\n" for r in records))


def read(prefs_dir: str, option: str = "--prefs") -> list[dict[str, Any]]:
  """The records of a finished ``prefs`` run (``option``: the flag that
  named it), or a RunError: not a ``prefs`` run, or one written before
  token ids were recorded (rebuild it)."""
  _common.require_run(prefs_dir, "prefs", option)
  path = os.path.join(prefs_dir, FILE)
  records = []
  with open(path, "rb") as f:
    for number, line in enumerate(f, 1):
      try:
        records.append(json.loads(line))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise runner.RunError(
            f"{option} {prefs_dir!r}: line {number} of {FILE} is not JSON "
            f"({getattr(e, 'msg', 'not UTF-8 text')}); rebuild the run with "
            f"`jaxrl-align rlhf prefs`.") from None
      if not isinstance(records[-1], dict):
        raise runner.RunError(f"{option} {prefs_dir!r}: line {number} of "
                              f"{FILE} is not a pair (a JSON object).")
  if any(not all(k in r for k in IDS) for r in records):
    raise runner.RunError(
        f"{option} {prefs_dir!r}: its pairs are text only (written before "
        f"token ids were recorded); rebuild it with `jaxrl-align rlhf prefs "
        f"--sft SFT_RUN --out {prefs_dir} --overwrite`.")
  for number, r in enumerate(records, 1):
    where = f"{option} {prefs_dir!r}: line {number} of {FILE}"
    if not all(isinstance(r[k], list) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0
        for t in r[k]) for k in IDS):
      raise RunFileError(f"{where} has token ids that are not lists of "
                         f"non-negative integers.")
    for name, test, what in FIELDS:
      if name not in r:
        raise RunFileError(f"{where} has no `{name}` ({what}); rebuild the "
                           f"run with `jaxrl-align rlhf prefs`.")
      if not test(r[name]):
        raise RunFileError(f"{where}: `{name}` must be {what}, got "
                           f"{files.describe(r[name])}.")
  return records


def check_vocabulary(records: list[dict[str, Any]], vocab_size: int,
                     prefs_dir: str) -> None:
  """A RunError when a token id of ``records`` (read from ``prefs_dir``)
  is outside a model's vocabulary of ``vocab_size``: the pairs were made
  from another sft run."""
  largest = max((max(r[k], default=0) for r in records for k in IDS),
                default=0)
  if largest >= vocab_size:
    raise runner.RunError(
        f"--prefs {prefs_dir!r}: token id {largest} is outside the sft "
        f"run's vocabulary of {vocab_size}: make the preferences from this "
        f"sft run.")


def to_pairs(records: list[dict[str, Any]],
             pad: int) -> pairs_lib.PreferencePairs:
  """The records' token ids as padded arrays."""
  return pairs_lib.from_ids(*([r[k] for r in records] for k in IDS), pad)
