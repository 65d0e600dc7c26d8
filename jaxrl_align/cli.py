"""The ``jaxrl-align`` command (also ``python -m jaxrl_align``).

Host side: argument parsing and printing. ``train`` options are built from
the config dataclasses (every field is ``--field-name VALUE``, with its
docstring and default in ``--help``); the work is done by
:mod:`jaxrl_align.experiment`, :mod:`jaxrl_align.evaluation` and
:mod:`jaxrl_align.plotting`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
from typing import Any

from jaxrl_align import envs

_RUNNER_FIELDS = ("seeds", "seed", "chunk", "checkpoint_every", "keep",
                  "eval_episodes")


# ------------------------------------------------- config fields as options


def _algos():
  from jaxrl_align import experiment

  return experiment.ALGOS


def _field_docs(config_cls) -> dict[str, str]:
  """``{field: description}`` from the config's ``Attributes:`` docstring."""
  doc = config_cls.__doc__ or ""
  body = doc.split("Attributes:", 1)[-1]
  docs, name = {}, None
  for line in body.splitlines():
    m = re.match(r"\s{4}(\w+): (.*)", line)
    if m:
      name = m.group(1)
      docs[name] = m.group(2).strip()
    elif name and line.strip():
      docs[name] += " " + line.strip()
  return docs


def _str2bool(text: str) -> bool:
  value = text.strip().lower()
  if value in ("1", "true", "yes", "on"):
    return True
  if value in ("0", "false", "no", "off"):
    return False
  raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _float(text: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")


def _field_kwargs(name: str, example: Any) -> dict[str, Any]:
  if isinstance(example, bool):
    return dict(type=_str2bool, metavar="BOOL")
  if isinstance(example, int):
    return dict(type=int, metavar="INT")
  if isinstance(example, tuple):
    return dict(type=int, nargs="+", metavar="INT")
  if name == "objective":
    return dict(choices=["clip", "kl_penalty"])
  return dict(type=_float, metavar="X")


def config_fields() -> dict[str, dict[str, Any]]:
  """Every config field of every algorithm: ``{name: {"algos": [...],
  "static": bool, "doc": str, "defaults": {algo: default}}}``."""
  from jaxrl_align import experiment

  fields: dict[str, dict[str, Any]] = {}
  for algo, (module, config_cls) in _algos().items():
    docs = _field_docs(config_cls)
    static = experiment.static_fields(config_cls)
    for f in dataclasses.fields(config_cls):
      if f.name == "env_id":
        continue
      entry = fields.setdefault(f.name, {
          "algos": [], "static": f.name in static,
          "doc": docs.get(f.name, "").replace("*static* ", ""),
          "defaults": {}})
      entry["algos"].append(algo)
      entry["defaults"][algo] = module.DEFAULTS.get(f.name)
  return fields


def _shown_default(entry: dict[str, Any]) -> str:
  show = lambda v: " ".join(map(str, v)) if isinstance(v, tuple) else str(v)
  values = entry["defaults"]
  if len(set(map(show, values.values()))) == 1:
    return show(next(iter(values.values())))
  return ", ".join(f"{algo.upper()} {show(v)}" for algo, v in values.items())


def _add_config_options(parser: argparse.ArgumentParser) -> None:
  fields = config_fields()
  groups = {
      "both": parser.add_argument_group(
          "config fields, PPO and TRPO (default: the task's preset for the "
          "field, else the value shown; *static* fields fix the program)"),
      "ppo": parser.add_argument_group("config fields, PPO only"),
      "trpo": parser.add_argument_group("config fields, TRPO only")}
  for name, entry in fields.items():
    group = groups["both" if len(entry["algos"]) > 1 else entry["algos"][0]]
    help_text = (("*static* " if entry["static"] else "") + entry["doc"]
                 + f" [default: preset, else {_shown_default(entry)}]"
                 ).replace("%", "%%")
    group.add_argument("--" + name.replace("_", "-"), dest=name,
                       default=argparse.SUPPRESS, help=help_text,
                       **_field_kwargs(name, next(iter(
                           entry["defaults"].values()))))


# ------------------------------------------------------------------ commands


def _train(args: argparse.Namespace) -> int:
  from jaxrl_align import experiment

  fields = config_fields()
  overrides = {k: tuple(v) if isinstance(v, list) else v
               for k, v in vars(args).items() if k in fields}
  runner = {k: getattr(args, k) for k in _RUNNER_FIELDS
            if getattr(args, k, None) is not None}
  if args.resume:
    algo, stored, settings = experiment.load_config(args.resume)
    if args.algo not in (None, algo):
      raise experiment.RunError(f"The run in {args.resume!r} is {algo}; "
                                f"--algo {args.algo} does not match.")
    if args.env not in (None, stored.env_id):
      raise experiment.RunError(f"The run in {args.resume!r} is on "
                                f"{stored.env_id}; --env {args.env} does not "
                                f"match.")
    if runner:
      raise experiment.RunError(
          "Runner options (" + ", ".join("--" + k.replace("_", "-")
                                         for k in runner)
          + ") are fixed by the run being resumed.")
    _check_fields(algo, overrides)
    config = stored.replace(**overrides)  # validates the new values
    out = args.resume
  else:
    if args.out is None:
      raise experiment.RunError("--out RUN_DIR is required (or --resume "
                                "RUN_DIR).")
    algo = args.algo or "ppo"
    experiment.algo_module(algo)
    _check_fields(algo, overrides)
    _, config_cls = experiment.ALGOS[algo]
    config = config_cls(env_id=args.env or "CartPole-v1", **overrides)
    settings = experiment.RunnerSettings(**runner)
    out = args.out
  result = experiment.run(algo, config, out, settings, resume=bool(
      args.resume), overwrite=args.overwrite, tensorboard=args.tensorboard,
                          progress=not args.no_progress)
  if result.interrupted:
    return 130
  print(experiment.format_summary(result.summary))
  print(f"run directory: {out} (metrics.jsonl, summary.json, "
        f"learning_curve.png)")
  return 0


def _check_fields(algo: str, overrides: dict[str, Any]) -> None:
  from jaxrl_align import experiment

  fields = config_fields()
  wrong = [k for k in overrides if algo not in fields[k]["algos"]]
  if wrong:
    valid = sorted(k for k, e in fields.items() if algo in e["algos"])
    raise experiment.RunError(
        f"{', '.join('--' + k.replace('_', '-') for k in wrong)} is not a "
        f"{algo.upper()} field; {algo.upper()} fields: "
        f"{', '.join('--' + k.replace('_', '-') for k in valid)}.")


def _eval(args: argparse.Namespace) -> int:
  import numpy as np

  from jaxrl_align import evaluation
  from jaxrl_align import experiment

  returns, step = evaluation.evaluate_run(args.run_dir, args.episodes)
  algo, config, _ = experiment.load_config(args.run_dir)
  print(f"{algo.upper()} on {config.env_id}, checkpoint at update {step}, "
        f"{args.episodes} deterministic episodes per seed")
  for i, r in enumerate(returns):
    print(f"  seed {i}: {np.mean(r):9.1f}  (min {np.min(r):.1f}, "
          f"max {np.max(r):.1f})")
  means = returns.mean(1)
  print(f"  mean {np.mean(means):9.1f} ± {np.std(means):.1f} over seeds")
  if args.video:
    path = os.path.join(args.run_dir, f"episode_seed{args.seed_index}.gif")
    total, frames = evaluation.record_video(args.run_dir, path,
                                            seed_index=args.seed_index)
    print(f"video: {path} ({frames} frames, return {total:.1f}, rendered "
          f"by Gymnasium)")
  return 0


def _plot(args: argparse.Namespace) -> int:
  from jaxrl_align import plotting

  out = args.out or os.path.join(args.run_dirs[0], "learning_curve.png")
  plotting.plot_runs(args.run_dirs, out, metric=args.metric)
  print(f"wrote {out}")
  return 0


def _demo(args: argparse.Namespace) -> int:
  import jax

  from jaxrl_align import demo
  from jaxrl_align import experiment
  from jaxrl_align import plotting

  print(f"jaxrl_align demo: JAX {jax.__version__} on "
        f"{jax.default_backend()}, {os.cpu_count()} cores\n")
  correct, wrong = jax.jit(demo.time_limit_advantages)()
  print("1. GAE on a time-limited task (reward 1 forever, cut every 50 "
        "steps; true value 1/(1-γ) = 100): mean |advantage| should be 0.")
  print(f"   truncation bootstrapped (jaxrl_align.gae): {float(correct):8.4f}")
  print(f"   cut treated as termination (a common bug):  {float(wrong):8.4f}"
        "\n")
  print(f"2. PPO and TRPO on CartPole-v1, {args.seeds} seeds each in one "
        f"vmap, {args.total_timesteps:,} steps per seed:")
  runs = []
  for algo in ("ppo", "trpo"):
    _, config_cls = experiment.ALGOS[algo]
    config = config_cls(env_id="CartPole-v1",
                        total_timesteps=args.total_timesteps)
    out = os.path.join(args.out, algo)
    result = experiment.run(algo, config, out, experiment.RunnerSettings(
        seeds=args.seeds), overwrite=True, progress=not args.no_progress)
    print(experiment.format_summary(result.summary) + "\n")
    runs.append(out)
  figure = plotting.plot_runs(runs, os.path.join(args.out,
                                                 "learning_curves.png"))
  print(f"Learning curves: {figure}; runs in {args.out}/ (try: jaxrl-align "
        f"eval {runs[0]} --video)")
  return 0


# -------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="jaxrl-align", allow_abbrev=False,
      description="Policy-gradient RL (PPO, TRPO) as pure, jitted JAX "
                  "functions: train, evaluate, plot.")
  sub = parser.add_subparsers(dest="command", required=True)
  fmt = argparse.ArgumentDefaultsHelpFormatter

  train = sub.add_parser(
      "train", help="train a learner over seeds into a run directory",
      allow_abbrev=False,
      description="Train PPO or TRPO on a classic-control task, several "
                  "seeds in one vmap, with checkpoints that resume exactly.")
  run = train.add_argument_group("run")
  run.add_argument("--algo", choices=sorted(_algos()), default=None,
                   help="learner (default ppo; taken from the run with "
                        "--resume)")
  run.add_argument("--env", default=None, metavar="ENV_ID",
                   help="task: " + ", ".join(envs.ENV_IDS)
                   + " (default CartPole-v1)")
  run.add_argument("--out", default=None, metavar="RUN_DIR",
                   help="run directory to create")
  run.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue this run from its newest readable "
                        "checkpoint")
  run.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out")
  run.add_argument("--seeds", type=int, default=None,
                   help="seeds trained in one vmap (default 1)")
  run.add_argument("--seed", type=int, default=None,
                   help="base seed (default 0)")
  run.add_argument("--chunk", type=int, default=None,
                   help="updates per jitted call; divides the number of "
                        "updates (default: about 20 calls per run)")
  run.add_argument("--checkpoint-every", type=int, default=None,
                   metavar="UPDATES",
                   help="checkpoint interval (default: about 10 per run)")
  run.add_argument("--keep", type=int, default=None,
                   help="checkpoints kept (default 3)")
  run.add_argument("--eval-episodes", type=int, default=None,
                   help="final evaluation episodes per seed (default 16)")
  run.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events (needs tensorboardX)")
  run.add_argument("--no-progress", action="store_true",
                   help="no progress bar")
  _add_config_options(train)
  train.set_defaults(func=_train)

  evaluate = sub.add_parser("eval", help="evaluate a run's newest checkpoint",
                            formatter_class=fmt)
  evaluate.add_argument("run_dir", metavar="RUN_DIR")
  evaluate.add_argument("--episodes", type=int, default=16,
                        help="deterministic episodes per seed")
  evaluate.add_argument("--video", action="store_true",
                        help="render one episode with Gymnasium to a GIF")
  evaluate.add_argument("--seed-index", type=int, default=0,
                        help="which seed's policy the video shows")
  evaluate.set_defaults(func=_eval)

  plot = sub.add_parser("plot", help="learning curves of one or more runs",
                        formatter_class=fmt)
  plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
  plot.add_argument("--out", default=None, metavar="PNG",
                    help="figure path (default: RUN_DIR/learning_curve.png "
                         "of the first run)")
  plot.add_argument("--metric", default="episode_return",
                    help="a key of metrics.jsonl")
  plot.set_defaults(func=_plot)

  demo = sub.add_parser(
      "demo", help="the main job: PPO and TRPO on CartPole-v1, 8 seeds each",
      formatter_class=fmt)
  demo.add_argument("--seeds", type=int, default=8,
                    help="seeds per learner, in one vmap")
  demo.add_argument("--total-timesteps", type=int, default=100_000,
                    help="env steps per seed")
  demo.add_argument("--out", default="runs/demo", metavar="DIR",
                    help="where the two runs and the figure go")
  demo.add_argument("--no-progress", action="store_true",
                    help="no progress bar")
  demo.set_defaults(func=_demo)

  from jaxrl_align import rlhf_cli  # registers `rlhf ...`

  rlhf_cli.add_parser(sub)
  return parser


def _unknown_options(unknown: list[str], valid: list[str] | None = None) -> str:
  if valid is None:
    valid = ["--" + k.replace("_", "-") for k in config_fields()]
    valid += ["--" + k.replace("_", "-") for k in _RUNNER_FIELDS]
  messages = []
  for item in unknown:
    if item.startswith("--"):
      name = item.split("=", 1)[0]
      close = difflib.get_close_matches(name, valid, n=1)
      hint = f" (did you mean {close[0]}?)" if close else ""
      messages.append(f"unknown option {name}{hint}")
    else:
      messages.append(f"unexpected argument {item!r}")
  return ("; ".join(messages) + ".\nValid options: "
          + ", ".join(sorted(valid)) + ".")


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args, unknown = parser.parse_known_args(argv)
  if unknown:
    command, valid = args.command, None
    if command == "rlhf":
      from jaxrl_align import rlhf_cli

      command = f"rlhf {args.rlhf_command}"
      valid = rlhf_cli.option_names(args.rlhf_command)
    print(f"jaxrl-align {command}: error: {_unknown_options(unknown, valid)}",
          file=sys.stderr)
    return 2
  for name in ("seeds", "episodes", "total_timesteps"):
    value = getattr(args, name, None)
    if value is not None and value < 1:
      print(f"jaxrl-align {args.command}: error: --"
            f"{name.replace('_', '-')} must be >= 1, got {value}.",
            file=sys.stderr)
      return 2
  try:
    return args.func(args)
  except ValueError as e:  # bad configs and run errors, before compiling
    print(f"jaxrl-align {args.command}: error: {e}", file=sys.stderr)
    return 2
