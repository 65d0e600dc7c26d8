"""An on-policy learner's actor in NumPy, for environments stepped on the host.

A rollout stepped by Gymnasium (:mod:`jaxrl_align.host.stepping`) needs an
action every step. Launching an XLA program for it costs more on a CPU
than a MuJoCo step itself (about 150 µs against 70-130 µs: docs/agents.md,
"MuJoCo"), so the host acts without one. Once per rollout the learner's
jitted ``prepare`` (:func:`jaxrl_align.agents.on_policy.stepping`) gives
an :class:`ActorArrays`: the actor's layers, its head's parameters, the
observation statistics, and the whole rollout's sampling noise, drawn
beforehand by the head from the learner's key. :class:`HostActor` then
does each step in NumPy, float32, in the order of the JAX code it
mirrors:

* :meth:`HostActor.observe`: a step's observations merged into the running
  statistics, then normalised and clipped
  (:class:`~jaxrl_align.envs.NormalizeObservation` over
  :func:`~jaxrl_align.normalization.running_mean_std_update`, per seed);
* :meth:`HostActor.act`: the actor MLP
  (:class:`~jaxrl_align.networks.MLP`), then the head's ``sample_with``
  of that step's noise (:mod:`jaxrl_align.heads`).

What the learner trains on is not taken from here: its ``replay`` feeds the
rollout's raw steps through the JAX wrappers and computes the
log-probabilities and values of the actions taken in one program. NumPy and
XLA may round differently, which moves a sampled action by float32
rounding; the learner is never told a log-probability of an action other
than the one taken.

Every array has a leading seed axis ``S`` (one learner state per seed, as
the host programs are vmapped): observations ``[S, N, *obs_shape]``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from jaxrl_align import normalization

# The hidden activations of :data:`jaxrl_align.networks.ACTIVATIONS`.
ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0)}


class ActorArrays(NamedTuple):
  """What a host actor needs for one rollout, every leaf ``[S, ...]``.

  Attributes:
    layers: the actor MLP's ``(kernel [S, in, out], bias [S, out])``, in
      order, the last one the head's output layer
      (:meth:`~jaxrl_align.networks.ActorCritic.actor_arrays`).
    extra: the head's own parameters (a Gaussian's ``log_std [S, D]``), or
      None.
    obs_stats: the running observation statistics
      (:class:`~jaxrl_align.normalization.RunningMeanStd`), or None when
      observations are not normalised.
    noise: ``[S, T, N, ...]``, the head's ``noise`` for the rollout's
      ``T`` steps of ``N`` environments.
  """
  layers: tuple
  extra: Any
  obs_stats: normalization.RunningMeanStd | None
  noise: Any


class HostActor:
  """Normalises observations and samples actions in NumPy (module doc).

  Args:
    head: the policy's head (:mod:`jaxrl_align.heads`: ``output`` and
      ``sample_with``).
    activation: the MLP's hidden activation, a key of :data:`ACTIVATIONS`.
    obs_clip: the observation normalisation's clip; None: observations are
      not normalised.
    eps: added to the variance before its square root (as
      :func:`~jaxrl_align.normalization.normalize`).
  """

  def __init__(self, head, activation: str, obs_clip: float | None,
               eps: float = 1e-8):
    if activation not in ACTIVATIONS:
      raise ValueError(f"No NumPy activation {activation!r}; known: "
                       f"{sorted(ACTIVATIONS)}.")
    self._head = head
    self._activation = ACTIVATIONS[activation]
    self._clip = None if obs_clip is None else np.float32(obs_clip)
    self._eps = np.float32(eps)
    self._arrays = None

  def load(self, arrays: ActorArrays) -> None:
    """Takes one rollout's arrays (host arrays: fetch them once, with
    ``jax.device_get``), shaped for the steps: a bias and a head
    parameter get an axis for the environments."""
    as32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    self._layers = [(as32(w), as32(b)[:, None]) for w, b in arrays.layers]
    self._extra = (None if arrays.extra is None
                   else as32(arrays.extra)[:, None])
    self._noise = np.asarray(arrays.noise)
    if arrays.obs_stats is None:
      self._stats = None
    else:
      mean, var, count = (as32(x) for x in arrays.obs_stats)
      self._stats = [mean, var, count.reshape(
          count.shape + (1,) * (mean.ndim - 1))]

  @property
  def statistics(self):
    """``(mean [S, ...], var [S, ...], count [S])`` as they stand, or
    None."""
    if self._stats is None:
      return None
    mean, var, count = self._stats
    return mean, var, count.reshape(count.shape[:1])

  def observe(self, obs: np.ndarray) -> np.ndarray:
    """``obs [S, N, ...]`` as the learner sees it: merged into the
    statistics (every seed's own), then normalised and clipped; unchanged
    without normalisation."""
    if self._stats is None:
      return obs
    mean, var, count = self._stats
    x = np.asarray(obs, np.float32)
    n = np.float32(x.shape[1])
    # ufuncs called directly: ndarray.sum and np.clip add a Python layer
    # that costs more than the arithmetic at these sizes.
    total = count + n
    if x.shape[1] == 1:  # one env: its batch variance is exactly 0
      delta = x[:, 0] - mean
      mean = mean + delta * (n / total)
      var = (var * count + delta * delta * (count * n / total)) / total
    else:
      batch_mean = np.add.reduce(x, axis=1) / n
      centred = x - batch_mean[:, None]
      batch_var = np.add.reduce(centred * centred, axis=1) / n
      delta = batch_mean - mean
      mean = mean + delta * (n / total)
      var = (var * count + batch_var * n
             + delta * delta * (count * n / total)) / total
    self._stats = [mean, var, total]
    y = (x - mean[:, None]) / np.sqrt(var + self._eps)[:, None]
    return np.minimum(np.maximum(y, -self._clip), self._clip)

  def act(self, obs: np.ndarray, t: int) -> np.ndarray:
    """Step ``t``'s actions ``[S, N, ...]`` for ``obs [S, N, ...]`` (as
    :meth:`observe` returned them)."""
    x = obs.reshape(obs.shape[:2] + (-1,))
    *hidden, (kernel, bias) = self._layers
    for w, b in hidden:
      x = self._activation(np.matmul(x, w) + b)
    out = self._head.output(np.matmul(x, kernel) + bias, self._extra, None)
    return self._head.sample_with(out, self._noise[:, t], xp=np)
