"""The programs a run executes: a learner's ``init``, chunks of ``update``,
``assess`` and ``evaluate``, compiled under ``jit(vmap(...))`` over seeds
(or host-stepped ones, for environments Gymnasium steps on the host), and
the check that stops a run whose numbers stop being finite."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import compiler
from jaxrl_align import configs
from jaxrl_align import parallel
from jaxrl_align.host import distributed
from jaxrl_align.host import errors
from jaxrl_align.host import settings as settings_lib
from jaxrl_align.host import stepping
from jaxrl_align.learner import Learner


class DivergedError(errors.RunError):
  """A metric that must stay finite, or the state, became NaN or infinite."""


class Compiled(NamedTuple):
  """A learner's programs, jitted and vmapped over seeds (``assess`` and
  ``evaluate`` None when it has none)."""
  init: Any
  chunk: Any
  assess: Any
  evaluate: Any

  def close(self) -> None:
    """Nothing to release (host-stepped programs close their envs)."""


@functools.lru_cache(maxsize=None)
def compiled(learner: Learner, chunk: int, eval_size: int) -> Compiled:
  """``init``, ``chunk`` (``chunk`` updates under ``lax.scan``), ``assess``
  and ``evaluate``, jitted and vmapped over seeds; ``data`` is an argument,
  shared by the seeds. Cached per learner, chunk length and evaluation
  size, so runs that share a config's static fields reuse the compiled
  programs (jit keys them on the config's static fields)."""
  options = compiler.compiler_options()

  def _chunk(config, state, data):
    return jax.lax.scan(lambda s, _: learner.update(config, s, data), state,
                        None, length=chunk)

  def jit_vmap(fn, in_axes):  # the seeds on the mesh's `seeds` devices
    return jax.jit(parallel.vmap_seeds(fn, in_axes=in_axes),
                   compiler_options=options)

  assess = evaluate = None
  if learner.assess is not None:
    assess = jit_vmap(learner.assess, (None, 0, None))
  if learner.evaluate is not None:
    evaluate = jit_vmap(lambda c, s, k, d: learner.evaluate(c, s, k, d,
                                                            eval_size),
                        (None, 0, 0, None))
  return Compiled(jit_vmap(learner.init, (None, 0, None)),
                  jit_vmap(_chunk, (None, 0, None)), assess, evaluate)


def for_run(learner: Learner, config, settings, data=None):
  """The programs of a run: :class:`~jaxrl_align.host.stepping.HostPrograms`
  for a task stepped on the host, else :func:`compiled`."""
  if stepping.host_stepped(learner, config, data):
    over = (settings_lib.device_mesh(settings) if distributed.count() > 1
            else None)  # the seeds over the processes
    return stepping.HostPrograms(learner, settings.chunk,
                                 settings.eval_episodes, mesh=over)
  return compiled(learner, settings.chunk, settings.eval_episodes)


def seed_keys(settings) -> jax.Array:
  return jax.random.split(jax.random.key(settings.seed), settings.seeds)


@jax.jit
def all_finite(tree) -> jax.Array:
  leaves = [x for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(
      [jnp.all(jnp.isfinite(x)) for x in leaves]))


def divergence(learner: Learner, config, metrics, states, done: int
                ) -> str | None:
  """What went non-finite in a chunk that ends at update ``done``, or None."""
  length = next(iter(metrics.values())).shape[1]
  for j in range(length):
    for name in learner.finite_metrics:
      if name not in metrics:  # not reported by this config's update
        continue
      bad = np.flatnonzero(~np.isfinite(metrics[name][:, j]))
      if bad.size:
        update = done - length + j + 1
        return (f"{name} is {metrics[name][bad[0], j]} at update {update} "
                f"(seed {bad[0]})")
  if not bool(distributed.to_host(all_finite(states))):  # every process
    return f"the state has a non-finite value after update {done}"
  return None


def divergence_hint(config) -> str:
  sizes = [f"--{n.replace('_', '-')}" for n in ("learning_rate",
                                                  "max_grad_norm", "max_kl")
           if n in configs.to_dict(config)]
  return f"try a smaller {' or '.join(sizes)}" if sizes else ""


