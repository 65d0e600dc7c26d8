"""What a finished run's ``summary.json`` says of each learner, and its
text for the terminal: host-side, from the final evaluation and each
seed's last metrics (the learners' ``evaluate`` reports what a summary
needs of the final state; nothing here reads a state).

Each ``summarize`` is ``(config, evaluation, last_metrics) -> dict``:
``evaluation`` has a leading seed axis (host arrays, or a dict of them),
``last_metrics`` is each seed's last row of ``metrics.jsonl``. Each
``report`` is ``summary -> str``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxrl_align import envs
from jaxrl_align.learner import finite_mean


def finite(x) -> np.ndarray:
  """The finite values of ``x`` as a flat float64 array."""
  x = np.asarray(x, np.float64)
  return x[np.isfinite(x)]


def _num(x, spec: str, width: int | str = "") -> str:
  return f"{x:{width}{spec}}" if x is not None else f"{'n/a':>{width}s}"


# ------------------------------------------------ environment learners


def on_policy(config, evaluation, last_metrics) -> dict[str, Any]:
  """An environment learner's run: deterministic evaluation returns per
  seed and over seeds, and each seed's last training return."""
  evaluation = np.asarray(evaluation, np.float64)
  per_seed = [finite_mean(row) for row in evaluation]
  means = finite([np.nan if m is None else m for m in per_seed])
  return {
      "env_id": config.env_id,
      "env_path": "jax" if envs.is_jax_native(config.env_id) else "host",
      "total_timesteps": config.total_timesteps,
      "eval_episodes": int(evaluation.shape[1]),
      "eval_episodes_unfinished": int(np.sum(~np.isfinite(evaluation))),
      "eval_return_mean": float(means.mean()) if means.size else None,
      "eval_return_std_over_seeds": (float(means.std()) if means.size
                                     else None),
      "per_seed": [{"seed": i, "eval_return_mean": per_seed[i],
                    "train_episode_return": last_metrics[i].get(
                        "episode_return")}
                   for i in range(len(per_seed))]}


def on_policy_report(summary: dict[str, Any]) -> str:
  """:func:`on_policy`'s summary as a table: one row per seed, the mean."""
  lines = [f"{summary['algo'].upper()} on {summary['env_id']}, "
           f"{summary['seeds']} seed{'s' * (summary['seeds'] != 1)} x "
           f"{summary['env_steps']:,} env steps",
           f"  {'seed':>4s} {'eval return':>12s} {'last train return':>18s}"]
  for row in summary["per_seed"]:
    lines.append(f"  {row['seed']:4d} "
                 f"{_num(row['eval_return_mean'], '.1f', 12)} "
                 f"{_num(row['train_episode_return'], '.1f', 18)}")
  std = summary["eval_return_std_over_seeds"]
  lines.append(f"  mean {_num(summary['eval_return_mean'], '.1f', 11)} ± "
               f"{_num(std, '.1f', 1).strip()} (std over seeds, "
               f"{summary['eval_episodes']} deterministic episodes each"
               + (f", {summary['eval_episodes_unfinished']} unfinished"
                  if summary["eval_episodes_unfinished"] else "")
               + f"); {summary['wall_seconds_this_session']:.1f} s")
  return "\n".join(lines)


# -------------------------------------------------- the language model


def sft(config, evaluation, last_metrics) -> dict[str, Any]:
  """Pretraining: the validation loss before and at its lowest, per seed."""
  del config, last_metrics
  return {"per_seed": [
      {"valid_loss_initial": float(evaluation["valid_loss_initial"][i]),
       "valid_loss_best": float(evaluation["valid_loss_best"][i]),
       "best_step": int(evaluation["best_step"][i])}
      for i in range(len(evaluation["best_step"]))]}


def rm(config, evaluation, last_metrics) -> dict[str, Any]:
  """The reward model: held-out accuracy against the annotators and the
  gold reward, the kept parameters' development accuracy, and the reward
  statistics of the data set's responses."""
  del config, last_metrics
  per_seed = []
  for i in range(len(evaluation["best_step"])):
    first = evaluation["valid_chosen"][i] > evaluation["valid_rejected"][i]
    margin = evaluation["valid_gold_margin"][i]
    decided = margin != 0
    per_seed.append({
        "valid_accuracy_vs_annotators": float(np.mean(first)),
        "valid_accuracy_vs_gold": finite_mean(
            first[decided] == (margin[decided] > 0)),
        "annotator_labels_vs_gold": finite_mean(margin[decided] > 0),
        "dev_accuracy": float(evaluation["dev_accuracy"][i]),
        "best_step": int(evaluation["best_step"][i]),
        "reference_reward_mean_before": float(
            evaluation["reference_mean"][i]),
        "reference_reward_std_before": float(evaluation["reference_std"][i])})
  return {"per_seed": per_seed}


def _gain(policy, reference) -> float | None:
  """The policy's mean minus the reference's, in reference standard
  deviations (None without values or spread)."""
  p, r = finite(policy), finite(reference)
  if not p.size or r.size < 2 or not r.std() > 0:
    return None
  return float((p.mean() - r.mean()) / r.std())


def rl(config, evaluation, last_metrics) -> dict[str, Any]:
  """RL on the language model, per seed: the held-out scores, gold scores
  and exact KL of the policy beside the reference's, and the gains in
  reference standard deviations."""
  del config
  per_seed = []
  for i, last in enumerate(last_metrics):
    ev = {k: v[i] for k, v in evaluation.items()}
    row = {key: finite_mean(ev[key]) for key in (
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
        policy_stop_fraction=finite_mean(ev["policy_stopped"]),
        reference_stop_fraction=finite_mean(ev["reference_stopped"]),
        final_kl_coef=float(ev["kl_coef"]),
        last_train_kl=last.get("objective/kl"))
    per_seed.append(row)
  return {"per_seed": per_seed}


def dpo(config, evaluation, last_metrics) -> dict[str, Any]:
  """DPO, per seed: TRL's metrics of the held-out pairs; with held-out
  prompts, the policy's gold score and exact KL beside the reference's
  (as :func:`rl` names them)."""
  del config, last_metrics
  per_seed = []
  for i in range(len(evaluation["eval/loss"])):
    ev = {k: v[i] for k, v in evaluation.items()}
    row = {"valid_loss": float(ev["eval/loss"]),
           "valid_reward_accuracy": float(ev["eval/rewards/accuracies"]),
           "valid_reward_margin": float(ev["eval/rewards/margins"])}
    if "policy_gold" in ev:
      row.update({key: finite_mean(ev[key]) for key in (
          "policy_gold", "reference_gold", "policy_kl_exact")})
      row.update(
          gold_gain_in_reference_std=_gain(ev["policy_gold"],
                                           ev["reference_gold"]),
          policy_stop_fraction=finite_mean(ev["policy_stopped"]),
          reference_stop_fraction=finite_mean(ev["reference_stopped"]))
    per_seed.append(row)
  return {"per_seed": per_seed}


def dpo_report(summary: dict[str, Any]) -> str:
  """:func:`dpo`'s summary, one line per seed."""
  lines = []
  for i, s in enumerate(summary["per_seed"]):
    text = (f"seed {i}: held-out pairs: loss {_num(s['valid_loss'], '.4f')}, "
            f"implicit-reward accuracy {_num(s['valid_reward_accuracy'], '.1%')}"
            f", margin {_num(s['valid_reward_margin'], '.4f')}")
    if "policy_gold" in s:
      gain = s["gold_gain_in_reference_std"]
      text += (f"; gold {_num(s['reference_gold'], '.3f')} (reference) -> "
               f"{_num(s['policy_gold'], '.3f')}"
               f"{'' if gain is None else f' ({gain:+.2f} sd)'}; "
               f"KL(policy || reference) {_num(s['policy_kl_exact'], '.3f')} "
               f"nats per response")
    lines.append(text)
  return "\n".join(lines)


def rl_report(summary: dict[str, Any]) -> str:
  """:func:`rl`'s summary, one line per seed."""
  def std(x):
    return "" if x is None else f" ({x:+.2f} sd)"
  return "\n".join(
      f"seed {i}: held-out reward-model score "
      f"{_num(s['reference_proxy'], '.3f')} (reference) -> "
      f"{_num(s['policy_proxy'], '.3f')}"
      f"{std(s['proxy_gain_in_reference_std'])}, with the missing-stop "
      f"penalty {_num(s['reference_scores'], '.3f')} -> "
      f"{_num(s['policy_scores'], '.3f')}"
      f"{std(s['score_gain_in_reference_std'])}; "
      f"gold {_num(s['reference_gold'], '.3f')} -> "
      f"{_num(s['policy_gold'], '.3f')}"
      f"{std(s['gold_gain_in_reference_std'])}; KL(policy || reference) "
      f"{_num(s['policy_kl_exact'], '.3f')} nats per response"
      for i, s in enumerate(summary["per_seed"]))
