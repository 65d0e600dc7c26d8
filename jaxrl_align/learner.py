"""The learner protocol: what the one runner needs to know of an algorithm.

A learner is three pure functions and a static description::

    state = init(config, key, data)
    state, metrics = update(config, state, data)         # metrics: scalars
    result = evaluate(config, state, key, data, size)    # optional

``config`` is the learner's frozen pytree config (static fields fix the
program, leaves are hyperparameters), ``data`` a pytree of arrays that does
not change during the run (an environment learner's task, or ``None`` to
build it from the config; token windows
for pretraining, preference pairs for the reward model, prompts and frozen
models for RL on a language model). ``data`` enters the compiled programs
as an argument, never as a constant, and is not checkpointed: the host
builds it again to resume.

The runner (:mod:`jaxrl_align.host.runner`) compiles ``init`` and chunks of
``update`` under ``jit(vmap(...))`` over seeds, writes the metrics, saves
and restores checkpoints, and calls ``evaluate`` at the end. It reads
nothing else of an algorithm: adding one is adding a :class:`Learner` to a
registry (``jaxrl_align.agents.LEARNERS``, ``jaxrl_align.rlhf.LEARNERS``).
The record holds pure functions and their accounting only; what the host
shows of a run (progress, summary, report) is its own record,
:class:`jaxrl_align.host.views.View`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import numpy as np


class Stepping(NamedTuple):
  """A learner's functions for environments stepped outside its programs
  (Gymnasium on the host): the host loop calls only these, so it never
  reads the learner's state. ``data`` is the run's data (for an
  environment learner, its :class:`~jaxrl_align.agents.tasks.Task`).

  A program launched per environment step costs more on a CPU than a
  MuJoCo step, so a rollout is three parts: ``prepare`` (one program),
  every step acted on the host by the ``actor`` (NumPy, no program), then
  ``replay`` (one program) turning the raw steps into the
  :class:`~jaxrl_align.envs.Trajectory` that ``learn`` takes, as the
  JAX-native rollout would have recorded it.

  Attributes:
    prepare: ``(config, state, data) -> (arrays, state)``: what the actor
      needs for one rollout (its parameters, the observation statistics,
      the rollout's sampling noise drawn beforehand), the state's sampling
      key advanced.
    actor: ``(config, data) -> actor``: the host's actor (not a program),
      built once per config: ``actor.load(arrays)`` once per rollout (the
      arrays of ``prepare``, fetched to the host), then
      ``actor.observe(obs)`` (a step's raw observations as the learner sees
      them) and ``actor.act(obs, t)`` (step ``t``'s actions).
    replay: ``(config, state, rollout, data) -> (trajectory, obs,
      state)``: a :class:`~jaxrl_align.envs.HostRollout` through the
      learner's wrappers (statistics updated), with the values and
      log-probabilities of the actions taken; ``obs``: the last step's
      observations as the learner sees them (the next rollout's first).
    learn: ``(config, state, trajectory, data) -> (state, metrics)``: one
      update on a trajectory of :class:`~jaxrl_align.envs.Trajectory`
      arrays, with the metrics of the JAX-native ``update``.
    mode: ``(config, state, obs, data) -> action``: the deterministic
      policy an evaluation runs.
    restart: ``(config, state, obs, data) -> (obs, state)``: the
      environments' observations after a reset, as the learner sees them
      (e.g. normalised, with its statistics updated); None: unchanged.
  """
  prepare: Callable[..., Any]
  actor: Callable[..., Any]
  replay: Callable[..., Any]
  learn: Callable[..., Any]
  mode: Callable[..., Any]
  restart: Callable[..., Any] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Learner:
  """A pure learner and its accounting (hashed by identity: one object per
  algorithm, so compiled programs can be cached on it). How the host shows
  it (progress metric, summary, text report, notes, defaults for
  ``--help``) is not here: :mod:`jaxrl_align.host.views`.

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
    finite_metrics: metrics that must stay finite where the update reports
      them (an update may leave one out for a config, as RL on the language
      model leaves out the value loss without a value model); a NaN or
      infinity in one of them (or in the state's parameters) stops a run.
    evaluate: ``(config, state, key, data, size) -> array or dict of
      arrays``, the final evaluation of one seed (``size``: episodes), or
      None when there is none. Everything a summary reports of the final
      state comes from here (the host reads no state).
    assess: ``(config, state, data) -> (state, metrics)``, run after the
      update that completes every ``assess_every(config)`` updates (and
      after the last): validation, keeping the best parameters. None when
      there is none.
    assess_every: ``config -> int``, with ``assess``.
    stepping: its :class:`Stepping`, for environments stepped outside its
      programs (None: it has no environment to step).
  """
  name: str
  config_type: type
  init: Callable[..., Any]
  update: Callable[..., Any]
  num_updates: Callable[[Any], int]
  units: str
  units_per_update: Callable[[Any], int]
  finite_metrics: tuple[str, ...]
  evaluate: Callable[..., Any] | None = None
  assess: Callable[..., Any] | None = None
  assess_every: Callable[[Any], int] | None = None
  stepping: Stepping | None = None


def finite_mean(x) -> float | None:
  """The mean of the finite values of ``x`` as a float, or None when there
  are none (JSON has no NaN): how summaries report a mean."""
  x = np.asarray(x, np.float64)
  x = x[np.isfinite(x)]
  return float(x.mean()) if x.size else None
