"""The ``jaxrl-align`` entry point (also ``python -m jaxrl_align``).

``jaxrl-align train --coordinator HOST:PORT --num-processes N --process-id
I`` must join its job (``jax.distributed.initialize``) before JAX's backend
starts, and importing the command's modules starts it (gymnax builds arrays
when it is imported). So this module, which imports nothing that touches
JAX, reads those three options from the command line and joins first, then
hands the whole command line to :func:`jaxrl_align.host.cli.main`, which
parses and checks everything (the three options included) as usual.

Before that, on a machine's CPU, it makes one JAX device per core
(:func:`one_device_per_core`), which ``--devices`` then spreads a run over;
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set by the user wins.
"""

from __future__ import annotations

import os
import signal
import sys

from jaxrl_align.host import distributed
from jaxrl_align.host import errors
from jaxrl_align.host.errors import RunError

JOB_OPTIONS = ("--coordinator", "--num-processes", "--process-id")
DEVICE_COUNT = "--xla_force_host_platform_device_count"
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


def cores() -> int:
  """The cores this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):  # not on Linux
    return os.cpu_count() or 1


def one_device_per_core(environ=os.environ) -> None:
  """Makes JAX's CPU platform one device per core (``XLA_FLAGS``), unless
  the flags already set the count; to be called before JAX starts. The
  commands then spread seeds (and the RLHF commands their batch) over
  them (``--devices``). It changes no other platform's devices, and a
  program on one of them runs as fast as on the only one (docs/devices.md).
  """
  flags = environ.get("XLA_FLAGS", "")
  if DEVICE_COUNT in flags:
    return
  n = cores()
  if n > 1:
    environ["XLA_FLAGS"] = f"{flags} {DEVICE_COUNT}={n}".strip()


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  one_device_per_core()
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


__all__ = ["cores", "main", "one_device_per_core"]
