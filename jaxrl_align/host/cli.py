"""The ``jaxrl-align`` command (also ``python -m jaxrl_align``; entered
through :mod:`.launch`, which joins a job of several processes first).

Host side: argument parsing and printing, nothing else. The commands and
their options come from the registries: ``train`` (:mod:`.cli_train`)
offers every environment learner of :data:`jaxrl_align.agents.LEARNERS` and
every field of its config (``--field-name VALUE``, with its docstring and
default in ``--help``); ``rlhf`` (:mod:`.cli_rlhf`) offers the commands of
:data:`jaxrl_align.host.rlhf.COMMANDS`; ``eval``, ``plot`` and ``demo`` are
in :mod:`.cli_runs`. The work is done by :mod:`.runner`,
:mod:`.evaluation`, :mod:`.plotting` and :mod:`.rlhf`.
"""

from __future__ import annotations

import argparse
import signal
import sys

from jaxrl_align import compiler
from jaxrl_align.host import cli_rlhf
from jaxrl_align.host import cli_runs
from jaxrl_align.host import cli_train
from jaxrl_align.host import errors
from jaxrl_align.host import monitor
from jaxrl_align.host import options

config_fields = cli_train.config_fields


class _Parser(argparse.ArgumentParser):
  """argparse, with its errors as one line (no usage dump)."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}.\n")


def build_parser() -> argparse.ArgumentParser:
  names = cli_train.learner_names()
  parser = _Parser(
      prog="jaxrl-align", allow_abbrev=False,
      description=f"Policy-gradient RL ({names}) and RLHF as pure, jitted "
                  f"JAX functions: train, evaluate, plot.")
  sub = parser.add_subparsers(dest="command", required=True)
  cli_train.add_parser(sub)
  cli_runs.add_parsers(sub, names)
  cli_rlhf.add_parser(sub)
  return parser


def _chosen(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
  """The parser of the (sub)command the user chose."""
  chosen = parser
  for dest in ("command", "rlhf_command"):
    name = getattr(args, dest, None)
    for action in chosen._actions:  # argparse keeps subparsers here
      if isinstance(action, argparse._SubParsersAction) and name:
        chosen = action.choices[name]
  return chosen


def _valid_options(parser: argparse.ArgumentParser, args) -> list[str]:
  """Every ``--option`` of the (sub)command the user chose."""
  return [s for a in _chosen(parser, args)._actions for s in a.option_strings
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
  value = getattr(args, "total_timesteps", None)
  refusal = options.out_of_range(_chosen(parser, args)._actions, args) or (
      value is not None and value < 1
      and f"--total-timesteps must be >= 1, got {value}.")
  if refusal:  # before anything is read, built or written
    print(f"jaxrl-align {command}: error: {refusal}", file=sys.stderr)
    return 2
  compiler.unroll_threefry_on_cpu()  # the same bits, fewer kernels on CPU
  try:
    return args.func(args)
  except ValueError as e:  # bad configs and run errors
    message = " ".join(str(e).split())
    if not isinstance(e, errors.RunFileError):  # a value the user typed
      message = options.as_flags(message, _valid_options(parser, args))
    print(f"jaxrl-align {command}: error: {message}", file=sys.stderr)
    return 2
  except OSError as e:  # a path that cannot be read or written
    print(f"jaxrl-align {command}: error: {e.strerror or e}"
          + (f": {e.filename!r}" if e.filename else "") + ".", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    if monitor.QUIET_SECOND_CTRL_C:  # the command: another one ends it
      signal.signal(signal.SIGINT, monitor.stop_at_once)
    print(f"\njaxrl-align {command}: interrupted; the last checkpoint is "
          f"intact (--resume continues from it).", file=sys.stderr)
    return 130


__all__ = ["build_parser", "config_fields", "main"]
