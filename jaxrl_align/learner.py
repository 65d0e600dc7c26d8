"""The learner protocol: what the one runner needs to know of an algorithm.

A learner is three pure functions and a static description::

    state = init(config, key, data)
    state, metrics = update(config, state, data)         # metrics: scalars
    result = evaluate(config, state, key, data, size)    # optional

``config`` is the learner's frozen pytree config (static fields fix the
program, leaves are hyperparameters), ``data`` a pytree of arrays that does
not change during the run (``None`` for environment learners; token windows
for pretraining, preference pairs for the reward model, prompts and frozen
models for RL on a language model). ``data`` enters the compiled programs
as an argument, never as a constant, and is not checkpointed: the host
builds it again to resume.

The runner (:mod:`jaxrl_align.host.runner`) compiles ``init`` and chunks of
``update`` under ``jit(vmap(...))`` over seeds, writes the metrics, saves
and restores checkpoints, and calls ``evaluate`` at the end. It reads
nothing else of an algorithm: adding one is adding a :class:`Learner` to a
registry (``jaxrl_align.agents.LEARNERS``, ``jaxrl_align.rlhf.LEARNERS``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Learner:
  """A pure learner and how to run it (hashed by identity: one object per
  algorithm, so compiled programs can be cached on it).

  Attributes:
    name: registry key, recorded in the run directory (``"ppo"``).
    config_type: its config class.
    init: ``(config, key, data) -> state``.
    update: ``(config, state, data) -> (state, metrics)``, metrics a dict of
      scalars; NaN means "no value this update" (the runner writes null).
    num_updates: ``config -> int``, updates in a whole run.
    units: what an update consumes, as the metric that counts it
      cumulatively (``"env_steps"``, ``"tokens"``, ``"pairs"``); learning
      curves use it as their x axis.
    units_per_update: ``config -> int``.
    progress_metric: the metric the progress bar shows.
    finite_metrics: metrics that must stay finite where the update reports
      them (an update may leave one out for a config, as RL on the language
      model leaves out the value loss without a value model); a NaN or
      infinity in one of them (or in the state's parameters) stops a run.
    summarize: ``(config, states, evaluation, last_metrics) -> dict``, the
      learner's part of ``summary.json``: ``states`` and ``evaluation``
      have a leading seed axis (host arrays), ``last_metrics`` is each
      seed's last row of ``metrics.jsonl``.
    report: ``summary -> str``, the summary as text for the terminal.
    evaluate: ``(config, state, key, data, size) -> array or dict of
      arrays``, the final evaluation of one seed (``size``: episodes), or
      None when there is none.
    assess: ``(config, state, data) -> (state, metrics)``, run after the
      update that completes every ``assess_every(config)`` updates (and
      after the last): validation, keeping the best parameters. None when
      there is none.
    assess_every: ``config -> int``, with ``assess``.
    defaults: the value of each config field when neither the user nor a
      task preset sets it, for fields whose declared default is ``None``
      (what ``--help`` shows).
    programs: ``(config, chunk, eval_size) -> programs or None``: the
      learner's own ``init``/``chunk``/``assess``/``evaluate`` for a run with
      this config (an object with those attributes, over seeds), or None to
      have the runner compile them from the functions above. Environment
      learners give host-stepped programs for environments that are not
      JAX-native.
    notes: ``config -> [str]``: what a user should know before the run
      starts (the runner prints them), e.g. a step count it rounds.
  """
  name: str
  config_type: type
  init: Callable[..., Any]
  update: Callable[..., Any]
  num_updates: Callable[[Any], int]
  units: str
  units_per_update: Callable[[Any], int]
  progress_metric: str
  finite_metrics: tuple[str, ...]
  summarize: Callable[..., dict]
  report: Callable[[dict], str]
  evaluate: Callable[..., Any] | None = None
  assess: Callable[..., Any] | None = None
  assess_every: Callable[[Any], int] | None = None
  defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
  programs: Callable[..., Any] | None = None
  notes: Callable[[Any], list[str]] | None = None


def finite_mean(x) -> float | None:
  """The mean of the finite values of ``x`` as a float, or None when there
  are none (JSON has no NaN): how summaries report a mean."""
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  return float(x.mean()) if x.size else None
