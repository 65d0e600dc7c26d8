"""Seeds and batches over a device mesh, on JAX's own SPMD engine.

No engine of our own: a 2-D :class:`jax.sharding.Mesh` with a ``seeds``
axis and a ``data`` axis, both of type ``Auto``, and sharding *marks* inside
the pure programs. Under ``jax.set_mesh(mesh)`` and ``jit``, XLA's SPMD
partitioner splits every marked batch over the ``data`` devices and inserts
the all-reduces that each mean, sum or statistic over the batch needs:
gradients, advantage normalisation, running observation and reward
statistics, episode metrics, the approximate KL of early stopping, and
TRPO's loss, KL, Fisher-vector products and line search. So N devices
compute what one device computes on the whole batch, up to the order of
floating-point summation; without a mesh (or with axes of size 1) every mark
is the identity and the programs are unchanged.

Why marks and not ``shard_map``: inside ``shard_map`` each reduction must be
written by hand (``pmean`` of gradients, of statistics, of Fisher-vector
products ...), and a missing or doubled one gives values N× off that Adam
and gradient clipping then hide in the parameters. Here the reductions are
the compiler's, derived from the same code that runs on one device.

The seed axis: :func:`vmap_seeds` is ``vmap`` with ``spmd_axis_name="seeds"``,
so the mapped axis of every array inside lies on the ``seeds`` devices.

Example (8 forced CPU devices: ``XLA_FLAGS=
--xla_force_host_platform_device_count=8``)::

    mesh = parallel.mesh(seeds=2, data=4)
    with jax.set_mesh(mesh):
      train = jax.jit(parallel.vmap_seeds(ppo.train, in_axes=(None, 0)))
      state, metrics = train(config, jax.random.split(key, 2))

Across hosts, call ``jax.distributed.initialize`` first in every process;
``mesh`` then spans every process's devices and each process steps only the
environments on its own devices (``docs/devices.md``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
from jax.sharding import PartitionSpec as P

SEEDS = "seeds"
DATA = "data"


def mesh(seeds: int = 1, data: int = 1,
         devices: Sequence[Any] | None = None) -> jax.sharding.Mesh:
  """A ``(seeds, data)`` mesh of ``seeds · data`` devices, both axes Auto.

  Args:
    seeds: devices along the seed (or config) axis, ≥ 1.
    data: devices along the batch axis, ≥ 1.
    devices: the devices to use (default: the first ``seeds · data`` of
      ``jax.devices()``, which spans every process after
      ``jax.distributed.initialize``).

  Returns:
    A :class:`jax.sharding.Mesh` with axes ``("seeds", "data")``. Auto axes:
    the ``Explicit`` axes that ``jax.make_mesh`` builds by default reject a
    ``vmap`` over a ``lax.scan`` in jax 0.10.

  Raises:
    ValueError: a size below 1, or more devices than there are.
  """
  for name, size in (("seeds", seeds), ("data", data)):
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
      raise ValueError(f"`{name}` must be an integer >= 1, got {size!r}.")
  devices = list(jax.devices() if devices is None else devices)
  if seeds * data > len(devices):
    raise ValueError(
        f"a mesh of {seeds} x {data} devices needs {seeds * data}; there "
        f"are {len(devices)} (on CPU, XLA_FLAGS="
        f"--xla_force_host_platform_device_count=N makes N).")
  auto = jax.sharding.AxisType.Auto
  return jax.make_mesh((seeds, data), (SEEDS, DATA), axis_types=(auto, auto),
                       devices=devices[:seeds * data])


def axis_size(name: str) -> int:
  """Devices along ``name`` in the mesh in context (1 without one)."""
  current = jax.sharding.get_abstract_mesh()
  if current.empty or name not in current.axis_names:
    return 1
  return current.shape[name]


def shard_batch(tree, axis: int = 0, size: int | None = None):
  """Marks ``axis`` of every leaf as split over the ``data`` devices.

  The identity without a mesh or with one ``data`` device. Leaves whose
  ``axis`` has another length than ``size`` (when given: e.g. running
  statistics next to per-environment state), or a length the devices do not
  divide, are left to the compiler. Inside :func:`vmap_seeds` the mapped
  axis stays on the ``seeds`` devices.

  Args:
    tree: a pytree of arrays.
    axis: the batch axis of the leaves.
    size: only leaves with this length along ``axis``.

  Returns:
    ``tree``, with sharding constraints.
  """
  n = axis_size(DATA)
  if n == 1:
    return tree

  def _mark(x):
    if (x.ndim <= axis or x.shape[axis] % n
        or (size is not None and x.shape[axis] != size)):
      return x
    return jax.lax.with_sharding_constraint(x, P(*(None,) * axis, DATA))

  return jax.tree.map(_mark, tree)


def gather_batch(tree):
  """Marks every leaf as whole on each ``data`` device (an all-gather of a
  split batch): for what runs on the host (``jax.pure_callback``, which
  reads its operands on one device; from a split batch XLA's partitioner
  can only get there by a full rematerialisation, and warns). The identity
  without a mesh or with one ``data`` device; inside :func:`vmap_seeds`
  the mapped axis stays on the ``seeds`` devices."""
  if axis_size(DATA) == 1:
    return tree
  return jax.tree.map(
      lambda x: jax.lax.with_sharding_constraint(x, P(*(None,) * x.ndim)),
      tree)


def vmap_seeds(fn: Callable, in_axes: Any = 0, out_axes: Any = 0) -> Callable:
  """``jax.vmap(fn, in_axes, out_axes)`` with its axis on the ``seeds``
  devices.

  Args:
    fn: the function of one seed (or config).
    in_axes, out_axes: as for :func:`jax.vmap`.

  Returns:
    The mapped function. Called under a mesh with ``k`` ``seeds`` devices,
    it raises ``ValueError`` unless ``k`` divides the mapped size (pad with
    extra seeds, or use fewer devices).
  """
  mapped = jax.vmap(fn, in_axes=in_axes, out_axes=out_axes,
                    spmd_axis_name=SEEDS)

  def _call(*args):
    k = axis_size(SEEDS)
    if k == 1:
      return mapped(*args)
    for x, a in _mapped(args, in_axes):
      if x.shape[a] % k:
        raise ValueError(f"{x.shape[a]} seeds do not divide over the mesh's "
                         f"{k} `seeds` devices.")
    axes = in_axes if isinstance(in_axes, (tuple, list)) else (
        (in_axes,) * len(args))
    args = [_on_seeds(arg, a) if isinstance(a, int) else arg
            for arg, a in zip(args, axes)]
    out = mapped(*args)
    return _on_seeds(out, out_axes) if isinstance(out_axes, int) else out

  return _call


def _on_seeds(tree, axis: int):
  """Marks ``axis`` of every leaf as split over the ``seeds`` devices (the
  other axes left to the compiler: a batch stays on the ``data`` ones)."""
  free = P.UNCONSTRAINED

  def _mark(x):
    if x.ndim <= axis:
      return x
    return jax.lax.with_sharding_constraint(
        x, P(*(free,) * axis, SEEDS, *(free,) * (x.ndim - axis - 1)))

  return jax.tree.map(_mark, tree)


def _mapped(args, in_axes):
  """``(leaf, axis)`` of every leaf of ``args`` mapped by an integer axis
  (an ``in_axes`` entry that is itself a pytree is not inspected)."""
  axes = in_axes if isinstance(in_axes, (tuple, list)) else (
      (in_axes,) * len(args))
  return [(x, ax) for arg, ax in zip(args, axes) if isinstance(ax, int)
          for x in jax.tree.leaves(arg)]
