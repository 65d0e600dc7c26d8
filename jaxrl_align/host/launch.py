"""The ``jaxrl-align`` entry point (also ``python -m jaxrl_align``).

``jaxrl-align train --coordinator HOST:PORT --num-processes N --process-id
I`` must join its job (``jax.distributed.initialize``) before JAX's backend
starts, and importing the command's modules starts it (gymnax builds arrays
when it is imported). So this module, which imports nothing that touches
JAX, reads those three options from the command line and joins first, then
hands the whole command line to :func:`jaxrl_align.host.cli.main`, which
parses and checks everything (the three options included) as usual.
"""

from __future__ import annotations

import signal
import sys

from jaxrl_align.host import distributed
from jaxrl_align.host import errors
from jaxrl_align.host.errors import RunError

JOB_OPTIONS = ("--coordinator", "--num-processes", "--process-id")
MAX_INT = errors.MAX_INT


def job_options(argv: list[str]) -> dict[str, str]:
  """The job options of a ``train`` command line, as given (text);
  empty for other commands."""
  if not argv or argv[0] != "train":
    return {}
  found = {}
  for i, item in enumerate(argv):
    name, eq, value = item.partition("=")
    if name in JOB_OPTIONS:
      if not eq:
        value = argv[i + 1] if i + 1 < len(argv) else ""
      found[name] = value
  return found


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  given = job_options(argv)
  complete = (given.get("--coordinator") == distributed.AUTO
              or len(given) == len(JOB_OPTIONS))
  if complete:  # else the command reports what is missing or malformed
    try:
      numbers = [int(given[k]) if k in given else None
                 for k in JOB_OPTIONS[1:]]
    except ValueError:
      numbers = None  # argparse names the bad value
    if numbers is not None and any(n is not None and not 0 <= n <= MAX_INT
                                   for n in numbers):
      numbers = None  # as well
    if numbers is not None:
      try:
        distributed.initialize(given["--coordinator"], *numbers)
      except RunError as e:
        print(f"jaxrl-align train: error: {e}", file=sys.stderr)
        return 2
  from jaxrl_align.host import cli
  from jaxrl_align.host import monitor

  monitor.QUIET_SECOND_CTRL_C = True  # this process is the command
  code = cli.main(argv)
  if code == 130:  # interrupted: a Ctrl-C while the process ends, quietly
    signal.signal(signal.SIGINT, monitor.stop_at_once)
  return code


__all__ = ["main"]
