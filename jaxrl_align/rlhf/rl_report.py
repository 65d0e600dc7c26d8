"""What a finished RL run on the language model reports: per seed, the
held-out scores, gold scores and exact KL of the policy beside the
reference's, and the gains in reference standard deviations."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxrl_align import learner


def finite(x) -> np.ndarray:
  """The finite values of ``x`` as a flat float64 array."""
  x = np.asarray(x, np.float64)
  return x[np.isfinite(x)]


def _gain(policy, reference) -> float | None:
  """The policy's mean minus the reference's, in reference standard
  deviations (None without values or spread)."""
  p, r = finite(policy), finite(reference)
  if not p.size or r.size < 2 or not r.std() > 0:
    return None
  return float((p.mean() - r.mean()) / r.std())


def summarize(config, states, evaluation, last_metrics) -> dict[str, Any]:
  del config
  per_seed = []
  for i, last in enumerate(last_metrics):
    ev = {k: v[i] for k, v in evaluation.items()}
    row = {key: learner.finite_mean(ev[key]) for key in (
        "policy_scores", "reference_scores", "policy_proxy",
        "reference_proxy", "policy_gold", "reference_gold",
        "policy_kl_exact")}
    row.update(
        score_gain_in_reference_std=_gain(ev["policy_scores"],
                                          ev["reference_scores"]),
        proxy_gain_in_reference_std=_gain(ev["policy_proxy"],
                                          ev["reference_proxy"]),
        gold_gain_in_reference_std=_gain(ev["policy_gold"],
                                         ev["reference_gold"]),
        policy_stop_fraction=learner.finite_mean(ev["policy_stopped"]),
        reference_stop_fraction=learner.finite_mean(ev["reference_stopped"]),
        final_kl_coef=float(np.asarray(states.kl.coef)[i]),
        last_train_kl=last.get("objective/kl"))
    per_seed.append(row)
  return {"per_seed": per_seed}


def report(summary: dict[str, Any]) -> str:
  def num(x):
    return "n/a" if x is None else f"{x:.3f}"

  def std(x):
    return "" if x is None else f" ({x:+.2f} sd)"
  return "\n".join(
      f"seed {i}: held-out reward-model score {num(s['reference_proxy'])} "
      f"(reference) -> {num(s['policy_proxy'])}"
      f"{std(s['proxy_gain_in_reference_std'])}, with the missing-stop "
      f"penalty {num(s['reference_scores'])} -> {num(s['policy_scores'])}"
      f"{std(s['score_gain_in_reference_std'])}; "
      f"gold {num(s['reference_gold'])} -> {num(s['policy_gold'])}"
      f"{std(s['gold_gain_in_reference_std'])}; KL(policy || reference) "
      f"{num(s['policy_kl_exact'])} nats per response"
      for i, s in enumerate(summary["per_seed"]))
