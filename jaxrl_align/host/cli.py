"""The ``jaxrl-align`` command (also ``python -m jaxrl_align``; entered
through :mod:`.launch`, which joins a job of several processes first).

Host side: argument parsing and printing, nothing else. The commands and
their options come from the registries: ``train`` offers every environment
learner of :data:`jaxrl_align.agents.LEARNERS` and every field of its config
(``--field-name VALUE``, with its docstring and default in ``--help``);
``rlhf`` offers the commands of :data:`jaxrl_align.host.rlhf.COMMANDS`. The
work is done by :mod:`.runner`, :mod:`.evaluation`, :mod:`.plotting` and
:mod:`.rlhf`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import Any

from jaxrl_align import agents
from jaxrl_align import envs
from jaxrl_align.agents import tasks
from jaxrl_align.host import distributed
from jaxrl_align.host import options
from jaxrl_align.host import runner

ENV_LEARNERS = agents.LEARNERS
RUNNER_OPTIONS = {
    "seeds": "seeds trained in one vmap (default 1)",
    "seed": "base seed (default 0)",
    "chunk": "updates per jitted call; divides the number of updates "
             "(default: about 20 calls per run)",
    "checkpoint_every": "checkpoint interval in updates (default: about 10 "
                        "per run)",
    "keep": "checkpoints kept (default 3)",
    "eval_episodes": "final evaluation episodes per seed (default 16)",
    "devices": "devices to spread the run over (default 1; on CPU, "
               "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)"}


class _Parser(argparse.ArgumentParser):
  """argparse, with its errors as one line (no usage dump)."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}.\n")


def _require(modules: tuple[str, ...], extra: str, what: str) -> None:
  missing = [m for m in modules if importlib.util.find_spec(m) is None]
  if missing:
    raise runner.RunError(f"{what} needs the {extra} extra: pip install "
                          f"'jaxrl_align[{extra}]' (missing: "
                          f"{', '.join(missing)}).")


# -------------------------------------------------------------- train


def config_fields() -> dict[str, list[str]]:
  """``{field: [learners that have it]}`` over the environment learners."""
  owners: dict[str, list[str]] = {}
  for name, learner in ENV_LEARNERS.items():
    for f in options.option_fields(learner.config_type):
      if f.name != "env_id":
        owners.setdefault(f.name, []).append(name)
  return owners


def _add_train_options(parser: argparse.ArgumentParser) -> None:
  owners = config_fields()
  groups: dict[tuple[str, ...], Any] = {}
  everyone = tuple(ENV_LEARNERS)
  for name, learners in owners.items():
    key = tuple(learners)
    if key not in groups:
      title = ("config fields, " + " and ".join(k.upper() for k in key)
               + (" (default: the task's preset for the field, else the "
                  "value shown; *static* fields fix the program)"
                  if key == everyone else " only"))
      groups[key] = parser.add_argument_group(title)
    learner = ENV_LEARNERS[learners[0]]
    options.add_options(groups[key], learner.config_type, [name],
                        defaults={k: ENV_LEARNERS[k].defaults for k in key},
                        default_note="preset, else ")


def _check_fields(algo: str, given: dict[str, Any]) -> None:
  owners = config_fields()
  wrong = [k for k in given if algo not in owners[k]]
  if wrong:
    valid = sorted(k for k, o in owners.items() if algo in o)
    raise runner.RunError(
        f"{', '.join(map(options.flag, wrong))} is not a {algo.upper()} "
        f"field; {algo.upper()} fields: "
        f"{', '.join(map(options.flag, valid))}.")


def _train_config(args, given, settings):
  """``(learner, config, out)`` of a new run or of the run resumed."""
  if args.resume:
    if args.out is not None or args.overwrite:
      raise runner.RunError("--resume continues the run where it is: it "
                            "takes neither --out nor --overwrite.")
    learner, stored, _ = runner.load_config(args.resume)
    if learner.name not in ENV_LEARNERS:
      from jaxrl_align.host import rlhf

      command = next((n for n, c in rlhf.COMMANDS.items()
                      if c.learner == learner.name), learner.name)
      raise runner.RunError(f"The run in {args.resume!r} is a {learner.name} "
                            f"run: resume it with jaxrl-align rlhf "
                            f"{command} --resume.")
    if args.algo not in (None, learner.name):
      raise runner.RunError(f"The run in {args.resume!r} is {learner.name}; "
                            f"--algo {args.algo} does not match.")
    if args.env not in (None, stored.env_id):
      raise runner.RunError(f"The run in {args.resume!r} is on "
                            f"{stored.env_id}; --env {args.env} does not "
                            f"match.")
    if settings:
      raise runner.RunError(
          "Runner options (" + ", ".join(map(options.flag, settings))
          + ") are fixed by the run being resumed.")
    _check_fields(learner.name, given)
    return learner, stored.replace(**given), args.resume  # validates
  if args.out is None:
    raise runner.RunError("--out RUN_DIR is required (or --resume RUN_DIR).")
  learner = runner.learner_of(args.algo or next(iter(ENV_LEARNERS)))
  _check_fields(learner.name, given)
  task = {"env_id": args.env} if args.env else {}  # else the config's
  return learner, learner.config_type(**task, **given), args.out


def _train(args: argparse.Namespace) -> int:
  given = options.given(args, config_fields())
  settings = {k: getattr(args, k) for k in (*RUNNER_OPTIONS, "shard")
              if getattr(args, k, None) is not None}
  distributed.initialize(args.coordinator, args.num_processes,
                         args.process_id)  # done by `launch`: checked here
  if distributed.count() > 1 and not args.resume:
    settings.setdefault("devices", distributed.devices())  # all of them
  learner, config, out = _train_config(args, given, settings)
  task = tasks.for_config(config)  # built once for the run, and checked
  path = ("JAX-native: rollouts compiled with the learner" if task.jax_native
          else "a Gymnasium environment stepped on the host (a resumed run "
          "restarts its episodes)")
  if primary := distributed.is_primary():  # process 0 speaks for the job
    print(f"{config.env_id}: {path}.", file=sys.stderr)
  result = runner.run(learner, config, out,
                      runner.RunnerSettings(**settings), data=task,
                      resume=bool(args.resume), overwrite=args.overwrite,
                      tensorboard=args.tensorboard,
                      progress=not args.no_progress)
  if result.interrupted and primary:
    print(f"Stopped; checkpoint saved. Resume with: jaxrl-align train "
          f"--resume {out}", file=sys.stderr)
  elif primary:
    print(learner.report(result.summary))
    print(f"run directory: {out} (metrics.jsonl, summary.json, "
          f"learning_curve.png)")
  return 130 if result.interrupted else 0


# ----------------------------------------------------- eval, plot, demo


def _eval(args: argparse.Namespace) -> int:
  import numpy as np

  from jaxrl_align.host import evaluation

  if args.video:
    _require(("pygame",), "video", "--video")
  elif args.seed_index:
    raise runner.RunError("--seed-index chooses the seed a --video shows; "
                          "give --video too.")
  returns, step = evaluation.evaluate_run(args.run_dir, args.episodes)
  _, config, _ = runner.load_config(args.run_dir)
  run = runner.read_run(args.run_dir)
  print(f"{run['algo'].upper()} on {config.env_id}, checkpoint at update "
        f"{step}, {args.episodes} deterministic episodes per seed")
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
  from jaxrl_align.host import plotting

  out = args.out or os.path.join(args.run_dirs[0], "learning_curve.png")
  for run_dir in args.run_dirs:
    runner.read_run(run_dir)  # each is a run, before anything is drawn
  if not out.endswith(".png"):
    raise runner.RunError(f"--out {out!r}: the figure is a PNG file; name it "
                          f"*.png.")
  if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
    raise runner.RunError(f"--out {out!r}: no directory "
                          f"{os.path.dirname(out)!r}.")
  if os.path.exists(out) and not _is_png(out):
    raise runner.RunError(f"--out {out!r} exists and is not a PNG image; "
                          f"refusing to replace it.")
  plotting.plot_runs(args.run_dirs, out, metric=args.metric)
  print(f"wrote {out}")
  return 0


def _is_png(path: str) -> bool:
  if not os.path.isfile(path):
    return False
  with open(path, "rb") as f:
    return f.read(8) == b"\x89PNG\r\n\x1a\n"


def _demo(args: argparse.Namespace) -> int:
  from jaxrl_align.host import demo

  if args.rlhf_iterations < 0:
    raise runner.RunError(f"--rlhf-iterations must be >= 0, got "
                          f"{args.rlhf_iterations}.")
  return demo.main(args.out, args.seeds, args.total_timesteps,
                   progress=not args.no_progress, overwrite=args.overwrite,
                   rlhf_iterations=args.rlhf_iterations)


# --------------------------------------------------------------- rlhf


def _rlhf(args: argparse.Namespace) -> int:
  from jaxrl_align.host import rlhf

  command = rlhf.COMMANDS[args.rlhf_command]
  resume = getattr(args, "resume", None)
  if resume and args.out is not None:
    raise runner.RunError("--out and --resume exclude each other: --resume "
                          "continues the run where it is.")
  out = resume or args.out
  if out is None:
    raise runner.RunError("--out RUN_DIR is required"
                          + (" (or --resume RUN_DIR)." if command.resumable
                             else "."))
  inputs = {name: getattr(args, name) for name, _ in command.inputs}
  missing = [options.flag(n) for n, v in inputs.items() if v is None]
  if missing and not resume:
    raise runner.RunError(f"{', '.join(missing)} RUN_DIR is required.")
  for name, path in inputs.items():
    if path is not None and _overlap(out, path):
      raise runner.RunError(f"--out {out!r} and {options.flag(name)} "
                            f"{path!r} overlap: a run never writes into "
                            f"its inputs.")
  _require(command.needs, "rlhf", f"jaxrl-align rlhf {args.rlhf_command}")
  given = {title: options.given(args, [f.name for f in
                                       options.option_fields(cls, names)])
           for title, cls, names in command.groups}
  if resume and any(given.values()):
    raise runner.RunError("Settings are fixed by the run being resumed; "
                          "give only --resume.")
  return command.main(out, inputs, given, overwrite=args.overwrite,
                      progress=not args.no_progress,
                      **({"resume": bool(resume),
                          "tensorboard": args.tensorboard}
                         if command.resumable else {}))


def _overlap(a: str, b: str) -> bool:
  a, b = os.path.realpath(a), os.path.realpath(b)
  return a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep)


def _add_rlhf_parser(sub) -> None:
  from jaxrl_align.host import rlhf

  parser = sub.add_parser(
      "rlhf", allow_abbrev=False,
      help="RLHF on a small language model: " + ", ".join(rlhf.COMMANDS),
      description="; ".join(f"{n}: {c.help}"
                            for n, c in rlhf.COMMANDS.items()) + ".")
  rsub = parser.add_subparsers(dest="rlhf_command", required=True)
  for name, command in rlhf.COMMANDS.items():
    p = rsub.add_parser(name, allow_abbrev=False, help=command.help,
                        description=command.description)
    p.add_argument("--out", default=None, metavar="RUN_DIR",
                   help="run directory to create")
    if command.resumable:
      p.add_argument("--resume", default=None, metavar="RUN_DIR",
                     help="continue this run from its newest checkpoint")
      p.add_argument("--tensorboard", action="store_true",
                     help="also write TensorBoard events")
    for input_name, input_help in command.inputs:
      p.add_argument(options.flag(input_name), default=None,
                     metavar=f"{input_name.upper()}_RUN", help=input_help)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar")
    for title, cls, names in command.groups:
      options.add_options(p.add_argument_group(title), cls, names)
    p.set_defaults(func=_rlhf)


# -------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
  names = ", ".join(k.upper() for k in ENV_LEARNERS)
  parser = _Parser(
      prog="jaxrl-align", allow_abbrev=False,
      description=f"Policy-gradient RL ({names}) and RLHF as pure, jitted "
                  f"JAX functions: train, evaluate, plot.")
  sub = parser.add_subparsers(dest="command", required=True)
  fmt = argparse.ArgumentDefaultsHelpFormatter

  train = sub.add_parser(
      "train", help="train a learner over seeds into a run directory",
      allow_abbrev=False,
      description=f"Train {names.replace(', ', ' or ')} on a task, several "
                  f"seeds in one vmap, with checkpoints that resume exactly.")
  run = train.add_argument_group("run")
  run.add_argument("--algo", choices=sorted(ENV_LEARNERS), default=None,
                   help=f"learner (default {next(iter(ENV_LEARNERS))}; "
                        f"taken from the run with --resume)")
  default_env = next(iter(ENV_LEARNERS.values())).config_type().env_id
  run.add_argument("--env", default=None, metavar="ENV_ID",
                   help="task: " + ", ".join(envs.ENV_IDS) + " (JAX-native; "
                   f"default {default_env}), or any registered Gymnasium id "
                   "with Box observations and Box or Discrete actions "
                   "(stepped on the host)")
  run.add_argument("--out", default=None, metavar="RUN_DIR",
                   help="run directory to create")
  run.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue this run from its newest readable "
                        "checkpoint")
  run.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out")
  for name, text in RUNNER_OPTIONS.items():
    run.add_argument(options.flag(name), type=int, default=None,
                     metavar="INT", help=text)
  run.add_argument("--shard", choices=runner.SHARDS, default=None,
                   help="with --devices: spread the seeds (default) or split "
                        "every seed's batch of environments (data parallel)")
  run.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events (needs tensorboardX)")
  run.add_argument("--no-progress", action="store_true",
                   help="no progress bar")
  distributed.add_options(train.add_argument_group(
      "many processes (one run over several hosts; the run directory on a "
      "filesystem they all see; docs/devices.md)"))
  _add_train_options(train)
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
  plot.add_argument("--metric", default=None,
                    help="a key of metrics.jsonl (default: the run's "
                         "progress metric)")
  plot.set_defaults(func=_plot)

  demo = sub.add_parser(
      "demo", help=f"the main job: {names.replace(', ', ' and ')} on "
                   f"CartPole-v1, 8 seeds each; then RLHF at a small size",
      formatter_class=fmt)
  demo.add_argument("--seeds", type=int, default=8,
                    help="seeds per learner, in one vmap")
  demo.add_argument("--total-timesteps", type=int, default=None,
                    help="env steps per seed (default: each learner's "
                         "CartPole-v1 preset, about 100,000)")
  demo.add_argument("--out", default="runs/demo", metavar="DIR",
                    help="where the runs and the figure go")
  demo.add_argument("--overwrite", action="store_true",
                    help="replace an earlier demo in --out")
  demo.add_argument("--no-progress", action="store_true",
                    help="no progress bar")
  demo.add_argument("--rlhf-iterations", type=int, default=40, metavar="INT",
                    help="iterations of PPO and of TRPO on the language model "
                         "in the small RLHF run (0: no RLHF part)")
  demo.set_defaults(func=_demo)

  _add_rlhf_parser(sub)
  return parser


def _valid_options(parser: argparse.ArgumentParser, args) -> list[str]:
  """Every ``--option`` of the (sub)command the user chose."""
  chosen = parser
  for dest in ("command", "rlhf_command"):
    name = getattr(args, dest, None)
    for action in chosen._actions:  # argparse keeps subparsers here
      if isinstance(action, argparse._SubParsersAction) and name:
        chosen = action.choices[name]
  return [s for a in chosen._actions for s in a.option_strings
          if s.startswith("--")]


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args, unknown = parser.parse_known_args(argv)
  command = " ".join(filter(None, (args.command,
                                   getattr(args, "rlhf_command", None))))
  if unknown:
    print(f"jaxrl-align {command}: error: "
          f"{options.unknown_message(unknown, _valid_options(parser, args))}",
          file=sys.stderr)
    return 2
  for name in ("seeds", "episodes", "total_timesteps"):
    value = getattr(args, name, None)
    if value is not None and value < 1:
      print(f"jaxrl-align {command}: error: {options.flag(name)} must be "
            f">= 1, got {value}.", file=sys.stderr)
      return 2
  try:
    return args.func(args)
  except ValueError as e:  # bad configs and run errors
    message = " ".join(str(e).split())
    print(f"jaxrl-align {command}: error: {message}", file=sys.stderr)
    return 2
  except OSError as e:  # a path that cannot be read or written
    print(f"jaxrl-align {command}: error: {e.strerror or e}"
          + (f": {e.filename!r}" if e.filename else "") + ".", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"\njaxrl-align {command}: interrupted; the last checkpoint is "
          f"intact (--resume continues from it).", file=sys.stderr)
    return 130


__all__ = ["build_parser", "config_fields", "main"]
