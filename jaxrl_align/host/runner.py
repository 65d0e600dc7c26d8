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

    .jaxrl-align-run    marker: the directory is a run, and its lock: one
                        writer at a time (host.files)
    config.json         learner, every config field, runner settings
    metrics.jsonl       one JSON object per update per seed (null: no value)
    checkpoints/<step>  orbax checkpoints (atomic; the last ``keep`` kept)
    summary.json        the learner's summary and the final evaluation
    learning_curve.png  the progress metric against units consumed
    tensorboard/        events, with ``tensorboard=True``
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from jaxrl_align import agents
from jaxrl_align import configs
from jaxrl_align import rlhf
from jaxrl_align.host import checkpoints
from jaxrl_align.host import distributed
from jaxrl_align.host import files
from jaxrl_align.host import monitor
from jaxrl_align.host import programs
from jaxrl_align.host import records
from jaxrl_align.host import resuming
from jaxrl_align.host import settings as settings_lib
from jaxrl_align.host import views
from jaxrl_align.learner import Learner

CHECKPOINTS = resuming.CHECKPOINTS
LEARNERS: dict[str, Learner] = {**agents.LEARNERS, **rlhf.LEARNERS}
RunError = files.RunError
read_run = files.read_run
read_metrics = files.read_metrics
# re-exported: how a run is executed is part of the runner's API
RunnerSettings = settings_lib.RunnerSettings
SHARDS = settings_lib.SHARDS
device_mesh = settings_lib.device_mesh
default_chunk = settings_lib.default_chunk
resolve_settings = settings_lib.resolve_settings


def learner_of(name: str) -> Learner:
  if name not in LEARNERS:
    raise RunError(f"Unknown algorithm {name!r}; choose from "
                   f"{', '.join(LEARNERS)}.")
  return LEARNERS[name]


def load_config(run_dir: str, learner: Learner | None = None):
  """``(learner, config, settings)`` of a run directory (the registered
  learner of its name, or ``learner`` if given: it must have that name)."""
  run = files.read_run(run_dir)
  if learner is None:
    learner = learner_of(run["algo"])
  elif learner.name != run["algo"]:
    raise RunError(f"The run in {run_dir!r} is {run['algo']}, not "
                   f"{learner.name}.")
  return (learner, records.learner_config(run, run_dir, learner.config_type),
          records.runner_settings(run, run_dir))


class RunResult(NamedTuple):
  """What :func:`run` returns (host values).

  Attributes:
    states: final learner states, leading axis = seed.
    evaluation: the final evaluation, leading axis = seed (None when the
      learner has none or the run was interrupted).
    summary: the dict written to ``summary.json``.
    interrupted: True when stopped early (a checkpoint was saved).
    finished: True when a run resumed had finished already: nothing ran
      or changed, ``summary`` is its ``summary.json`` and ``states`` and
      ``evaluation`` are None (:func:`jaxrl_align.host.evaluation.
      restore_run` reads its states).
  """
  states: Any
  evaluation: Any
  summary: dict[str, Any] | None
  interrupted: bool
  finished: bool = False

  @property
  def eval_returns(self):
    """The evaluation of an environment learner: ``[seeds, episodes]``."""
    return self.evaluation


# ----------------------------------------------------------------- running


def create(learner: Learner, config, out: str,
           settings: RunnerSettings = RunnerSettings(), *,
           overwrite: bool = False,
           record: dict[str, Any] | None = None,
           view: views.View | None = None) -> RunnerSettings:
  """Creates the run directory ``out`` and its ``config.json`` (what
  :func:`run` does first, before its ``on_create``).

  Returns:
    The resolved runner settings.
  """
  settings, held = _create(learner, config, out, settings, overwrite, record,
                           view or views.of(learner))
  with held:  # made and written: its lock goes
    return settings


def _create(learner, config, out, settings, overwrite, record, view):
  """``(settings, lock)``: :func:`create`, the run directory's lock held
  (on process 0; a context that holds nothing elsewhere)."""
  settings = resolve_settings(learner, config, settings)
  held = distributed.on_primary(_write_run_dir, learner, config, out,
                                settings, overwrite, record, view)
  return settings, held or contextlib.nullcontext()


def _write_run_dir(learner, config, out, settings, overwrite, record, view):
  """Makes the run directory (process 0); returns its lock. A run of any
  environment learner replaces another (``train --overwrite``); any other
  learner's, only its own kind's."""
  family = agents.LEARNERS if learner.name in agents.LEARNERS else ()
  held = files.prepare_run_dir(
      out, learner.name, overwrite=overwrite, replaces=family,
      hint="pass --resume to continue that run or --overwrite to replace it")
  try:
    files.write_json(os.path.join(out, "config.json"), {
        "format": files.FORMAT_VERSION, "algo": learner.name,
        "config": configs.to_dict(config),
        "runner": dataclasses.asdict(settings), "units": learner.units,
        "progress_metric": view.progress_metric,
        "updates": learner.num_updates(config),
        learner.units: learner.num_updates(config)
                       * learner.units_per_update(config),
        "jax": jax.__version__, "processes": distributed.count(),
        **(record or {})})
  except BaseException:
    held.release()
    raise
  return held


def run(learner: Learner | str, config, out: str,
        settings: RunnerSettings = RunnerSettings(), *, data=None,
        record: dict[str, Any] | None = None, resume: bool = False,
        overwrite: bool = False, tensorboard: bool = False,
        progress: bool = True, stop_after: int | None = None,
        on_assess: Callable[[int, Any], None] | None = None,
        on_create: Callable[[str], None] | None = None,
        finish: Callable[[Any, Any, dict], dict] | None = None,
        view: views.View | None = None,
        announce: str | None = None) -> RunResult:
  """Trains, logs, checkpoints and evaluates one run.

  The process holds the run directory's lock throughout (process 0: it
  writes the files), so a second writer is refused
  (:func:`jaxrl_align.host.files.lock`). Everything that can refuse a run
  does so before anything is compiled or changed.

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
      (``settings`` and ``record`` are ignored). Metrics lines written
      after that checkpoint are dropped (and said to be). A finished run
      (it has its ``summary.json``) is left as it is and its summary
      returned; a changed hyperparameter or ``tensorboard`` is refused
      then. A run whose metrics show a checkpoint that is gone is refused.
    overwrite: replace an existing run directory (see
      :func:`jaxrl_align.host.files.prepare_run_dir`).
    tensorboard: also write TensorBoard events (needs ``tensorboardX``).
    progress: show a progress bar on stderr.
    stop_after: stop (with a checkpoint) once this many updates are done,
      as Ctrl-C would (for tests and for splitting a run across jobs).
    on_assess: ``(updates done, states) -> None``, called on the host after
      each assessment (e.g. to show samples); it must not change the states.
    on_create: ``out -> None``, called once a new run directory is created
      (process 0), before anything runs: files of the caller's own that a
      resumed run reads back (a tokenizer).
    finish: ``(states, evaluation, summary) -> summary``, called at the end
      of a run that was not interrupted, before ``summary.json`` is written
      (once): writes the caller's products (a model) and returns the
      summary to write.
    view: how the run is shown (progress metric, summary, notes); by
      default the learner's registered :class:`~jaxrl_align.host.views.
      View`.
    announce: a line for stderr (process 0) once the run is accepted,
      before anything compiles (what the caller built for it).

  Returns:
    A :class:`RunResult`.
  """
  if isinstance(learner, str):
    learner = learner_of(learner)
  view = view or views.of(learner)
  diff, step = {}, None
  with contextlib.ExitStack() as held:
    if resume:
      held.enter_context(distributed.on_primary(files.lock, out)
                         or contextlib.nullcontext())
      _, stored, settings = load_config(out, learner)
      diff = resuming.changes(out, learner, stored, config)
      summary = files.read_summary(out)
      if summary is not None:
        resuming.finished(out, diff, tensorboard, summary)
        return RunResult(None, None, summary, False, finished=True)
      settings_lib.check_devices(learner, config, settings)  # as made
      distributed.on_primary(resuming.check, out, learner, config, settings)
      step = resuming.readable(out)
      resuming.warn(diff)
    else:
      settings, lock = _create(learner, config, out, settings, overwrite,
                               record, view)
      held.enter_context(lock)
      if on_create is not None:
        distributed.on_primary(on_create, out)
    notes = (view.notes(config) if view.notes else []) + (
        [announce] if announce else [])
    for note in notes if distributed.is_primary() else ():
      print(f"note: {note}.", file=sys.stderr)
    with jax.set_mesh(device_mesh(settings)):
      return _run(learner, view, config, out, settings, data, diff,
                  resume, step, tensorboard, progress, stop_after,
                  on_assess, finish)


def _run(learner, view, config, out, settings, data, diff, resume, step,
         tensorboard, progress, stop_after, on_assess, finish) -> RunResult:
  """:func:`run` once the run directory is ready, under its device mesh
  (resumed from the checkpoint of ``step``, or, if None, the newest that
  reads back)."""
  progs = programs.for_run(learner, config, settings, data)
  data = _replicated(data, settings)
  store = checkpoints.Checkpoints(os.path.join(out, CHECKPOINTS),
                                  settings.keep)
  try:
    states = progs.init(config, programs.seed_keys(settings), data)
    done, states = (resuming.restore(out, config, store, states, diff, step)
                    if resume else (0, states))
    start = done
    writer = (monitor.tensorboard_writer(out)
              if tensorboard and distributed.is_primary() else None)
    try:
      states, interrupted, first_s, wall = _train(
          learner, view, config, settings, progs, data, out, store, states, done,
          writer, progress, stop_after, on_assess)
    finally:
      if writer is not None:
        writer.close()
    if interrupted:
      return RunResult(states, None, None, True)
    evaluation = None
    if progs.evaluate is not None:
      evaluation = distributed.to_host(progs.evaluate(
          config, states, jax.random.split(jax.random.key(settings.seed + 1),
                                           settings.seeds), data))
  finally:
    store.close()
    progs.close()
  summary = _summary(learner, view, config, settings, out, states,
                     evaluation, first_s, wall, finish, start)
  return RunResult(states, evaluation, summary, False)


def _replicated(data, settings: RunnerSettings):
  """The data's arrays copied to every device of a one-process run over
  several (an array on one device, a model's parameters read from its run,
  cannot enter a program over several); what is not an array, and the data
  of a run on one device or over several processes, as it is."""
  if settings.devices == 1 or distributed.count() > 1:
    return data
  everywhere = jax.sharding.NamedSharding(device_mesh(settings),
                                          jax.sharding.PartitionSpec())
  return jax.tree.map(lambda x: jax.device_put(x, everywhere)
                      if isinstance(x, jax.Array) else x, data)


def _assessed(learner, config, progs, end: int, n: int) -> bool:
  """The chunk that ends after ``end`` updates is followed by an
  assessment."""
  every = learner.assess_every(config) if progs.assess else None
  return bool(every) and (end % every == 0 or end == n)


def _chunk_metrics(learner, config, progs, data, states, done, n, assessed):
  """One chunk (and the assessment when due): ``(states, metrics)`` with
  ``[seeds, chunk]`` host metrics, null-valued (NaN) where assessed
  metrics have no value."""
  states, metrics = progs.chunk(config, states, data)
  metrics = monitor.wait(metrics)
  shape = next(iter(metrics.values())).shape
  if _assessed(learner, config, progs, done + shape[1], n):
    states, extra = progs.assess(config, states, data)
    for k, v in distributed.to_host(extra).items():
      metrics[k] = np.full(shape, np.nan)
      metrics[k][:, -1] = v
  for k in assessed:
    metrics.setdefault(k, np.full(shape, np.nan))
  return states, metrics


def _train(learner, view, config, settings, progs, data, out, store, states,
           done, writer, progress, stop_after, on_assess):
  """The chunk loop: ``(states, interrupted, first chunk seconds, wall)``."""
  n = learner.num_updates(config)
  assessed = (sorted(jax.eval_shape(progs.assess, config, states, data)[1])
              if progs.assess else [])
  per_update = learner.units_per_update(config)
  bar = monitor.progress_bar(n * per_update, done * per_update,
                             progress and distributed.is_primary(),
                             unit=learner.units.rstrip("s").replace("env_",
                                                                    ""))
  last_saved, start, first_s = done, time.perf_counter(), None
  layout = (jax.tree.map(lambda x: x.sharding, states)
            if settings.devices > 1 else None)
  try:
    with monitor.Interrupt() as interrupt, _metrics_file(out) as metrics_file:
      while done < n:
        t0 = time.perf_counter()
        states, metrics = _chunk_metrics(learner, config, progs, data, states,
                                         done, n, assessed)
        if layout is not None:  # over devices: the layout `init` gave (and
          # a restored checkpoint has), so every chunk runs one program and
          # a resumed run stays exact
          states = jax.device_put(states, layout)
        if first_s is None:
          first_s = time.perf_counter() - t0
        diverged = programs.divergence(learner, config, metrics, states,
                               done + settings.chunk)
        if diverged:
          raise programs.DivergedError(
              f"the run diverged: {diverged}; nothing after update {done} "
              f"was written, the checkpoint at update {last_saved} is kept "
              f"({programs.divergence_hint(config)}, then --resume).")
        if metrics_file is not None:
          monitor.write_metrics(metrics_file, metrics, done, writer,
                                learner.units)
        done += settings.chunk
        if on_assess is not None and _assessed(learner, config, progs, done,
                                               n):
          on_assess(done, states)
        monitor.show(bar, metrics, view.progress_metric,
              settings.chunk * per_update)
        # a Ctrl-C on any process stops them all after this chunk
        stop = distributed.any_process(interrupt.requested) or (
            stop_after is not None and stop_after <= done < n)
        if done - last_saved >= settings.checkpoint_every or done == n or stop:
          if metrics_file is not None:
            metrics_file.flush()
            os.fsync(metrics_file.fileno())
          store.save(done, states)
          last_saved = done
        if stop:
          return states, True, first_s, time.perf_counter() - start
  finally:
    if bar is not None:
      bar.close()
  return states, False, first_s, time.perf_counter() - start


def _metrics_file(out: str):
  """``metrics.jsonl`` open for appending on process 0; elsewhere a
  context that gives None (only process 0 writes)."""
  if distributed.is_primary():
    return open(os.path.join(out, "metrics.jsonl"), "a")
  return contextlib.nullcontext(None)


def _summary(learner, view, config, settings, out, states, evaluation,
             first_s, wall, finish=None, start=0) -> dict[str, Any]:
  """Writes ``summary.json`` (after ``finish``, if given) and the learning
  curve (process 0); returns the summary (on every process). Each seed's
  last metrics are its last values (nulls skipped); ``start``: updates
  done before this session (a resumed run)."""
  distributed.barrier("metrics written")
  last: list[dict[str, Any]] = [{} for _ in range(settings.seeds)]
  for row in read_metrics(out):
    last[row["seed"]].update({k: v for k, v in row.items() if v is not None})
  n = learner.num_updates(config)
  summary = {"algo": learner.name, "seeds": settings.seeds, "updates": n,
             learner.units: n * learner.units_per_update(config),
             **view.summarize(config, evaluation, last),
             "wall_seconds_this_session": wall,
             "updates_this_session": n - start,
             "first_chunk_seconds": first_s}  # with compilation, if any
  if finish is not None:
    summary = finish(states, evaluation, summary)
  distributed.on_primary(_write_summary, out, summary)
  return summary


def _write_summary(out, summary):
  files.write_json(os.path.join(out, "summary.json"), summary)
  from jaxrl_align.host import plotting  # matplotlib only when needed

  plotting.plot_runs([out], os.path.join(out, "learning_curve.png"))


