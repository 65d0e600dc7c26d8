"""The runner: any :class:`~jaxrl_align.learner.Learner`, over seeds, into a
run directory, with progress, metrics, checkpoints that resume exactly,
evaluation and a learning curve.

A run trains ``seeds`` copies of one learner in one ``vmap``. The pure
``update`` runs in jitted chunks of ``chunk`` updates (``lax.scan``); between
chunks the host runs the learner's ``assess`` when it is due, writes
metrics, shows progress and saves checkpoints, so the training program is
the same whether a run was interrupted or not: resuming from a checkpoint
gives bit-identical parameters and metrics.

A run directory holds::

    .jaxrl-align-run    marker: the directory is a run (host.files)
    config.json         learner, every config field, runner settings
    metrics.jsonl       one JSON object per update per seed (null: no value)
    checkpoints/<step>  orbax checkpoints (atomic; the last ``keep`` kept)
    summary.json        the learner's summary and the final evaluation
    learning_curve.png  the progress metric against units consumed
    tensorboard/        events, with ``tensorboard=True``
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import sys
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxrl_align import agents
from jaxrl_align import compiler
from jaxrl_align import configs
from jaxrl_align import rlhf
from jaxrl_align.host import checkpoints
from jaxrl_align.host import files
from jaxrl_align.learner import Learner

CHECKPOINTS = "checkpoints"
LEARNERS: dict[str, Learner] = {**agents.LEARNERS, **rlhf.LEARNERS}
RunError = files.RunError
read_run = files.read_run
read_metrics = files.read_metrics


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
  """
  seeds: int = 1
  seed: int = 0
  chunk: int = 0
  checkpoint_every: int = 0
  keep: int = 3
  eval_episodes: int = 16


def learner_of(name: str) -> Learner:
  if name not in LEARNERS:
    raise RunError(f"Unknown algorithm {name!r}; choose from "
                   f"{', '.join(LEARNERS)}.")
  return LEARNERS[name]


def default_chunk(num_updates: int, target_chunks: int = 20,
                  every: int | None = None) -> int:
  """The largest divisor of ``num_updates`` (and of ``every``, when given)
  that is at most ``num_updates / target_chunks`` (at least 1)."""
  limit = max(1, num_updates // target_chunks)
  common = math.gcd(num_updates, every) if every else num_updates
  return max(d for d in range(1, limit + 1) if common % d == 0)


def resolve_settings(learner: Learner, config,
                     settings: RunnerSettings) -> RunnerSettings:
  """Fills ``chunk`` and ``checkpoint_every`` and validates every field."""
  n = learner.num_updates(config)
  for name in ("seeds", "keep", "eval_episodes"):
    value = getattr(settings, name)
    if not isinstance(value, int) or value < 1:
      raise RunError(f"`{name}` must be an integer >= 1, got {value!r}.")
  if not isinstance(settings.seed, int) or settings.seed < 0:
    raise RunError(f"`seed` must be an integer >= 0, got {settings.seed!r}.")
  every = learner.assess_every(config) if learner.assess else None
  chunk = settings.chunk or default_chunk(n, every=every)
  if not isinstance(chunk, int) or chunk < 1 or n % chunk:
    raise RunError(f"`chunk` must divide the number of updates ({n}), got "
                   f"{chunk!r}.")
  if every and every % chunk:
    raise RunError(f"`chunk` must divide the assessment interval ({every} "
                   f"updates), got {chunk}.")
  every_ckpt = settings.checkpoint_every or chunk * max(1, n // (10 * chunk))
  if not isinstance(every_ckpt, int) or every_ckpt < 1:
    raise RunError(f"`checkpoint_every` must be an integer >= 1, got "
                   f"{every_ckpt!r}.")
  return dataclasses.replace(settings, chunk=chunk,
                             checkpoint_every=every_ckpt)


def load_config(run_dir: str, learner: Learner | None = None):
  """``(learner, config, settings)`` of a run directory (the registered
  learner of its name, or ``learner`` if given: it must have that name)."""
  run = files.read_run(run_dir)
  if learner is None:
    learner = learner_of(run["algo"])
  elif learner.name != run["algo"]:
    raise RunError(f"The run in {run_dir!r} is {run['algo']}, not "
                   f"{learner.name}.")
  return (learner, configs.from_dict(learner.config_type, run["config"]),
          RunnerSettings(**run["runner"]))


class RunResult(NamedTuple):
  """What :func:`run` returns (host values).

  Attributes:
    states: final learner states, leading axis = seed.
    evaluation: the final evaluation, leading axis = seed (None when the
      learner has none or the run was interrupted).
    summary: the dict written to ``summary.json``.
    interrupted: True when stopped early (a checkpoint was saved).
  """
  states: Any
  evaluation: Any
  summary: dict[str, Any] | None
  interrupted: bool

  @property
  def eval_returns(self):
    """The evaluation of an environment learner: ``[seeds, episodes]``."""
    return self.evaluation


class _Interrupt:
  """Turns the first Ctrl-C into a flag checked between chunks."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGINT, self._handle)
    except ValueError:  # not the main thread: no handler, no flag
      self._previous = None
    return self

  def _handle(self, signum, frame):
    self.requested = True
    # A second Ctrl-C interrupts at once; the last checkpoint stays intact.
    signal.signal(signal.SIGINT, signal.default_int_handler)

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)


# ---------------------------------------------------------------- programs


@functools.lru_cache(maxsize=None)
def programs(learner: Learner, chunk: int, eval_size: int):
  """``(init, chunk, assess, evaluate)``, jitted and vmapped over seeds.

  Cached per learner, chunk length and evaluation size, so runs that share
  a config's static fields reuse the compiled programs (jit keys them on
  the config's static fields). ``data`` is an argument, shared by seeds.
  """
  options = compiler.compiler_options()

  def _chunk(config, state, data):
    return jax.lax.scan(lambda s, _: learner.update(config, s, data), state,
                        None, length=chunk)

  def jit_vmap(fn, in_axes):
    return jax.jit(jax.vmap(fn, in_axes=in_axes), compiler_options=options)

  assess = evaluate = None
  if learner.assess is not None:
    assess = jit_vmap(learner.assess, (None, 0, None))
  if learner.evaluate is not None:
    evaluate = jit_vmap(lambda c, s, k, d: learner.evaluate(c, s, k, d,
                                                            eval_size),
                        (None, 0, 0, None))
  return (jit_vmap(learner.init, (None, 0, None)),
          jit_vmap(_chunk, (None, 0, None)), assess, evaluate)


def initial_states(learner: Learner, config, settings: RunnerSettings,
                   data=None):
  """The seeds' initial states (also the template a checkpoint restores
  into)."""
  init, _, _, _ = programs(learner, settings.chunk, settings.eval_episodes)
  keys = jax.random.split(jax.random.key(settings.seed), settings.seeds)
  return init(config, keys, data)


# ----------------------------------------------------------------- running


def _resume_config(out: str, learner: Learner, config):
  """The stored run's settings; refuses a change of learner or static
  field, and records (and warns about) a change of hyperparameter."""
  _, stored, settings = load_config(out, learner)
  diff = configs.diff(stored, config)
  static = {k: v for k, v in diff.items() if k in configs.static_fields(config)}
  if static:
    raise RunError(
        "Cannot resume with different static fields (they change the "
        "program):\n" + "\n".join(f"  {k}: {a!r} (stored) -> {b!r}"
                                  for k, (a, b) in static.items()))
  for k, (a, b) in diff.items():
    print(f"warning: resuming with {k} = {b!r} (was {a!r}); the result "
          f"will differ from an uninterrupted run.", file=sys.stderr)
  return settings, diff


def create(learner: Learner, config, out: str,
           settings: RunnerSettings = RunnerSettings(), *,
           overwrite: bool = False,
           record: dict[str, Any] | None = None) -> RunnerSettings:
  """Creates the run directory ``out`` and its ``config.json`` (what
  :func:`run` does first; call it directly to add files of your own before
  the run starts, then :func:`run` with ``resume=True``).

  Returns:
    The resolved runner settings.
  """
  settings = resolve_settings(learner, config, settings)
  files.prepare_run_dir(out, learner.name, overwrite=overwrite,
                        hint="pass --resume to continue that run or "
                             "--overwrite to replace it")
  files.write_json(os.path.join(out, "config.json"), {
      "format": files.FORMAT_VERSION, "algo": learner.name,
      "config": configs.to_dict(config),
      "runner": dataclasses.asdict(settings), "units": learner.units,
      "progress_metric": learner.progress_metric, "jax": jax.__version__,
      **(record or {})})
  return settings


def run(learner: Learner | str, config, out: str,
        settings: RunnerSettings = RunnerSettings(), *, data=None,
        record: dict[str, Any] | None = None, resume: bool = False,
        overwrite: bool = False, tensorboard: bool = False,
        progress: bool = True, stop_after: int | None = None) -> RunResult:
  """Trains, logs, checkpoints and evaluates one run.

  Args:
    learner: a :class:`~jaxrl_align.learner.Learner` or its registry name
      (``"ppo"``, ``"trpo"``, ``"sft"``, ``"rm"``).
    config: its config.
    out: run directory.
    settings: runner settings (seeds, chunk, checkpoints, evaluation).
    data: the learner's data (None for environment learners); to resume,
      pass the same data again.
    record: more JSON values to store in ``config.json`` (where the data
      came from).
    resume: continue the run in ``out`` from its newest readable checkpoint
      (from the start if it has none yet); ``config`` must equal the stored
      one in every static field, and the stored runner settings are used
      (``settings`` and ``record`` are ignored).
    overwrite: replace an existing run directory (see
      :func:`jaxrl_align.host.files.prepare_run_dir`).
    tensorboard: also write TensorBoard events (needs ``tensorboardX``).
    progress: show a progress bar on stderr.
    stop_after: stop (with a checkpoint) once this many updates are done,
      as Ctrl-C would (for tests and for splitting a run across jobs).

  Returns:
    A :class:`RunResult`.
  """
  if isinstance(learner, str):
    learner = learner_of(learner)
  diff = {}
  if resume:
    settings, diff = _resume_config(out, learner, config)
  else:
    settings = create(learner, config, out, settings, overwrite=overwrite,
                      record=record)

  _, chunk_fn, assess_fn, evaluate_fn = programs(
      learner, settings.chunk, settings.eval_episodes)
  states = initial_states(learner, config, settings, data)
  store = checkpoints.Checkpoints(os.path.join(out, CHECKPOINTS),
                                  settings.keep)
  metrics_path = os.path.join(out, "metrics.jsonl")
  done = 0
  if resume:
    if store.steps():  # else it stopped before its first checkpoint
      done, states = store.restore(states)
    kept = [m for m in read_metrics(out) if m["update"] <= done]
    files.atomic_write(metrics_path,
                       "".join(json.dumps(m) + "\n" for m in kept))
    if diff:  # the run's record says which hyperparameters changed, when
      stored_run = read_run(out)
      stored_run["config"] = configs.to_dict(config)
      stored_run.setdefault("changes", []).append(
          {"at_update": done, "changes": {k: list(v) for k, v in diff.items()}})
      files.write_json(os.path.join(out, "config.json"), stored_run)
  writer = _tensorboard_writer(out) if tensorboard else None

  n = learner.num_updates(config)
  every = learner.assess_every(config) if assess_fn else None
  assessed = (sorted(jax.eval_shape(assess_fn, config, states, data)[1])
              if assess_fn else [])
  per_update = learner.units_per_update(config)
  bar = progress_bar(n * per_update, done * per_update, progress,
                     unit=learner.units.rstrip("s").replace("env_", ""))
  last_saved, start, first_chunk_s = done, time.perf_counter(), None
  interrupted = False
  with _Interrupt() as interrupt, open(metrics_path, "a") as metrics_file:
    while done < n:
      t0 = time.perf_counter()
      states, metrics = chunk_fn(config, states, data)
      metrics = jax.tree.map(np.asarray, jax.device_get(metrics))
      done += settings.chunk
      if assess_fn and (done % every == 0 or done == n):
        states, extra = assess_fn(config, states, data)
        for k, v in jax.device_get(extra).items():
          column = np.full(metrics[learner.progress_metric].shape, np.nan)
          column[:, -1] = v
          metrics[k] = column
      for k in assessed:
        metrics.setdefault(k, np.full(
            metrics[learner.progress_metric].shape, np.nan))
      if first_chunk_s is None:
        first_chunk_s = time.perf_counter() - t0
      _write_metrics(metrics_file, metrics, done - settings.chunk, writer,
                     learner.units)
      if bar is not None:
        bar.update(settings.chunk * per_update)
        shown = metrics[learner.progress_metric][:, -1]
        if np.isfinite(shown).any():
          bar.set_postfix({learner.progress_metric.split("_")[-1]:
                           f"{float(np.nanmean(shown)):.3g}"})
      stop = interrupt.requested or (stop_after is not None
                                     and done >= stop_after and done < n)
      if done - last_saved >= settings.checkpoint_every or done == n or stop:
        metrics_file.flush()
        os.fsync(metrics_file.fileno())
        store.save(done, states)
        last_saved = done
      if stop:
        interrupted = True
        break
  if bar is not None:
    bar.close()
  if writer is not None:
    writer.close()
  store.close()
  if interrupted:
    return RunResult(states, None, None, True)

  wall = time.perf_counter() - start
  evaluation = None
  if evaluate_fn is not None:
    eval_keys = jax.random.split(jax.random.key(settings.seed + 1),
                                 settings.seeds)
    evaluation = jax.tree.map(np.asarray, jax.device_get(
        evaluate_fn(config, states, eval_keys, data)))
  last = {}
  for m in read_metrics(out):
    last[m["seed"]] = m
  host_states = jax.device_get(states)
  summary = {"algo": learner.name, "seeds": settings.seeds, "updates": n,
             learner.units: n * per_update,
             **learner.summarize(config, host_states, evaluation,
                                 [last.get(i) for i in range(settings.seeds)]),
             "wall_seconds_this_session": wall,
             "first_chunk_seconds": first_chunk_s}  # with compilation, if any
  files.write_json(os.path.join(out, "summary.json"), summary)
  from jaxrl_align.host import plotting  # matplotlib only when needed

  plotting.plot_runs([out], os.path.join(out, "learning_curve.png"))
  return RunResult(states, evaluation, summary, False)


def _plain(value) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def _write_metrics(f, metrics, done, writer, units: str) -> None:
  """One line per update per seed; metrics are ``[seeds, chunk]`` arrays."""
  seeds, length = next(iter(metrics.values())).shape
  for j in range(length):
    update = done + j + 1
    for i in range(seeds):
      line = {"update": update, "seed": i}
      line.update({k: _plain(v[i, j]) for k, v in metrics.items()})
      f.write(json.dumps(line, allow_nan=False) + "\n")
    if writer is not None:
      step = int(metrics[units][0, j])
      for k, v in metrics.items():
        if np.isfinite(v[:, j]).any():
          writer.add_scalar(f"train/{k}", float(np.nanmean(v[:, j])), step)


def progress_bar(total: int, initial: int, enabled: bool, unit: str = "step"):
  """A tqdm bar on stderr counting ``total`` units from ``initial``, or
  ``None`` when not ``enabled`` (callers skip their updates then)."""
  if not enabled:
    return None
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, unit=unit, unit_scale=True,
              dynamic_ncols=True, file=sys.stderr)


def _tensorboard_writer(out: str):
  try:
    from tensorboardX import SummaryWriter
  except ImportError as e:
    raise RunError("TensorBoard logging needs tensorboardX: "
                   "pip install 'jaxrl_align[tensorboard]'.") from e
  return SummaryWriter(os.path.join(out, "tensorboard"))
