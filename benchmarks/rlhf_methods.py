"""Which method to use: PPO, TRPO, RLOO, GRPO, DPO and best-of-N on one
pipeline, the gold score gained against the KL spent.

From a pipeline's ``sft``, ``prefs`` and ``rm`` run directories (the
demo's, ``runs/demo/rlhf``, by default: 2 layers, width 64, 8-token
prompts, 24-token responses), in one process:

* each RL method (``jaxrl-align rlhf ppo | trpo | rloo | grpo``, through
  the stage runner, and GRPO's variants: ``grpo-seq``, the paper's
  per-sequence mean; ``grpo-dr``, Dr. GRPO's loss without std scaling;
  ``grpo-dapo2``, DAPO's clip-higher 0.28 with two epochs, since with one
  the ratio is 1 and no clip acts; GRPO's default loss is DAPO's) trains ``--seeds`` seeds in one vmapped run at a fixed
  small β, so that its KL to the reference keeps growing, assessed every
  ``--eval-every`` iterations on the held-out prompts (one response per
  prompt: the gold annotator's score, the reward model's (the proxy) and
  the exact KL);
* DPO (``rlhf dpo``) likewise on the preference pairs, assessed every
  ``--dpo-eval-every`` steps;
* best-of-N from the reference, N = 1 … 64, on the same held-out prompts
  (:mod:`jaxrl_align.rlhf.best_of_n`: the KL measured on the samples).

The gold gain is in standard deviations of the reference's gold score (one
pool of reference samples, the same for every method). Reported per method
(mean and standard deviation over seeds):

* the gold gain at a KL of 6 nats, read off each seed's training
  trajectory at its first crossing (linear between assessments; a seed
  that never got there, or was past it at its first assessment, is left
  out and counted);
* the episodes (DPO: pairs) and the wall time to the first assessment at a
  gold gain of +0.5 sd (wall time: that share of the run's updates times
  the run's wall seconds per update, compile and assessments included);
* Gao et al. (2023)'s functional forms fitted by least squares to every
  assessment of every seed, with ``d = √KL``: RL and DPO ``d (α − β log
  d)``, best-of-N ``d (α − β d)``, and the fit's residual;
* the same read-off and fit for the proxy score (in standard deviations
  of the reference's proxy score), where the run has one (not DPO, which
  trains without the reward model).

Usage::

  python benchmarks/rlhf_methods.py [--runs runs/demo/rlhf] [--seeds 3]
      [--iterations 100] [--beta 0.05] [--json F] [--plot F.png]

Whatever a method reaches is reported as it is; no method is tuned here
beyond the shared settings printed at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import jax
import numpy as np

from jaxrl_align.host import runner
from jaxrl_align.host.errors import RunError
from jaxrl_align.host.rlhf import dpo_stage
from jaxrl_align.host.rlhf import rl_stages
from jaxrl_align.rlhf import best_of_n
from jaxrl_align.rlhf import dpo
from jaxrl_align.rlhf import grpo
from jaxrl_align.rlhf import ppo
from jaxrl_align.rlhf import rloo
from jaxrl_align.rlhf import trpo

KL_AT = 6.0   # nats: where the table reads the gold gain
GAIN_AT = 0.5  # reference sd: the gain whose cost the table reports


def rl_configs(args) -> dict:
  """The RL methods at the shared settings (fixed β, the pipeline's batch,
  lengths and learning rate)."""
  common = dict(iterations=args.iterations, batch_size=64,
                response_length=args.response_length,
                eval_every=args.eval_every, kl_control="fixed",
                kl_coef=args.beta, missing_eos_penalty=0.0)
  lr = dict(learning_rate=args.learning_rate)
  return {"ppo": ppo.RLHFPPOConfig(**common, **lr),
          "trpo": trpo.RLHFTRPOConfig(**common, max_kl=0.02),
          "rloo": rloo.RLHFRLOOConfig(**common, **lr, group_size=4),
          "grpo": grpo.RLHFGRPOConfig(**common, **lr, group_size=4),
          # the variants users reach for (TRL's names; GRPO's default loss
          # is already DAPO's token-level one): the paper's per-sequence
          # mean, Dr. GRPO (no std scaling, a constant denominator), and
          # DAPO's clip-higher, which needs a second epoch to act (with
          # one, the ratio is 1)
          "grpo-seq": grpo.RLHFGRPOConfig(**common, **lr, group_size=4,
                                          loss_type="grpo"),
          "grpo-dr": grpo.RLHFGRPOConfig(**common, **lr, group_size=4,
                                         loss_type="dr_grpo",
                                         scale_rewards="none"),
          "grpo-dapo2": grpo.RLHFGRPOConfig(**common, **lr, group_size=4,
                                            clip_eps_high=0.28, epochs=2)}


def trajectory(run_dir: str, seeds: int, units: str):
  """Per seed, the assessments' ``(units done, KL, gold, proxy)`` from the
  run's metrics (proxy NaN where the run has no reward model: DPO), and
  the run's wall seconds per update."""
  rows = [r for r in runner.read_metrics(run_dir)
          if r.get("eval/gold") is not None]
  per_seed = [np.asarray([(r[units], r["eval/kl_exact"], r["eval/gold"],
                           r.get("eval/proxy", np.nan))
                          for r in rows if r["seed"] == s], np.float64)
              for s in range(seeds)]
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  return per_seed, summary["wall_seconds_this_session"] / summary["updates"]


def read_off(points: np.ndarray, at: float, column: int):
  """``(point, resolved)`` at the first crossing of ``at`` by
  ``points[:, column]``: the other columns linearly interpolated between
  the assessments either side; ``resolved`` False when the first
  assessment is already past ``at`` (the crossing lies at or before it,
  and the point returned is that assessment). None when never crossed."""
  values = points[:, column]
  hits = np.nonzero(values >= at)[0]
  if not hits.size:
    return None
  i = hits[0]
  if i == 0:
    return points[0], bool(values[0] == at)
  w = (at - values[i - 1]) / (values[i] - values[i - 1])
  return points[i - 1] + w * (points[i] - points[i - 1]), True


def gao_fit(kl: np.ndarray, gain: np.ndarray, form: str):
  """``(α, β, rms residual)`` of ``gain = d (α − β g(d))``, ``d = √KL``,
  ``g = log`` (RL) or the identity (best-of-N): linear least squares on
  ``gain / d`` (points with ``d > 0.05``)."""
  d = np.sqrt(np.maximum(kl, 0))
  keep = d > 0.05
  d, gain = d[keep], gain[keep]
  g = np.log(d) if form == "rl" else d
  a = np.stack([d, -d * g], 1)
  (alpha, beta), *_ = np.linalg.lstsq(a, gain, rcond=None)
  return float(alpha), float(beta), float(np.sqrt(np.mean(
      (a @ [alpha, beta] - gain) ** 2)))


def summarise(name, per_seed, per_update, ref, units, units_per_update):
  """The table's row of a trained method (``ref``: the reference's gold
  and proxy means and standard deviations)."""
  gains, proxy_gains, points = [], [], []
  for p in per_seed:
    gain = (p[:, 2] - ref["gold"][0]) / ref["gold"][1]
    proxy = (p[:, 3] - ref["proxy"][0]) / ref["proxy"][1]
    traj = np.stack([p[:, 0], p[:, 1], gain, proxy], 1)
    points.append(traj)
    at_kl = read_off(traj, KL_AT, 1)  # unresolved: past 6 nats at once
    ok = at_kl and at_kl[1]
    gains.append(float(at_kl[0][2]) if ok else None)
    proxy_gains.append(float(at_kl[0][3]) if ok and np.isfinite(
        at_kl[0][3]) else None)
  allp = np.concatenate(points)
  alpha, beta, rms = gao_fit(allp[:, 1], allp[:, 2], "rl")
  proxy_fit = None
  if np.all(np.isfinite(allp[:, 3])):
    pa, pb, pr = gao_fit(allp[:, 1], allp[:, 3], "rl")
    proxy_fit = {"form": "d (α − β log d)", "alpha": pa, "beta": pb,
                 "rms": pr}
  return {"method": name, "units": units, "gain_at_kl": gains,
          "proxy_gain_at_kl": proxy_gains, "proxy_gao": proxy_fit,
          "units_per_update": units_per_update,
          "seconds_per_update": per_update,
          "final_kl": [float(p[-1, 1]) for p in per_seed],
          "final_gain": [float(p[-1, 2]) for p in points],
          "gao": {"form": "d (α − β log d)", "alpha": alpha, "beta": beta,
                  "rms": rms},
          "trajectory": [p.tolist() for p in points]}


def spread(values, prefix="", digits=2):
  """``mean ± sd`` of the values that are not None (how many, when some
  are)."""
  got = [v for v in values if v is not None]
  if not got:
    return "–"
  text = f"{prefix}{np.mean(got):.{digits}f} ± {np.std(got):.{digits}f}"
  return text + ("" if len(got) == len(values) else
                 f" ({len(got)} of {len(values)})")


def cost_to_gain(row):
  """Per seed, the units to the first assessment at +GAIN_AT sd (linear
  between assessments), and whether it was reached by the first one (the
  crossing then lies at or before it: not resolved)."""
  out = []
  for p in row["trajectory"]:
    p = np.asarray(p)
    at = read_off(p, GAIN_AT, 2)
    out.append(None if at is None else (float(at[0][0]), not at[1]))
  return out


def table(rows) -> str:
  lines = [f"| method | gold gain at KL {KL_AT:g} nats (sd) | to +{GAIN_AT:g} "
           f"sd: episodes (DPO: pairs) | to +{GAIN_AT:g} sd: wall s | "
           f"final KL | final gold gain (sd) | Gao fit α, β (rms) | "
           f"proxy gain at KL {KL_AT:g} nats (sd) | proxy Gao fit α, β "
           f"(rms) |",
           "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
  for r in rows:
    g = r["gao"]
    if r["method"] == "best-of-N":
      cost = wall = "–"
    else:
      costs = cost_to_gain(r)
      first = any(c is not None and c[1] for c in costs)
      prefix = "≤ " if first else ""
      units = [None if c is None else c[0] for c in costs]
      cost = spread(units, prefix, 0)
      wall = spread([None if u is None else u / r["units_per_update"]
                     * r["seconds_per_update"] for u in units], prefix, 1)
    pg = r.get("proxy_gao")
    proxy_fit = ("–" if not pg else
                 f"{pg['alpha']:+.3f}, {pg['beta']:+.3f} ({pg['rms']:.3f})")
    lines.append(
        f"| {r['method']} | {spread(r['gain_at_kl'], '+')} | {cost} | {wall} "
        f"| {np.mean(r['final_kl']):.2f} | {spread(r['final_gain'], '+')} | "
        f"{g['alpha']:+.3f}, {g['beta']:+.3f} ({g['rms']:.3f}) | "
        f"{spread(r.get('proxy_gain_at_kl') or [None], '+')} | {proxy_fit} |")
  return "\n".join(lines)


def _beta(result, method):
  args = result["args"]
  return args["dpo_beta"] if method == "dpo" else args["beta"]


def sweep_table(results) -> str:
  """One row per method, per run (one β each, ascending): the final KL
  and gold gain (mean ± sd over seeds) and the gain at 6 nats where the
  run crossed it (the read-off of :func:`summarise`)."""
  results = sorted(results, key=lambda r: r["args"]["beta"])
  head = " | ".join(f"β {r['args']['beta']:g} (DPO {r['args']['dpo_beta']:g})"
                    for r in results)
  lines = [f"| method | {head} |",
           "| --- |" + " ---: |" * len(results)]
  methods = [row["method"] for row in results[0]["rows"]]
  for m in methods:
    cells = []
    for r in results:
      row = next((x for x in r["rows"] if x["method"] == m), None)
      if row is None:
        cells.append("–")
        continue
      at = spread(row["gain_at_kl"], "+")
      cells.append(f"KL {np.mean(row['final_kl']):.2f}, gold "
                   f"{spread(row['final_gain'], '+')}"
                   + ("" if at == "–" else f"; at {KL_AT:g} nats {at}"))
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def sweep_plot(results, path):
  """Each method's final (KL, gold gain) at each β, seeds' mean with their
  spread, joined across β; best-of-N's curve once."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  results = sorted(results, key=lambda r: r["args"]["beta"])
  fig, ax = plt.subplots(figsize=(7, 4.3))
  for i, row in enumerate(results[0]["rows"]):
    m, color = row["method"], f"C{i}"
    if m == "best-of-N":
      ax.plot(row["kl"], row["gain"], "o-", color=color, ms=3,
              label="best-of-N (N = 1 … 64)")
      continue
    pts = []
    for r in results:
      x = next((x for x in r["rows"] if x["method"] == m), None)
      if x is not None:
        pts.append((np.mean(x["final_kl"]), np.mean(x["final_gain"]),
                    np.std(x["final_kl"]), np.std(x["final_gain"]),
                    _beta(r, m)))
    pts = np.asarray(pts)
    ax.errorbar(pts[:, 0], pts[:, 1], xerr=pts[:, 2], yerr=pts[:, 3],
                fmt="o-", color=color, ms=4, lw=1, capsize=2, label=m)
    for x, y, *_, b in pts:
      ax.annotate(f"{b:g}", (x, y), textcoords="offset points",
                  xytext=(3, 3), fontsize=6, color=color)
  ax.set_xlabel("final KL(π ‖ π_ref), nats per response (held-out prompts)")
  ax.set_ylabel("final gold gain, reference sd")
  ax.set_title("each method at three β (labels; DPO its own β): mean and "
               "sd over seeds", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--runs", default="runs/demo/rlhf",
                      help="a directory holding sft/, prefs/ and rm/ runs")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--iterations", type=int, default=100)
  parser.add_argument("--eval-every", type=int, default=10)
  parser.add_argument("--beta", type=float, default=0.05)
  parser.add_argument("--learning-rate", type=float, default=3e-4)
  parser.add_argument("--dpo-epochs", type=int, default=6)
  parser.add_argument("--dpo-eval-every", type=int, default=5)
  parser.add_argument("--dpo-learning-rate", type=float, default=3e-4)
  parser.add_argument("--dpo-beta", type=float, default=0.1)
  parser.add_argument("--prompt-tokens", type=int, default=8)
  parser.add_argument("--response-length", type=int, default=24)
  parser.add_argument("--eval-prompts", type=int, default=128)
  parser.add_argument("--methods",
                      default="ppo,trpo,rloo,grpo,grpo-seq,grpo-dr,"
                              "grpo-dapo2,dpo,bon")
  parser.add_argument("--json")
  parser.add_argument("--plot")
  parser.add_argument("--render", metavar="JSON",
                      help="only print the table (and --plot) of a --json "
                           "this script wrote")
  parser.add_argument("--sweep", metavar="JSON", nargs="+",
                      help="only print the β sweep of several --json runs "
                           "(each at its own --beta), and --plot it")
  args = parser.parse_args()
  if args.sweep:
    results = []
    for path in args.sweep:
      with open(path) as f:
        results.append(json.load(f))
    print(sweep_table(results))
    if args.plot:
      sweep_plot(results, args.plot)
    return
  if args.render:
    with open(args.render) as f:
      result = json.load(f)
    print(table(result["rows"]))
    if args.plot:
      plot(result, args.plot)
    return
  sft, prefs, rm = (os.path.join(args.runs, n) for n in ("sft", "prefs",
                                                          "rm"))
  methods = args.methods.split(",")
  settings = rl_stages.RLRunSettings(num_prompts=256,
                                     eval_prompts=args.eval_prompts,
                                     prompt_tokens=args.prompt_tokens,
                                     samples=0)
  try:
    data, model_config, _, (eos, pad) = rl_stages.build_data(sft, rm,
                                                             settings)
  except RunError as e:
    print(f"rlhf_methods.py: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  configs = rl_configs(args)
  base = configs["ppo"].replace(model=model_config, stop_token=eos,
                                pad_token=pad)
  # The reference's gold score: its mean and spread, one pool for all.
  pool = jax.jit(lambda k: best_of_n.reference_samples(
      base, data, data.eval_prompts, data.eval_prompt_mask, k, 64))(
          jax.random.key(1234))
  gold = np.asarray(pool["gold"], np.float64)
  ref_mean, ref_sd = float(gold.mean()), float(gold.std())
  proxy = np.asarray(pool["proxy"], np.float64)
  ref = {"gold": (ref_mean, ref_sd),
         "proxy": (float(proxy.mean()), float(proxy.std()))}
  result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"jax {jax.__version__} {jax.default_backend()}",
            "args": vars(args), "reference_gold": [ref_mean, ref_sd],
            "reference_proxy": list(ref["proxy"]), "rows": []}
  print(f"reference gold {ref_mean:+.4f} ± {ref_sd:.4f} (per response)",
        flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    for name in [m for m in methods if m in configs]:
      start = time.perf_counter()
      out = os.path.join(tmp, name)
      rl_stages.run_rl(name.split("-")[0], out, sft, rm, configs[name],
                       settings, seeds=args.seeds, progress=False)
      per_seed, per_update = trajectory(out, args.seeds, "episodes")
      result["rows"].append(summarise(name, per_seed, per_update, ref,
                                      "episodes", configs[name].batch_size))
      print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    if "dpo" in methods:
      start = time.perf_counter()
      out = os.path.join(tmp, "dpo")
      config = dpo.DPOConfig(epochs=args.dpo_epochs, batch_size=64,
                             eval_every=args.dpo_eval_every,
                             response_length=args.response_length,
                             beta=args.dpo_beta,
                             learning_rate=args.dpo_learning_rate)
      dpo_stage.run_dpo(out, sft, prefs, config, dpo_stage.DPORunSettings(
          eval_prompts=args.eval_prompts, prompt_tokens=args.prompt_tokens),
          seeds=args.seeds, progress=False)
      per_seed, per_update = trajectory(out, args.seeds, "pairs")
      result["rows"].append(summarise("dpo", per_seed, per_update, ref,
                                      "pairs", config.batch_size))
      print(f"dpo: {time.perf_counter() - start:.0f} s", flush=True)
  if "bon" in methods:
    k1, k2 = jax.random.split(jax.random.key(4321))
    draw = jax.jit(lambda k, m: best_of_n.reference_samples(
        base, data, data.eval_prompts, data.eval_prompt_mask, k, m),
        static_argnums=1)
    cand, other = draw(k1, 64), draw(k2, 512)
    ns = [1, 2, 4, 8, 16, 32, 64]
    curve = best_of_n.curve(ns, cand["proxy"], cand["gold"], cand["log_p"],
                            other["proxy"])
    kl = np.asarray(curve.kl_sampled, np.float64)
    gain = (np.asarray(curve.gold, np.float64) - ref_mean) / ref_sd
    at = read_off(np.stack([kl, gain], 1), KL_AT, 0)
    at = at[0] if at and at[1] else None
    alpha, beta, rms = gao_fit(kl, gain, "bon")
    proxy_gain = ((np.asarray(curve.proxy, np.float64) - ref["proxy"][0])
                  / ref["proxy"][1])
    pa, pb, pr = gao_fit(kl, proxy_gain, "bon")
    at_p = read_off(np.stack([kl, proxy_gain], 1), KL_AT, 0)
    result["rows"].append({
        "method": "best-of-N", "units": "N", "gain_at_kl": [
            None if at is None else float(at[1])],
        "proxy_gain_at_kl": [float(at_p[0][1]) if at_p and at_p[1]
                             else None],
        "proxy_gao": {"form": "d (α − β d)", "alpha": pa, "beta": pb,
                      "rms": pr}, "proxy_gain": proxy_gain.tolist(),
        "final_kl": [float(kl[-1])],
        "final_gain": [float(gain[-1])], "n": ns, "kl": kl.tolist(),
        "gain": gain.tolist(), "gao": {"form": "d (α − β d)", "alpha": alpha,
                                       "beta": beta, "rms": rms}})
  text = table(result["rows"])
  print(text)
  result["table"] = text
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  if args.plot:
    plot(result, args.plot)


def plot(result, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4.3))
  for i, r in enumerate(result["rows"]):
    color = f"C{i}"
    if r["method"] == "best-of-N":
      kl, gain = np.asarray(r["kl"]), np.asarray(r["gain"])
      ax.plot(kl, gain, "o-", color=color, label="best-of-N (N = 1 … 64)")
    else:
      for j, p in enumerate(r["trajectory"]):
        p = np.asarray(p)
        ax.plot(p[:, 1], p[:, 2], ".-", color=color, alpha=0.6,
                label=r["method"].upper() if j == 0 else None)
      kl = np.concatenate([np.asarray(p)[:, 1] for p in r["trajectory"]])
    g = r["gao"]
    d = np.linspace(0.05, np.sqrt(max(np.max(kl), 0.1)), 100)
    fit = d * (g["alpha"] - g["beta"] * (np.log(d) if "log" in g["form"]
                                         else d))
    ax.plot(d ** 2, fit, "--", color=color, lw=1)
  ax.axvline(KL_AT, color="0.7", lw=0.8)
  ax.axhline(GAIN_AT, color="0.7", lw=0.8)
  ax.set_xlabel("KL(π ‖ π_ref), nats per response (held-out prompts)")
  ax.set_ylabel("gold gain, reference sd")
  ax.set_title("each RL and DPO seed over training; dashed: Gao et al.'s "
               "forms fitted", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


if __name__ == "__main__":
  main()
