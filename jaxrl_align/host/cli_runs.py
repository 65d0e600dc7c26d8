"""``jaxrl-align eval``, ``plot`` and ``demo``: what the command does with
finished runs (:mod:`.evaluation`, :mod:`.plotting`) and the main job
(:mod:`.demo`)."""

from __future__ import annotations

import argparse
import contextlib
import os

from jaxrl_align.host import files
from jaxrl_align.host import options
from jaxrl_align.host import runner


def _eval(args: argparse.Namespace) -> int:
  if args.video:
    options.require_extra(("pygame",), "video", "--video")
  elif args.seed_index:
    raise runner.RunError("--seed-index chooses the seed a --video shows; "
                          "give --video too.")
  _, _, settings = runner.load_config(args.run_dir)  # checked before it runs
  if args.seed_index >= settings.seeds:
    raise runner.RunError(f"--seed-index {args.seed_index}: the run in "
                          f"{args.run_dir!r} has {settings.seeds} seed(s), "
                          f"0 to {settings.seeds - 1}.")
  # The video is written into the run directory: as its one writer.
  with files.lock(args.run_dir) if args.video else contextlib.nullcontext():
    return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
  import numpy as np

  from jaxrl_align.host import evaluation

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
    runner.load_config(run_dir)  # each is a run, before anything is drawn
  if not out.endswith(".png"):
    raise runner.RunError(f"--out {out!r}: the figure is a PNG file; name it "
                          f"*.png.")
  if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
    raise runner.RunError(f"--out {out!r}: no directory "
                          f"{os.path.dirname(out)!r}.")
  if os.path.exists(out) and not _is_png(out):
    raise runner.RunError(f"--out {out!r} exists and is not a PNG image; "
                          f"refusing to replace it.")
  into = os.path.dirname(os.path.abspath(out))
  held = contextlib.nullcontext()
  if files.is_run_dir(into):  # a figure written into a run directory: as
    try:  # its one writer
      held = files.lock(into)
    except runner.RunError as e:
      raise runner.RunError(f"{e} Or draw the figure elsewhere: --out "
                            f"FILE.png.") from None
  with held:
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

  return demo.main(args.out, args.seeds, args.total_timesteps,
                   progress=not args.no_progress, overwrite=args.overwrite,
                   rlhf_iterations=args.rlhf_iterations)


def add_parsers(sub, names: str) -> None:
  """The ``eval``, ``plot`` and ``demo`` subcommands (``names``: the
  environment learners, for the demo's help)."""
  fmt = argparse.ArgumentDefaultsHelpFormatter
  evaluate = sub.add_parser("eval", help="evaluate a run's newest checkpoint",
                            formatter_class=fmt)
  evaluate.add_argument("run_dir", metavar="RUN_DIR",
                        type=options.text("a run directory"))
  evaluate.add_argument("--episodes", type=options.integer(1), default=16,
                        help="deterministic episodes per seed")
  evaluate.add_argument("--video", action="store_true",
                        help="render one episode with Gymnasium to a GIF")
  evaluate.add_argument("--seed-index", type=options.integer(0), default=0,
                        help="which seed's policy the video shows")
  evaluate.set_defaults(func=_eval)

  plot = sub.add_parser("plot", help="learning curves of one or more runs",
                        formatter_class=fmt)
  plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                    type=options.text("a run directory"))
  plot.add_argument("--out", default=None, metavar="PNG",
                    type=options.text("a PNG file"),
                    help="figure path (default: RUN_DIR/learning_curve.png "
                         "of the first run)")
  plot.add_argument("--metric", default=None, type=options.text("a metric"),
                    help="a key of metrics.jsonl (default: the run's "
                         "progress metric)")
  plot.set_defaults(func=_plot)

  demo = sub.add_parser(
      "demo", help=f"the main job: {names.replace(', ', ' and ')} on "
                   f"CartPole-v1, 8 seeds each; then RLHF at a small size",
      formatter_class=fmt)
  demo.add_argument("--seeds", type=options.integer(1), default=8,
                    help="seeds per learner, in one vmap")
  demo.add_argument("--total-timesteps", type=options.integer(1),
                    default=None,
                    help="env steps per seed (default: each learner's "
                         "CartPole-v1 preset, about 100,000)")
  demo.add_argument("--out", default="runs/demo", metavar="DIR",
                    type=options.text("a directory"),
                    help="where the runs and the figure go")
  demo.add_argument("--overwrite", action="store_true",
                    help="replace an earlier demo in --out")
  demo.add_argument("--no-progress", action="store_true",
                    help="no progress bar")
  demo.add_argument("--rlhf-iterations", type=options.integer(0), default=40,
                    metavar="INT",
                    help="iterations of PPO and of TRPO on the language model "
                         "in the small RLHF run (0: no RLHF part)")
  demo.set_defaults(func=_demo)
