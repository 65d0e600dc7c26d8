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

``jaxrl-align train --processes N`` makes that job on this machine: this
process starts ``N - 1`` copies of the command as processes ``1..N-1`` of
a job on 127.0.0.1 (:func:`start_local_job`) and joins it as process 0,
which speaks for the job; the copies' output is dropped unless one of
them ends alone with an error. A task stepped on the host then spreads
its seeds over the processes, one Python loop per core.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

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


def local_processes(argv: list[str]) -> int | None:
  """The ``--processes N`` of a ``train`` command line when it asks this
  process to start a job on this machine: N >= 2 and no job option
  given; else None (the command checks what it was given)."""
  if (not argv or argv[0] != "train" or job_options(argv)
      or {"-h", "--help"} & set(argv)):
    return None
  for i, item in enumerate(argv):
    name, eq, value = item.partition("=")
    if name == "--processes":
      if not eq:
        value = argv[i + 1] if i + 1 < len(argv) else ""
      try:
        n = int(value)
      except ValueError:
        return None  # argparse names the bad value
      return n if 2 <= n <= MAX_INT else None
  return None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class LocalJob:
  """Processes ``1..n-1`` of a job on 127.0.0.1, started by process 0
  (:func:`start_local_job`). A watchdog thread ends process 0 when one of
  them fails alone (process 0 would wait for it in a collective, or for
  minutes while joining): the failure's last line, exit code 1."""

  GRACE_S = 10.0  # a failure every process shares ends them all by then

  def __init__(self, port: int, n: int):
    self.port, self.n = port, n
    self.procs: list[subprocess.Popen] = []
    self.logs: list[Any] = []
    self._done = threading.Event()

  def job_argv(self, index: int) -> list[str]:
    return ["--coordinator", f"127.0.0.1:{self.port}", "--num-processes",
            str(self.n), "--process-id", str(index)]

  def _last_line(self, i: int) -> str:
    log = self.logs[i]
    log.seek(0)
    lines = log.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"exit code {self.procs[i].returncode}"

  def watch(self) -> None:
    """Starts the watchdog (a daemon thread)."""
    def run():
      failed_at: dict[int, float] = {}
      while not self._done.wait(0.5):
        for i, proc in enumerate(self.procs):
          if proc.poll() and i not in failed_at:
            failed_at[i] = time.monotonic()
        late = [i for i, t in failed_at.items()
                if time.monotonic() - t > self.GRACE_S]
        if late and not self._done.is_set():
          print(f"jaxrl-align train: error: process {late[0] + 1} of the "
                f"job failed: {self._last_line(late[0])}", file=sys.stderr,
                flush=True)
          for proc in self.procs:
            proc.kill()
          os._exit(1)

    threading.Thread(target=run, daemon=True).start()

  def kill(self) -> None:
    """Ends the other processes at once (process 0 is failing: they would
    wait for it until JAX's coordination gave up on it)."""
    self._done.set()
    for proc in self.procs:
      proc.kill()
    for proc, log in zip(self.procs, self.logs):
      proc.wait()
      log.close()

  def finish(self, code: int) -> int:
    """Waits for the other processes; process 0's exit code, or, when it
    succeeded and another did not, 1 with that process's last line."""
    self._done.set()
    for i, proc in enumerate(self.procs):
      try:  # when process 0 failed, the others may wait for it in vain
        theirs = proc.wait(timeout=None if code == 0 else 30)
      except subprocess.TimeoutExpired:
        proc.kill()
        theirs = proc.wait()
      if theirs and code == 0:
        print(f"jaxrl-align train: error: process {i + 1} of the job "
              f"failed: {self._last_line(i)}", file=sys.stderr)
        code = 1
      self.logs[i].close()
    return code


def start_local_job(argv: list[str], n: int) -> tuple[LocalJob, list[str]]:
  """Starts processes ``1..n-1`` of a job on 127.0.0.1, each this command
  line without ``--processes`` and with its job options; returns the job
  and process 0's command line."""
  rest, skip = [], False
  for item in argv:
    if skip:
      skip = False
    elif item == "--processes":
      skip = True
    elif not item.startswith("--processes="):
      rest.append(item)
  job = LocalJob(_free_port(), n)
  for i in range(1, n):
    log = tempfile.TemporaryFile()
    job.logs.append(log)
    job.procs.append(subprocess.Popen(
        [sys.executable, "-m", "jaxrl_align", *rest, *job.job_argv(i),
         "--no-progress", "--processes", str(n)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log))
  job.watch()
  return job, [*rest, *job.job_argv(0), "--processes", str(n)]


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
  local, n = None, local_processes(argv)
  if n is not None:  # this machine's job: start processes 1..n-1
    local, argv = start_local_job(argv, n)
  if local is None:
    return _main(argv)
  try:
    code = _main(argv)
  except BaseException:  # a defect's traceback: the copies end with it
    local.kill()
    raise
  import jax  # started by now

  if jax.distributed.is_initialized():  # its barrier meets the others'
    jax.distributed.shutdown()  # exits, before waiting for them
  return local.finish(code)


def _main(argv: list[str]) -> int:
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
