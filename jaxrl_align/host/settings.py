"""How a run is executed, not what is learned: the runner's settings, the
checks that refuse what the learner, the machine or the job cannot take
(before anything is compiled), and the device mesh the settings describe."""

from __future__ import annotations

import dataclasses
import math

import gymnasium
import jax

from jaxrl_align import parallel
from jaxrl_align.agents import tasks
from jaxrl_align.host import distributed
from jaxrl_align.host import stepping
from jaxrl_align.host import errors
from jaxrl_align.host.errors import RunError
from jaxrl_align.learner import Learner


@dataclasses.dataclass(frozen=True)
class RunnerSettings:
  """How a run is executed (not what is learned).

  Attributes:
    seeds: runs trained in one ``vmap`` (seed ``i`` uses key ``split(key(seed),
      seeds)[i]``).
    seed: base seed.
    chunk: updates per jitted call (divides the number of updates, and the
      learner's assessment interval, so one program serves every chunk).
    checkpoint_every: save a checkpoint once this many updates have passed
      since the last one (and always at the end).
    keep: checkpoints kept.
    eval_episodes: episodes per seed in the final evaluation.
    devices: devices the run is spread over (:mod:`jaxrl_align.parallel`);
      on CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
      makes N (the command does, one per core: :mod:`.launch`). In a job
      of several processes (:mod:`.distributed`), every process's devices.
      The command's default is :func:`default_devices`.
    shard: what is spread over them: ``"seeds"`` (each device trains
      ``seeds / devices`` of the seeds) or ``"data"`` (every seed's batch
      is split over the devices, and the compiler reduces across them).
  """
  seeds: int = 1
  seed: int = 0
  chunk: int = 0
  checkpoint_every: int = 0
  keep: int = 3
  eval_episodes: int = 16
  devices: int = 1
  shard: str = "seeds"


SHARDS = ("seeds", "data")
MAX_INT = errors.MAX_INT  # the command line's bound, for Python callers too
BATCH_FIELDS = ("num_envs", "batch_size")  # what `shard="data"` splits


def device_mesh(settings: RunnerSettings) -> jax.sharding.Mesh:
  """The mesh of a run's settings (one device: a 1 x 1 mesh). A run over
  as many devices as the job has processes, when they have more (a task
  stepped on the host, :func:`check_devices`), takes the first device of
  each process, in process order."""
  if settings.shard == "data":
    return parallel.mesh(data=settings.devices)
  n = distributed.count()
  if n > 1 and settings.devices == n < distributed.devices():
    return parallel.mesh(seeds=n, devices=one_device_per_process())
  return parallel.mesh(seeds=settings.devices)


def one_device_per_process() -> list:
  """The first device of each process of the job, in process order."""
  first: dict[int, jax.Device] = {}
  for d in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
    first.setdefault(d.process_index, d)
  return [first[p] for p in sorted(first)]


def default_chunk(num_updates: int, target_chunks: int = 20,
                  every: int | None = None) -> int:
  """The largest divisor of ``num_updates`` (and of ``every``, when given)
  that is at most ``num_updates / target_chunks`` (at least 1)."""
  limit = max(1, num_updates // target_chunks)
  common = math.gcd(num_updates, every) if every else num_updates
  divisors = {d for i in range(1, math.isqrt(common) + 1) if common % i == 0
              for d in (i, common // i)}  # in O(sqrt) steps, for any count
  return max(d for d in divisors if d <= limit)


def _check_integers(settings: RunnerSettings, names, low: int) -> None:
  for name in names:
    value = getattr(settings, name)
    if (not isinstance(value, int) or isinstance(value, bool)
        or not low <= value <= MAX_INT):
      raise RunError(f"`{name}` must be an integer in [{low}, {MAX_INT}], "
                     f"got {value!r}.")


def check_resolved(settings: RunnerSettings) -> None:
  """Refuses resolved settings (a run's record) that are not every field
  as :func:`resolve_settings` leaves it."""
  _check_integers(settings, ("seeds", "chunk", "checkpoint_every", "keep",
                             "eval_episodes", "devices"), 1)
  _check_integers(settings, ("seed",), 0)
  if settings.shard not in SHARDS:
    raise RunError(f"`shard` must be one of {', '.join(SHARDS)}, got "
                   f"{settings.shard!r}.")


def resolve_settings(learner: Learner, config,
                     settings: RunnerSettings) -> RunnerSettings:
  """Fills ``chunk`` and ``checkpoint_every`` and validates every field."""
  n = learner.num_updates(config)
  _check_integers(settings, ("seeds", "keep", "eval_episodes"), 1)
  _check_integers(settings, ("seed",), 0)
  every = learner.assess_every(config) if learner.assess else None
  chunk = settings.chunk or default_chunk(n, every=every)
  if not isinstance(chunk, int) or chunk < 1 or n % chunk:
    raise RunError(f"`chunk` must divide the number of updates ({n}), got "
                   f"{chunk!r}.")
  if every and every % chunk:
    raise RunError(f"`chunk` must divide the assessment interval ({every} "
                   f"updates), got {chunk}.")
  check_devices(learner, config, settings)
  every_ckpt = settings.checkpoint_every or chunk * max(1, n // (10 * chunk))
  if not isinstance(every_ckpt, int) or every_ckpt < 1:
    raise RunError(f"`checkpoint_every` must be an integer >= 1, got "
                   f"{every_ckpt!r}.")
  return dataclasses.replace(settings, chunk=chunk,
                             checkpoint_every=every_ckpt)


def check_devices(learner: Learner, config, settings: RunnerSettings):
  """Refuses a device count the machine, the seeds or the batch cannot
  take (before anything is compiled)."""
  d = settings.devices
  if not isinstance(d, int) or isinstance(d, bool) or d < 1:
    raise RunError(f"`devices` must be an integer >= 1, got {d!r}.")
  if settings.shard not in SHARDS:
    raise RunError(f"`shard` must be one of {', '.join(SHARDS)}, got "
                   f"{settings.shard!r}.")
  processes = distributed.count()
  if stepping.host_stepped(learner, config):
    _check_host_stepped(learner, config, settings, processes)
    return
  if d == 1:
    return
  have = len(jax.devices())
  if processes > 1 and d != have:
    raise RunError(f"--devices {d}: a run over {processes} "
                   f"processes spans all their devices: --devices {have}.")
  if d > have:
    raise RunError(
        f"--devices {d}: there are {have} (on CPU, XLA_FLAGS="
        f"--xla_force_host_platform_device_count={d} makes {d}).")
  if settings.shard == "seeds" and settings.seeds % d:
    raise RunError(f"--seeds {settings.seeds} do not divide over --devices "
                   f"{d}: use a multiple of {d} seeds, or --shard data.")
  if settings.shard == "data":
    for name in BATCH_FIELDS:
      size = getattr(config, name, None)
      if isinstance(size, int) and size % d:
        raise RunError(f"--{name.replace('_', '-')} {size} does not divide "
                       f"over --devices {d}.")


def _check_host_stepped(learner, config, settings, processes) -> None:
  """A task stepped on the host runs on one device of each process: its
  seeds spread over the processes (one Python loop each)."""
  name = getattr(config, "env_id", learner.name)
  if settings.shard == "data" and processes > 1:
    raise RunError(f"{name} steps its environments on the host: over "
                   f"{processes} processes it spreads its seeds, not its "
                   f"batch: drop --shard data.")
  d = settings.devices
  if d != processes:
    raise RunError(
        f"{name} steps its environments on the host, on one device of each "
        f"process: --devices {d} needs {d} processes (--processes {d}, "
        f"which spreads the seeds over them); this job has {processes}.")
  if settings.seeds % processes:
    raise RunError(f"--seeds {settings.seeds} do not divide over the job's "
                   f"{processes} processes (each steps its share of the "
                   f"seeds): use a multiple of {processes}.")


def spread(size: int, have: int | None = None) -> int:
  """The most devices ``size`` (seeds, or a batch) divides over: its
  largest divisor that is at most ``have`` (default: this process's
  devices; the command makes one per core on CPU, :mod:`.launch`)."""
  if not isinstance(size, int) or isinstance(size, bool) or size < 1:
    return 1  # the run's own checks name the bad value
  have = len(jax.local_devices()) if have is None else have
  return max(d for d in range(1, min(size, have) + 1) if size % d == 0)


def default_devices(learner: Learner, config, settings: RunnerSettings,
                    have: int | None = None) -> int:
  """The devices ``jaxrl-align train`` spreads a run over when ``--devices``
  is not given: the seeds over as many devices as they divide over
  (:func:`spread`); one device for a single seed (splitting one seed's
  environments cost 5x on the classic-control tasks here: docs/devices.md)
  unless ``--shard data`` asks for it (then as many as the batch divides
  over). ``have``: the devices there are (default: this process's). In a
  job of several processes, every device of the job; a task stepped on
  the host, one device of each process (one in a process of its own)."""
  if stepping.host_stepped(learner, config):
    return distributed.count()
  if distributed.count() > 1:
    return distributed.devices()
  if settings.shard == "data":
    sizes = [getattr(config, n) for n in BATCH_FIELDS
             if isinstance(getattr(config, n, None), int)]
    return spread(math.gcd(*sizes), have) if sizes else 1
  return spread(settings.seeds, have)


def task_for(config):
  """``tasks.for_config(config)``, or a RunError naming the id when its
  environment cannot be made here: a registered Gymnasium id whose package
  is missing (an ``ImportError``), or that Gymnasium refuses to make."""
  try:
    return tasks.for_config(config)
  except ImportError as e:
    missing = f" (missing: {e.name})" if e.name else ""
    raise RunError(f"{config.env_id}: its environment needs a package that "
                   f"is not installed{missing}: "
                   f"{_first_line(e)}") from None
  except gymnasium.error.Error as e:
    raise RunError(f"{config.env_id}: Gymnasium cannot make it: "
                   f"{_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
  return (str(e).strip().splitlines() or [type(e).__name__])[0]
