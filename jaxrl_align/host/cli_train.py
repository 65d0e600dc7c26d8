"""``jaxrl-align train``: every environment learner of
:data:`jaxrl_align.agents.LEARNERS` and every field of its config as an
option (``--field-name VALUE``, with its docstring and default in
``--help``); the run is :mod:`.runner`'s."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jaxrl_align import agents
from jaxrl_align import envs
from jaxrl_align.host import distributed
from jaxrl_align.host import files
from jaxrl_align.host import options
from jaxrl_align.host import runner
from jaxrl_align.host import settings as settings_lib
from jaxrl_align.host import views

ENV_LEARNERS = agents.LEARNERS
RUNNER_OPTIONS = {  # each an integer >= 1 (`seed`: >= 0)
    "seeds": "seeds trained in one vmap (default 1)",
    "seed": "base seed (default 0)",
    "chunk": "updates per jitted call; divides the number of updates "
             "(default: about 20 calls per run)",
    "checkpoint_every": "checkpoint interval in updates (default: about 10 "
                        "per run)",
    "keep": "checkpoints kept (default 3)",
    "eval_episodes": "final evaluation episodes per seed (default 16)",
    "devices": "devices to spread the run over (default: as many as the "
               "seeds divide over, 1 for one seed; a task stepped on the "
               "host: one of each process, see --processes; on CPU the "
               "command makes one device per core unless XLA_FLAGS sets "
               "--xla_force_host_platform_device_count)"}


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
                        defaults={k: views.VIEWS[k].defaults for k in key},
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
  # no --env: the config's default task
  task = {"env_id": args.env} if args.env is not None else {}
  return learner, learner.config_type(**task, **given), args.out


def _train(args: argparse.Namespace) -> int:
  given = options.given(args, config_fields())
  settings = {k: getattr(args, k) for k in (*RUNNER_OPTIONS, "shard")
              if getattr(args, k, None) is not None}
  if (args.processes or 1) > 1 and distributed.count() != args.processes:
    raise runner.RunError(  # the job `launch` starts has that many
        "--processes starts its own job on this machine: drop "
        "--coordinator, --num-processes and --process-id."
        if args.coordinator is not None else
        f"--processes {args.processes} starts processes: run it as the "
        f"jaxrl-align command (or python -m jaxrl_align).")
  distributed.initialize(args.coordinator, args.num_processes,
                         args.process_id)  # done by `launch`: checked here
  learner, config, out = _train_config(args, given, settings)
  if not args.resume and "devices" not in settings:  # a job: all of them
    # (a task stepped on the host: one of each process, default_devices)
    settings["devices"] = settings_lib.default_devices(
        learner, config, runner.RunnerSettings(**settings))
  finished = bool(args.resume) and files.read_summary(out) is not None
  # built once for the run, and checked (a finished run builds nothing)
  task = None if finished else settings_lib.task_for(config)
  if task is not None and task.jax_native and (args.processes or 1) > 1:
    raise runner.RunError(
        f"{config.env_id} is JAX-native: its seeds spread over this "
        f"machine's devices (--devices), not processes: drop --processes.")
  path = None if finished else (
      "JAX-native: rollouts compiled with the learner" if task.jax_native
      else "a Gymnasium environment stepped on the host (a resumed run "
      "restarts its episodes)")
  primary = distributed.is_primary()  # process 0 speaks for the job
  result = runner.run(learner, config, out,
                      runner.RunnerSettings(**settings), data=task,
                      resume=bool(args.resume), overwrite=args.overwrite,
                      tensorboard=args.tensorboard,
                      progress=not args.no_progress,
                      announce=path and f"{config.env_id}: {path}")
  if result.interrupted and primary:
    print(f"Stopped; checkpoint saved. Resume with: jaxrl-align train "
          f"--resume {out}", file=sys.stderr)
  elif primary:
    print(views.of(learner).report(result.summary))
    print(f"run directory: {out} (metrics.jsonl, summary.json, "
          f"learning_curve.png)")
  return 130 if result.interrupted else 0


def learner_names() -> str:
  """The environment learners, for help texts (``"PPO, TRPO"``)."""
  return ", ".join(k.upper() for k in ENV_LEARNERS)


def add_parser(sub) -> None:
  """The ``train`` subcommand."""
  names = learner_names()
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
                   type=options.text("an environment id"),
                   help="task: " + ", ".join(envs.ENV_IDS) + " (JAX-native; "
                   f"default {default_env}); Gymnasium's MuJoCo tasks "
                   "compiled with MJX (" + ", ".join(envs.MJX_IDS) + "; "
                   "needs mujoco-mjx); or any registered Gymnasium id with "
                   "Box observations and Box or Discrete actions (stepped "
                   "on the host)")
  run.add_argument("--out", default=None, metavar="RUN_DIR",
                   type=options.text("a run directory"),
                   help="run directory to create")
  run.add_argument("--resume", default=None, metavar="RUN_DIR",
                   type=options.text("a run directory"),
                   help="continue this run from its newest readable "
                        "checkpoint")
  run.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out")
  for name, text in RUNNER_OPTIONS.items():
    run.add_argument(options.flag(name), default=None, metavar="INT",
                     type=options.integer(0 if name == "seed" else 1),
                     help=text)
  run.add_argument("--shard", choices=runner.SHARDS, default=None,
                   help="with --devices: spread the seeds (default) or split "
                        "every seed's batch of environments (data parallel)")
  run.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events (needs tensorboardX)")
  run.add_argument("--no-progress", action="store_true",
                   help="no progress bar")
  job = train.add_argument_group(
      "many processes (one run over several hosts, the run directory on a "
      "filesystem they all see; or --processes on this machine; "
      "docs/devices.md)")
  job.add_argument("--processes", type=options.integer(1), default=None,
                   metavar="INT",
                   help="start INT processes of this command on this "
                        "machine, one job: a task stepped on the host "
                        "spreads its seeds over them, one core each")
  distributed.add_options(job)
  _add_train_options(train)
  train.set_defaults(func=_train)
