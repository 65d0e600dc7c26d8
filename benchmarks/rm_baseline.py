"""A bag-of-words reference for the reward model, on the same pairs.

The annotators score a text by the words it contains, so a linear model on
word counts has exactly the right form: its held-out accuracy says how much
of the gap between the transformer reward model and the annotators' own
agreement is the data's and how much is the model's.

Pairs are split as ``jaxrl-align rlhf rm`` splits them (its development
split of the training prompts chooses the L2 strength; the data set's
held-out prompts report). Features are counts of lower-cased words
(``[a-z']+``) in the chosen response minus those in the rejected one; the
model is L2-regularised logistic regression, ``P(chosen) = σ(w · x)``, fit
by L-BFGS (scipy).

Usage: ``python benchmarks/rm_baseline.py --prefs runs/prefs``.
"""

from __future__ import annotations

import argparse
import json
import os
import re

import numpy as np
import scipy.optimize
import scipy.sparse

from jaxrl_align.host.rlhf import rm_stage as rm

_WORD = re.compile(r"[a-z']+")


def _differences(records, vocab: dict[str, int], grow: bool):
  """Sparse ``[N, V]`` word counts of chosen minus rejected."""
  rows, cols, vals = [], [], []
  for i, r in enumerate(records):
    for side, sign in (("chosen", 1.0), ("rejected", -1.0)):
      for w in _WORD.findall(r[side].lower()):
        if w not in vocab:
          if not grow:
            continue
          vocab[w] = len(vocab)
        rows.append(i)
        cols.append(vocab[w])
        vals.append(sign)
  return rows, cols, vals


def _matrix(triplets, n: int, v: int):
  rows, cols, vals = triplets
  return scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(n, v))


def fit(x, l2: float) -> np.ndarray:
  """Weights minimising ``mean(-log σ(x w)) + l2 / 2 |w|²``."""
  n = x.shape[0]

  def loss_and_grad(w):
    margin = x @ w
    loss = np.mean(np.logaddexp(0.0, -margin)) + 0.5 * l2 * w @ w
    grad = -(x.T @ (1.0 / (1.0 + np.exp(margin)))) / n + l2 * w
    return loss, grad

  result = scipy.optimize.minimize(loss_and_grad, np.zeros(x.shape[1]),
                                   jac=True, method="L-BFGS-B",
                                   options={"maxiter": 2000})
  return result.x


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--prefs", required=True, help="a prefs run directory")
  parser.add_argument("--dev-fraction", type=float,
                      default=rm.RMRunSettings.dev_fraction)
  parser.add_argument("--seed", type=int, default=rm.RMRunSettings.seed)
  args = parser.parse_args()
  with open(os.path.join(args.prefs, "prefs.jsonl")) as f:
    records = [json.loads(line) for line in f]
  train, dev = rm.dev_split([r for r in records if r["split"] == "train"],
                             args.dev_fraction, args.seed)
  valid = [r for r in records if r["split"] == "valid"]
  vocab: dict[str, int] = {}
  parts = [_differences(x, vocab, grow=x is train) for x in (train, dev, valid)]
  xs = [_matrix(p, len(x), len(vocab))
        for p, x in zip(parts, (train, dev, valid))]
  print(f"{len(train)} training, {len(dev)} development, {len(valid)} "
        f"held-out pairs; {len(vocab)} words")
  best = None
  for l2 in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2):
    w = fit(xs[0], l2)
    dev_acc = float(np.mean(xs[1] @ w > 0))
    print(f"  l2 {l2:g}: train {np.mean(xs[0] @ w > 0):.3f}, "
          f"development {dev_acc:.3f}")
    if best is None or dev_acc > best[0]:
      best = (dev_acc, l2, w)
  _, l2, w = best
  margin = xs[2] @ w
  gold = np.array([r["gold_chosen"] - r["gold_rejected"] for r in valid])
  decided = gold != 0
  print(f"chosen l2 {l2:g}: held-out accuracy {np.mean(margin > 0):.1%} "
        f"against the annotators' labels, "
        f"{np.mean((margin > 0)[decided] == (gold > 0)[decided]):.1%} "
        f"against the gold reward ({np.mean(margin == 0):.1%} of held-out "
        f"pairs get equal scores and count as wrong)")


if __name__ == "__main__":
  main()
