"""RLHF part 2: the reward–KL frontier of PPO and TRPO against best-of-N.

From a pretrained model and its reward model (``jaxrl-align rlhf sft`` and
``rlhf rm`` run directories), in one process:

* **PPO over β**: one compiled program trains a policy per KL coefficient
  (fixed β, ``jax.vmap`` over a batch of configs), then each is scored on
  the held-out prompts: the reward model's score (the proxy), the gold
  annotator's score and the exact ``KL(π || π_ref)`` (from full logits).
* **TRPO over β**, the same; and **TRPO over max_kl** (the trust region's
  radius) at one β.
* **Best-of-N from the reference**, N = 1 … 64, on the same held-out
  prompts: the chosen response's proxy and gold scores, its KL to the
  reference measured on the samples (:mod:`jaxrl_align.rlhf.best_of_n`:
  exact reference log-probabilities, the score CDF from an independent pool
  of reference samples) and the quoted bound ``log N − (N−1)/N``.

Writes the figures as JSON (``--json``) and a plot (``--plot``): gold and
proxy score against KL. Usage::

  python benchmarks/rlhf_frontier.py --sft RUN --rm RUN \\
      [--prompt-tokens 16 --response-length 48] [--iterations 100] \\
      [--betas 0.02 0.05 0.1 0.2 0.5] [--max-kls 0.005 0.01 0.02 0.04] \\
      [--json F] [--plot F.png]

The small pipeline of ``make demo`` (``runs/demo/rlhf/sft`` and ``rm``,
8-token prompts, 24-token responses) runs it in minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align.host.errors import RunError
from jaxrl_align.host.rlhf import rl_stages as rl_host
from jaxrl_align.rlhf import best_of_n
from jaxrl_align.rlhf import ppo
from jaxrl_align.rlhf import trpo


def sweep(learner, configs, data, seed):
  """Trains one policy per config (a config with batched leaves) in one
  program, then evaluates each on the held-out prompts."""
  k = jax.tree.leaves(configs)[0].shape[0]

  def train_and_evaluate(config, key, data):
    init_key, eval_key = jax.random.split(key)
    state = learner.init(config, init_key, data)
    body = lambda s, _: (learner.update(config, s, data)[0], None)  # noqa
    state = jax.lax.scan(body, state, None, config.iterations)[0]
    return learner.evaluate(config, state, eval_key, data, 0)

  keys = jax.random.split(jax.random.key(seed), k)
  start = time.perf_counter()
  out = jax.block_until_ready(jax.jit(jax.vmap(
      train_and_evaluate, in_axes=(0, 0, None)))(configs, keys, data))
  seconds = time.perf_counter() - start
  mean = lambda x: np.nanmean(np.asarray(x, np.float64), axis=1)  # noqa
  return {"proxy": mean(out["policy_proxy"]).tolist(),
          "gold": mean(out["policy_gold"]).tolist(),
          "kl": mean(out["policy_kl_exact"]).tolist(),
          "reference_proxy": float(np.mean(mean(out["reference_proxy"]))),
          "reference_gold": float(np.mean(mean(out["reference_gold"]))),
          "seconds": seconds}


def batched(config, field, values):
  """``config`` with every leaf (hyperparameter) repeated ``len(values)``
  times and ``field`` taking ``values``: a sweep for ``jax.vmap``."""
  k = len(values)
  config = jax.tree.map(lambda x: jnp.full((k,), x, jnp.float32), config)
  return config.replace(**{field: jnp.asarray(values, jnp.float32)})


def best_of_n_curve(config, data, ns, prompts, pool, seed):
  p = prompts
  tokens, mask = data.eval_prompts[:p], data.eval_prompt_mask[:p]
  draw = jax.jit(lambda k, m: best_of_n.reference_samples(
      config, data, tokens, mask, k, m), static_argnums=1)
  k1, k2 = jax.random.split(jax.random.key(seed + 1))
  start = time.perf_counter()
  cand = draw(k1, max(ns))
  other = draw(k2, pool)
  curve = best_of_n.curve(ns, cand["proxy"], cand["gold"], cand["log_p"],
                          other["proxy"])
  return {name: np.asarray(getattr(curve, name), np.float64).tolist()
          for name in curve._fields} | {
              "seconds": time.perf_counter() - start, "prompts": p,
              "pool": pool}


def plot(result, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  bon = result["best_of_n"]
  for ax, what, label in ((axes[0], "gold", "gold score (held-out)"),
                          (axes[1], "proxy", "reward-model score "
                                             "(held-out)")):
    ax.plot(bon["kl_sampled"], bon[what], "o-", color="0.3",
            label="best-of-N, KL measured on samples")
    ax.plot(bon["kl_bound"], bon[what], "o--", color="0.65", mfc="none",
            label="best-of-N at log N − (N−1)/N (the bound)")
    for n, x, y in zip(bon["n"], bon["kl_sampled"], bon[what]):
      if n in (4, 16, 64):
        ax.annotate(f"N={int(n)}", (x, y), textcoords="offset points",
                    xytext=(4, -10), fontsize=7, color="0.3")
    for name, marker, color in (("ppo_beta", "s", "tab:blue"),
                                ("trpo_beta", "^", "tab:orange"),
                                ("trpo_max_kl", "v", "tab:green")):
      s = result[name]
      ax.scatter(s["kl"], s[what], marker=marker, color=color, zorder=3,
                 label=s["label"])
      for v, x, y in zip(s["values"], s["kl"], s[what]):
        ax.annotate(f"{v:g}", (x, y), textcoords="offset points",
                    xytext=(4, 3), fontsize=7, color=color)
    ax.scatter([0], [result["ppo_beta"][f"reference_{what}"]], marker="*",
               s=90, color="k", zorder=3, label="reference")
    ax.set_xlabel("KL(π || π_ref), nats per response")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7, loc="lower right")
  fig.suptitle(result["title"], fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sft", required=True)
  parser.add_argument("--rm", required=True)
  parser.add_argument("--prompt-tokens", type=int, default=16)
  parser.add_argument("--response-length", type=int, default=48)
  parser.add_argument("--iterations", type=int, default=100)
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--eval-prompts", type=int, default=64)
  parser.add_argument("--betas", type=float, nargs="+",
                      default=[0.02, 0.05, 0.1, 0.2, 0.5])
  parser.add_argument("--max-kls", type=float, nargs="+",
                      default=[0.005, 0.01, 0.02, 0.04])
  parser.add_argument("--trpo-beta", type=float, default=0.1)
  parser.add_argument("--ppo-learning-rate", type=float, default=1e-4)
  parser.add_argument("--bon", type=int, nargs="+",
                      default=[1, 2, 4, 8, 16, 32, 64])
  parser.add_argument("--pool", type=int, default=512,
                      help="reference samples per prompt for the score CDF "
                           "(an estimate of F from M samples cannot place "
                           "the best of N beyond 1 - 1/M: keep M >> N)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json")
  parser.add_argument("--plot")
  args = parser.parse_args()

  settings = rl_host.RLRunSettings(eval_prompts=args.eval_prompts,
                                   prompt_tokens=args.prompt_tokens,
                                   seed=args.seed, samples=0)
  try:
    data, model_config, _, (eos, pad) = rl_host.build_data(
        args.sft, args.rm, settings)
  except RunError as e:
    print(f"rlhf_frontier.py: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  common = dict(model=model_config, stop_token=eos, pad_token=pad,
                iterations=args.iterations, batch_size=args.batch_size,
                response_length=args.response_length, kl_control="fixed")
  ppo_config = ppo.RLHFPPOConfig(learning_rate=args.ppo_learning_rate, **common)
  trpo_config = trpo.RLHFTRPOConfig(**common)
  result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"jax {jax.__version__} {jax.default_backend()}",
            "args": vars(args)}
  runs = (("ppo_beta", ppo.LEARNER, ppo_config, "kl_coef", args.betas,
           "PPO, fixed β (labels)"),
          ("trpo_beta", trpo.LEARNER, trpo_config, "kl_coef", args.betas,
           "TRPO, fixed β (labels)"),
          ("trpo_max_kl", trpo.LEARNER,
           trpo_config.replace(kl_coef=args.trpo_beta), "max_kl",
           args.max_kls, f"TRPO at β {args.trpo_beta:g}, max_kl (labels)"))
  for name, learner, config, field, values, label in runs:
    print(f"{name}: {len(values)} configs × {args.iterations} iterations in "
          f"one program ...", flush=True)
    result[name] = sweep(learner, batched(config, field, values), data,
                         args.seed) | {"field": field, "values": values,
                                       "label": label}
    print(json.dumps({k: result[name][k] for k in
                      ("values", "kl", "proxy", "gold", "seconds")}),
          flush=True)
  print("best-of-N ...", flush=True)
  result["best_of_n"] = best_of_n_curve(
      ppo_config, data, args.bon, min(args.eval_prompts,
                                      data.eval_prompts.shape[0]),
      args.pool, args.seed)
  print(json.dumps(result["best_of_n"]), flush=True)
  result["title"] = (f"{model_config.num_layers} layers × width "
                     f"{model_config.width}, {args.prompt_tokens}-token "
                     f"prompts, {args.response_length}-token responses, "
                     f"{args.iterations} iterations of {args.batch_size}; "
                     f"held-out prompts: {data.eval_prompts.shape[0]}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  if args.plot:
    plot(result, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
  main()
