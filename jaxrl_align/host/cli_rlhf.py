"""``jaxrl-align rlhf ...``: the commands of
:data:`jaxrl_align.host.rlhf.COMMANDS`, their inputs (other runs'
directories) and option groups."""

from __future__ import annotations

import argparse
import os

from jaxrl_align.host import options
from jaxrl_align.host import runner


def _rlhf(args: argparse.Namespace) -> int:
  from jaxrl_align.host import rlhf

  command = rlhf.COMMANDS[args.rlhf_command]
  resume = getattr(args, "resume", None)
  inputs = {name: getattr(args, name) for name, _ in command.inputs}
  given_with_resume = [options.flag(n) for n, v in (
      ("out", args.out), ("overwrite", args.overwrite), *inputs.items())
      if v not in (None, False)]
  if resume and given_with_resume:
    raise runner.RunError(f"--resume continues the run where it is, with the "
                          f"inputs it was made from: it takes no "
                          f"{', '.join(given_with_resume)}.")
  out = resume or args.out
  if out is None:
    raise runner.RunError("--out RUN_DIR is required"
                          + (" (or --resume RUN_DIR)." if command.resumable
                             else "."))
  missing = [options.flag(n) for n, v in inputs.items()
             if v is None and n not in command.optional]
  if missing and not resume:
    raise runner.RunError(f"{', '.join(missing)} RUN_DIR is required.")
  for name, path in inputs.items():
    if path is not None and _overlap(out, path):
      raise runner.RunError(f"--out {out!r} and {options.flag(name)} "
                            f"{path!r} overlap: a run never writes into "
                            f"its inputs.")
  options.require_extra(command.needs, "rlhf",
                        f"jaxrl-align rlhf {args.rlhf_command}")
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


def add_parser(sub) -> None:
  """The ``rlhf`` subcommand and its commands."""
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
                   type=options.text("a run directory"),
                   help="run directory to create")
    if command.resumable:
      p.add_argument("--resume", default=None, metavar="RUN_DIR",
                     type=options.text("a run directory"),
                     help="continue this run from its newest checkpoint")
      p.add_argument("--tensorboard", action="store_true",
                     help="also write TensorBoard events")
    for input_name, input_help in command.inputs:
      p.add_argument(options.flag(input_name), default=None,
                     metavar=f"{input_name.upper()}_RUN", help=input_help,
                     type=options.text("a run directory"))
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar")
    for title, cls, names in command.groups:
      options.add_options(p.add_argument_group(title), cls, names)
    p.set_defaults(func=_rlhf)
