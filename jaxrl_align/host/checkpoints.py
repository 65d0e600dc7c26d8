"""Orbax checkpoints of vmapped learner states (host side).

PRNG keys are stored as their key data and wrapped back on restore, so a
restored state equals the saved one bit for bit. Arrays are saved as the
``jax.Array`` they are (each device's shards) and restored into the
shardings of the template's arrays, so a state spread over a device mesh
comes back spread the same way.
"""

from __future__ import annotations

import os
import sys

import jax


class CheckpointError(ValueError):
  """No checkpoint could be read (the message lists why)."""


def _is_key(x) -> bool:
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _as_array(x) -> jax.Array:
  return x if isinstance(x, jax.Array) else jax.numpy.asarray(x)


def _to_saveable(states):
  return jax.tree.map(
      lambda x: jax.random.key_data(x) if _is_key(x) else _as_array(x),
      states)


def _from_saved(saved, template):
  return jax.tree.map(
      lambda s, t: jax.random.wrap_key_data(s) if _is_key(t) else s,
      saved, template)


class Checkpoints:
  """Orbax checkpoints of a run's vmapped learner states, keyed by update.

  Orbax writes each checkpoint into a temporary directory and renames it
  when complete, so a crash mid-write leaves the earlier ones intact.
  """

  def __init__(self, directory: str, keep: int):
    import orbax.checkpoint as ocp  # host side only

    self._ocp = ocp
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False))

  def steps(self) -> list[int]:
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def save(self, step: int, states) -> None:
    """Saves ``states`` as the checkpoint of ``step``. One already there is
    one a resume skipped as unreadable (a run resumes from its newest
    readable checkpoint, so only those lie ahead of it): replaced."""
    if step in self.steps():
      self._manager.delete(step)
    self._manager.save(step, args=self._ocp.args.StandardSave(
        _to_saveable(states)), force=True)
    self._manager.wait_until_finished()

  def restore(self, template, step: int | None = None):
    """``(step, states)`` from ``step`` or, if None, the newest checkpoint
    that reads back; unreadable ones are reported on stderr and skipped."""
    steps = self.steps() if step is None else [step]
    if not steps:
      raise CheckpointError("The run has no checkpoint yet (none was saved).")
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        _to_saveable(template))
    errors = []
    for s in reversed(steps):
      try:
        saved = self._manager.restore(
            s, args=self._ocp.args.StandardRestore(abstract))
        return s, _from_saved(saved, template)
      except Exception as e:  # noqa: BLE001 - any read failure falls back
        errors.append(f"checkpoint {s}: {type(e).__name__}: {e}")
        print(f"warning: checkpoint at update {s} is unreadable "
              f"({type(e).__name__}); trying an earlier one.", file=sys.stderr)
    raise CheckpointError("No readable checkpoint:\n  " + "\n  ".join(errors))

  def close(self):
    self._manager.close()
