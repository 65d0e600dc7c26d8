"""One run over several processes (hosts): the ``jax.distributed`` wiring of
the command and what the runner's host side does with more than one process.

Every process runs the same programs over a mesh of every process's devices
(:mod:`jaxrl_align.parallel`) and steps only the environments on its own
devices. The host side keeps them in step:

- process 0 alone writes the run directory's files (``config.json``,
  ``metrics.jsonl``, ``summary.json``, the curve) and shows progress; when
  it cannot (the directory is taken, a disk error), every process raises
  the same one-line error;
- every process takes part in each collective: gathering the metrics, the
  assessments, the evaluation and the final states onto every host
  (``process_allgather``), and saving or restoring checkpoints (orbax writes
  each process's shards);
- a Ctrl-C (SIGINT) on any process stops every process after the same
  chunk, with one checkpoint.

The run directory must lie on a filesystem every process sees (the
checkpoints are written into it by all of them). With one process every
function here is the single-process behaviour, and costs nothing.
"""

from __future__ import annotations

import re
from typing import Any, Callable, TypeVar

import jax
import numpy as np

from jaxrl_align.host import options
from jaxrl_align.host.errors import RunError

T = TypeVar("T")
AUTO = "auto"  # --coordinator auto: SLURM, Open MPI or Cloud TPU say who is who
_MESSAGE_BYTES = 2048  # an error message broadcast from process 0


def initialize(coordinator: str | None, num_processes: int | None,
               process_id: int | None) -> None:
  """Joins this process to a job of ``num_processes`` (``jax.distributed``).

  Nothing when all three are None. ``coordinator="auto"`` (the other two
  None) lets JAX find them on a cluster (SLURM, Open MPI, Cloud TPU). Call
  it before anything touches JAX's devices; a second call with the job
  already joined does nothing.

  Raises:
    RunError: options that do not go together, or a job that could not be
      joined (the message says which).
  """
  if coordinator is None and num_processes is None and process_id is None:
    return
  if coordinator == AUTO:
    if num_processes is not None or process_id is not None:
      raise RunError("--coordinator auto finds the processes on its own: "
                     "drop --num-processes and --process-id.")
    kwargs = {}
  else:
    if coordinator is None or num_processes is None or process_id is None:
      raise RunError("--coordinator HOST:PORT, --num-processes and "
                     "--process-id go together (or --coordinator auto on "
                     "SLURM, Open MPI or Cloud TPU).")
    if not re.fullmatch(r"[^\s:]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}",
                        coordinator):
      raise RunError(f"--coordinator {coordinator!r}: expected HOST:PORT "
                     f"(process 0's address), or auto.")
    if num_processes < 1:
      raise RunError(f"--num-processes must be >= 1, got {num_processes}.")
    if not 0 <= process_id < num_processes:
      raise RunError(f"--process-id must be in 0..{num_processes - 1}, got "
                     f"{process_id}.")
    kwargs = dict(coordinator_address=coordinator,
                  num_processes=num_processes, process_id=process_id)
  if jax.distributed.is_initialized():
    return
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError) as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise RunError(f"could not join the job ({first}); start every process "
                   f"with the same --coordinator and --num-processes, each "
                   f"with its own --process-id, before anything else uses "
                   f"JAX.") from None


def add_options(group) -> None:
  """The job options of a command (``--coordinator``, ``--num-processes``,
  ``--process-id``) on an argparse parser or group."""
  group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                     type=options.text("HOST:PORT or auto"),
                     help="process 0's address, the same for every process; "
                          "'auto' on SLURM, Open MPI or Cloud TPU")
  group.add_argument("--num-processes", type=options.integer(1),
                     default=None, metavar="INT", help="processes in the job")
  group.add_argument("--process-id", type=options.integer(0), default=None,
                     metavar="INT",
                     help="this process's index, 0 to --num-processes - 1")


def devices() -> int:
  """Every device of every process in the job."""
  return len(jax.devices())


def count() -> int:
  """The processes of the job (1 without ``jax.distributed``)."""
  return jax.process_count()


def is_primary() -> bool:
  """True on the process that writes the run directory's files."""
  return jax.process_index() == 0


def _is_key(x) -> bool:
  return (isinstance(x, jax.Array)
          and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key))


def to_host(tree) -> Any:
  """Every leaf as a NumPy array of its whole (global) value, on every
  process; PRNG keys as their key data. A collective with several
  processes: all of them must call it."""
  tree = jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x,
                      tree)
  if count() == 1:
    return jax.tree.map(np.asarray, jax.device_get(tree))
  from jax.experimental import multihost_utils

  def one(x):  # a leaf this process holds whole is already its value
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))

  return jax.tree.map(one, tree)


def any_process(flag: bool) -> bool:
  """``flag`` or-ed over the processes (every process gets the same
  answer; all of them must call it)."""
  if count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils

  return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def barrier(name: str) -> None:
  """Waits until every process has reached the barrier ``name``."""
  if count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def on_primary(fn: Callable[..., T], *args, **kwargs) -> T | None:
  """``fn(*args, **kwargs)`` on process 0 only (its value there, None on
  the others), then a barrier. When it raises a :class:`RunError` or an
  ``OSError`` on process 0, every process raises a :class:`RunError` with
  its message (process 0 its own exception), so no process goes on alone."""
  if count() == 1:
    return fn(*args, **kwargs)
  from jax.experimental import multihost_utils

  value, error, message = None, None, ""
  if is_primary():
    try:
      value = fn(*args, **kwargs)
    except (RunError, OSError) as e:
      error = e
      message = (f"{e.strerror}: {e.filename!r}" if isinstance(e, OSError)
                 and e.strerror and e.filename else str(e)) or type(e).__name__
  buffer = np.zeros(_MESSAGE_BYTES, np.uint8)
  text = message.encode()[:_MESSAGE_BYTES]
  buffer[:len(text)] = np.frombuffer(text, np.uint8)
  shared = multihost_utils.broadcast_one_to_all(buffer)
  if error is not None:
    raise error
  if shared.any():
    raise RunError("process 0: " + bytes(shared).rstrip(b"\0").decode(
        errors="replace"))
  return value
