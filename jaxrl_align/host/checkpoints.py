"""Orbax checkpoints of vmapped learner states (host side).

PRNG keys are stored as their key data and wrapped back on restore, so a
restored state equals the saved one bit for bit. Arrays are saved as the
``jax.Array`` they are (each device's shards) and restored into the
shardings of the template's arrays, so a state spread over a device mesh
comes back spread the same way.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import jax


class CheckpointError(ValueError):
  """No checkpoint could be read (the message names the directory and the
  steps)."""


def _quiet_closed_loops(previous):
  """A ``sys.unraisablehook`` that drops what an aborted orbax restore
  leaves behind: TensorStore reads that finish after orbax closed their
  asyncio loop each report "Event loop is closed" (dozens of tracebacks,
  after the error itself was handled). Anything else goes to
  ``previous``."""

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
      previous(unraisable)

  hook.quiets_closed_loops = True
  return hook


def _install_quiet_hook() -> None:
  if not getattr(sys.unraisablehook, "quiets_closed_loops", False):
    sys.unraisablehook = _quiet_closed_loops(sys.unraisablehook)


class _Orphans(logging.Filter):
  """Drops asyncio's report of a task whose error no one read: the reads
  an aborted orbax restore left running, reported when collected (at
  exit), each with TensorStore's spec."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "exception was never retrieved" not in record.getMessage()


def _quiet_aborted_restore() -> None:
  """Once a restore has failed (the error is reported, in one line): its
  abandoned reads say nothing more, now or when collected."""
  logger = logging.getLogger("asyncio")
  if not any(isinstance(f, _Orphans) for f in logger.filters):
    logger.addFilter(_Orphans())
  warnings.filterwarnings("ignore", message=r"coroutine '.*' was never "
                          r"awaited", category=RuntimeWarning)


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

    _install_quiet_hook()  # before any restore can fail
    self._ocp = ocp
    self._directory = directory
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
    that reads back; unreadable ones are skipped (said in one line on
    stderr when an earlier one is restored instead).

    Raises:
      CheckpointError: none reads back; one short line naming the
        directory and the steps (not the library's error, a TensorStore
        spec kilobytes long).
    """
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        _to_saveable(template))
    s, saved = self._newest(self._ocp.args.StandardRestore(abstract), step)
    return s, _from_saved(saved, template)

  def newest_readable(self) -> int:
    """The newest step whose checkpoint reads back, read whole onto this
    process's first device (no template: nothing needs compiling to know
    it; a run saved over other devices or processes reads back too) and
    dropped; the ones skipped are said in one line. Raises as
    :meth:`restore`."""
    return self._newest(None, None)[0]

  def _whole_here(self, step: int):
    """Restore arguments reading every array of ``step`` whole onto this
    process's first device, from its metadata."""
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # not "no step metadata" for an item read
    try:
      saved = self._ocp.StandardCheckpointer().metadata(os.path.join(
          os.path.abspath(self._directory), str(step), "default"))
    finally:
      absl.setLevel(level)
    return self._ocp.args.StandardRestore(jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
        saved.item_metadata.tree))

  def _newest(self, args, step: int | None):
    """``(step, what orbax restored)``: ``step``, or the newest that reads
    back with ``args`` (None: each whole on this process's device)."""
    steps = self.steps() if step is None else [step]
    if not steps:
      raise CheckpointError("The run has no checkpoint yet (none was saved).")
    unreadable = []  # (step, the error's type)
    for s in reversed(steps):
      try:
        saved = self._manager.restore(
            s, args=self._whole_here(s) if args is None else args)
      except Exception as e:  # noqa: BLE001 - any read failure falls back
        _quiet_aborted_restore()
        unreadable.append((s, type(e).__name__))
        continue
      if unreadable:
        print(f"warning: {self._directory}: {_listed(unreadable)}: damaged "
              f"or cut short); restored the one at update {s}.",
              file=sys.stderr)
      return s, saved
    raise CheckpointError(f"{self._directory}: {_listed(unreadable)}: "
                          f"damaged or cut short); no checkpoint to restore.")

  def close(self):
    self._manager.close()


def _listed(unreadable: list[tuple[int, str]]) -> str:
  """``"the checkpoint at update 4 is unreadable (ValueError"``, or of
  several ``"the checkpoints at updates 4, 2 are unreadable (..."``."""
  kinds = ", ".join(dict.fromkeys(kind for _, kind in unreadable))
  steps = ", ".join(str(s) for s, _ in unreadable)
  if len(unreadable) == 1:
    return f"the checkpoint at update {steps} is unreadable ({kinds}"
  return f"the checkpoints at updates {steps} are unreadable ({kinds}"


def newest_readable(directory: str) -> int:
  """:meth:`Checkpoints.newest_readable` of a run's checkpoint directory,
  which is not made when missing (the run has no checkpoint yet)."""
  if not os.path.isdir(directory):
    raise CheckpointError("The run has no checkpoint yet (none was saved).")
  store = Checkpoints(directory, keep=1)  # nothing is saved: keeps all
  try:
    return store.newest_readable()
  finally:
    store.close()
