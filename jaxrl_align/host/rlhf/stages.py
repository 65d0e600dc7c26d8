"""One runner for every stage of the RLHF pipeline that trains a learner
(``sft``, ``rm``, the RL steps, and next the offline preference steps): one
way to create, resume and finish a run, one ``summary.json``, and each
stage's command and run-directory files derived from its declaration.

A :class:`Stage` says what its run reads (other runs' directories), how its
learner's config and data are made from them, what its run directory holds
besides the runner's files, and what it adds to the summary at the end.
:func:`run_stage` does the rest: it reads a resumed run's config, settings
and inputs back, creates a new run through the runner (the stage's own
files written once the directory exists), runs, lets the stage write its
products and add its summary fields, and writes ``summary.json`` once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import Any, Callable

from jaxrl_align.host import distributed
from jaxrl_align.host import files
from jaxrl_align.host import options
from jaxrl_align.host import records
from jaxrl_align.host import runner
from jaxrl_align.host import settings as settings_lib
from jaxrl_align.host.rlhf import _common
from jaxrl_align.learner import Learner


@dataclasses.dataclass(frozen=True)
class Prepared:
  """What a stage's ``prepare`` gives the run.

  Attributes:
    config: the learner's config, its derived fields set (the model's
      shape, tokens).
    data: the learner's data.
    record: more values for ``config.json`` (sizes, sources).
    on_create: ``out -> None``: the stage's files that a resumed run reads
      back, written once a new run directory exists.
    on_assess: ``(updates done, states) -> None`` after each assessment.
    context: whatever the stage's ``finish`` needs (a tokenizer, documents).
  """
  config: Any
  data: Any
  record: dict[str, Any] = dataclasses.field(default_factory=dict)
  on_create: Callable[[str], None] | None = None
  on_assess: Callable[[int, Any], None] | None = None
  context: Any = None


@dataclasses.dataclass(frozen=True)
class Stage:
  """A stage of the pipeline that trains a learner.

  Attributes:
    name: the command (``jaxrl-align rlhf NAME``).
    learner: the pure learner it runs.
    settings_type: its run settings (a frozen dataclass with ``seed`` and
      ``devices``: what the run does besides the optimisation).
    prepare: ``(out, config or None, settings, inputs, documents, resume)
      -> Prepared``: reads the inputs (``{name: run directory}``) and
      builds the config and data; ``config`` is None when resuming (the
      stored one is in ``out``) or when the user gave none (the defaults).
    finish: ``(out, prepared, states, evaluation, summary) -> dict``: writes
      the stage's products and returns its summary fields (added to the
      seed's entries when the run has one seed).
    report: ``summary -> str``, the finished run for the terminal.
    make_config: ``options -> config``: the learner's config from the
      command's option groups (``{title: {field: value}}``).
    help: one line for the command list.
    description: the command's ``--help`` text.
    groups: the command's option groups besides ``run`` (the settings):
      ``(title, class or default instance, field names or None)``.
    inputs: ``(name, help)``: the run directories it reads
      (``--NAME RUN_DIR``), each a finished ``rlhf NAME`` run. The run
      records the identities of those of a kind with products
      (:data:`._common.PRODUCTS`: sft, prefs, rm), and refuses inputs of
      which one was made from another run than the input of that kind
      (an rm run from another sft run than ``--sft``), and a resume after
      an input was replaced (:func:`._common.check_inputs`).
    optional: the names of the inputs that may be left out (``prepare``
      then gets None for them).
    files: what its run directory holds besides the runner's files.
    needs: modules of the ``rlhf`` extra it imports.
    refuse: ``summary -> str or None``: after the summary is written, a
      reason to fail the run (the summary says why), or None.
  """
  name: str
  learner: Learner
  settings_type: type
  prepare: Callable[..., Prepared]
  finish: Callable[..., dict[str, Any]]
  report: Callable[[dict[str, Any]], str]
  make_config: Callable[[dict[str, dict[str, Any]]], Any]
  help: str
  description: str
  groups: tuple[tuple[str, Any, tuple[str, ...] | None], ...]
  inputs: tuple[tuple[str, str], ...] = ()
  optional: tuple[str, ...] = ()
  files: tuple[str, ...] = ()
  needs: tuple[str, ...] = ("tokenizers",)
  refuse: Callable[[dict[str, Any]], str | None] | None = None


def run_stage(stage: Stage, out: str, config=None, settings=None,
              inputs: dict[str, str | None] | None = None, *, seeds: int = 1,
              documents: list[str] | None = None, overwrite: bool = False,
              resume: bool = False, tensorboard: bool = False,
              progress: bool = True,
              stop_after: int | None = None) -> dict[str, Any]:
  """Runs ``stage`` in ``out``; returns the summary (empty when stopped
  early, with a checkpoint to resume from).

  Args:
    stage: the stage.
    out: the run directory.
    config: the learner's config (None: the defaults); ignored to resume.
    settings: the stage's run settings (None: the defaults); ignored to
      resume.
    inputs: ``{name: run directory}`` of the stage's inputs; ignored to
      resume (the run's own are used).
    seeds: runs in one ``vmap``.
    documents: texts to use instead of the corpus (tests; again to resume).
    overwrite: replace an earlier run in ``out``.
    resume: continue the run in ``out`` from its newest checkpoint (the
      lock of ``out`` held throughout); a finished run is left as it is
      and its summary returned, its inputs not even read.
    tensorboard: also write TensorBoard events.
    progress: show a progress bar.
    stop_after: stop with a checkpoint after this many updates, as Ctrl-C
      would.

  Raises:
    RunError: an input is missing or is not a finished run of its kind,
      the inputs do not fit the config, or the stage refuses its result.
  """
  with contextlib.ExitStack() as held:
    if resume:  # held while the run is read back and runs
      held.enter_context(distributed.on_primary(files.lock, out)
                         or contextlib.nullcontext())
      _, config, _ = runner.load_config(out, stage.learner)
      if files.read_summary(out) is not None:  # finished: nothing to build
        return _result(stage, runner.run(
            stage.learner, config, out, resume=True, tensorboard=tensorboard,
            progress=progress))
    return _result(stage, _run(stage, out, config, settings, inputs, seeds,
                               documents, overwrite, resume, tensorboard,
                               progress, stop_after))


def _run(stage, out, config, settings, inputs, seeds, documents, overwrite,
         resume, tensorboard, progress, stop_after) -> runner.RunResult:
  """:func:`run_stage` of a run that is not finished."""
  inputs = dict(inputs or {})
  if resume:
    stored = runner.read_run(out)
    settings = records.section(stored, out, "run_settings",
                               stage.settings_type)
    inputs = {name: records.text(stored, out, f"{name}_run")
              for name, _ in stage.inputs
              if name not in stage.optional or f"{name}_run" in stored}
  settings = settings if settings is not None else stage.settings_type()
  missing = [options.flag(n) for n, _ in stage.inputs
             if inputs.get(n) is None and n not in stage.optional]
  if missing:
    raise runner.RunError(f"rlhf {stage.name} needs {' and '.join(missing)} "
                          f"run directories.")
  given = [n for n, _ in stage.inputs if inputs.get(n) is not None]
  runs = {n: inputs[n] for n in given if n in _common.PRODUCTS}
  identities = {name: _common.identity(path, name, options.flag(name))
                for name, path in runs.items()}
  _common.check_inputs(runs, identities)
  if resume:
    _common.check_unchanged(out, stored, identities)
  prepared = stage.prepare(out, config, settings, inputs, documents, resume)
  if not settings.devices:  # as many as the batch divides over
    settings = dataclasses.replace(settings, devices=settings_lib.spread(
        prepared.config.batch_size))
  record = {"run_settings": dataclasses.asdict(settings),
            **{f"{name}_run": os.path.abspath(inputs[name]) for name in given},
            _common.IDENTITIES: identities, **prepared.record}

  def finish(states, evaluation, summary):
    more = stage.finish(out, prepared, states, evaluation, summary)
    if summary["seeds"] == 1:
      return _common.one_seed(summary, **more)
    return {**summary, **more}

  return runner.run(
      stage.learner, prepared.config, out, runner.RunnerSettings(
          seeds=seeds, seed=settings.seed, devices=settings.devices,
          shard="data"), data=prepared.data, record=record, resume=resume,
      overwrite=overwrite, tensorboard=tensorboard, progress=progress,
      stop_after=stop_after, on_assess=prepared.on_assess,
      on_create=prepared.on_create, finish=finish)


def _result(stage: Stage, result: runner.RunResult) -> dict[str, Any]:
  """The summary of a run (empty when interrupted), or the stage's reason
  to refuse it."""
  if result.interrupted:
    return {}
  reason = stage.refuse(result.summary) if stage.refuse else None
  if reason:
    raise runner.RunError(reason)
  return result.summary


def per_second(summary: dict[str, Any], units: str) -> float | None:
  """``units`` done in this session per second of it, or None when this
  session ran no update (a finished run resumed): a resumed run's earlier
  units are not this session's."""
  n, wall = summary["updates_this_session"], summary["wall_seconds_this_session"]
  if not n or not wall > 0:
    return None
  return summary[units] * n / summary["updates"] / wall


def command(stage: Stage) -> _common.Command:
  """The stage as an ``rlhf`` subcommand."""

  def main(out, inputs, given, **flags) -> int:
    config = None if flags.get("resume") else stage.make_config(given)
    summary = run_stage(stage, out, config,
                        stage.settings_type(**given["run"]), inputs, **flags)
    text, code = _common.ending(stage.name, out, summary, stage.report)
    print(text, file=sys.stderr if code else sys.stdout)
    return code

  return _common.Command(
      help=stage.help, description=stage.description,
      groups=stage.groups + (("run", stage.settings_type, None),),
      main=main, inputs=stage.inputs, optional=stage.optional,
      needs=stage.needs,
      learner=stage.learner.name)
