"""Running mean and variance (Welford / Chan et al.) and normalisation.

The state keeps the population mean and variance of every sample seen so far
and their count. A batch is merged in one exact step (Chan, Golub & LeVeque's
parallel formula), so merging a batch equals feeding its samples one by one::

    stats = running_mean_std_init((obs_dim,))
    stats = running_mean_std_update(stats, obs_batch)      # [N, obs_dim]
    obs_n = normalize(stats, obs_batch, clip=10.0)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import _checks

Array = jax.Array


class RunningMeanStd(NamedTuple):
  """Running statistics of a stream of ``[*S]``-shaped samples.

  Attributes:
    mean: ``[*S]`` mean of the samples seen.
    var: ``[*S]`` population variance (divided by ``count``).
    count: scalar number of samples seen (float, so it can be traced).
  """
  mean: Array
  var: Array
  count: Array


def running_mean_std_init(shape: tuple[int, ...] = (),
                          dtype=jnp.float32) -> RunningMeanStd:
  """Empty statistics for samples of shape ``shape``.

  ``normalize`` of an empty state is the identity up to ``eps``: mean 0, var 1.

  Args:
    shape: the shape ``[*S]`` of one sample (non-negative ints).
    dtype: float dtype of the statistics (an integer one is refused).

  Returns:
    A :class:`RunningMeanStd` with count 0.
  """
  shape = tuple(shape)
  for size in shape:
    _checks.check_positive_int("shape", size, allow_zero=True)
  try:
    floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
  except TypeError:
    floating = False
  if not floating:
    raise ValueError(f"`dtype` must be a floating dtype, got "
                     f"{getattr(dtype, '__name__', dtype)}: the statistics "
                     f"are fractions.")
  return RunningMeanStd(mean=jnp.zeros(shape, dtype),
                        var=jnp.ones(shape, dtype),
                        count=jnp.zeros((), dtype))


def running_mean_std_update(state: RunningMeanStd, x: Array, *,
                            mask: Array | None = None) -> RunningMeanStd:
  r"""Merges a batch of samples into the statistics, exactly.

  With the batch's count ``n``, mean ``m_b`` and population variance ``v_b``,
  and ``δ = m_b - m``, ``N = c + n``:

  .. math::

    m' = m + \delta \frac{n}{N}, \qquad
    v' = \frac{v c + v_b n + \delta^2 c n / N}{N}, \qquad c' = N.

  Args:
    state: current statistics over samples of shape ``[*S]``.
    x: ``[*N, *S]``: any number of leading batch axes, then one sample.
    mask: optional ``[*N]`` bool; only selected samples are merged.

  Returns:
    Updated :class:`RunningMeanStd`. An empty batch leaves it unchanged.

  References:
    Chan, Golub & LeVeque, 1979, "Updating Formulae and a Pairwise Algorithm
    for Computing Sample Variances", Stanford CS tech report STAN-CS-79-773.
  """
  sample_rank = state.mean.ndim
  _checks.check_min_rank("x", x, sample_rank)
  if jnp.shape(x)[jnp.ndim(x) - sample_rank:] != state.mean.shape:
    raise ValueError(f"`x` must end with the sample shape {state.mean.shape}, "
                     f"got {jnp.shape(x)}.")
  dtype = state.mean.dtype
  batch_shape = jnp.shape(x)[:jnp.ndim(x) - sample_rank]
  x = jnp.asarray(x, dtype).reshape((-1,) + state.mean.shape)
  if mask is None:
    weight = jnp.ones((x.shape[0],), dtype)
  else:
    if jnp.shape(mask) != batch_shape:
      raise ValueError(f"`mask` must have shape {batch_shape}, got "
                       f"{jnp.shape(mask)}.")
    _checks.check_flags("mask", mask)
    weight = jnp.asarray(mask).astype(dtype).reshape(-1)
  weight = weight.reshape((-1,) + (1,) * sample_rank)

  n = jnp.sum(weight)
  safe_n = jnp.maximum(n, 1)
  batch_mean = jnp.sum(weight * x, axis=0) / safe_n
  centred = x - batch_mean[None]
  batch_var = jnp.sum(weight * centred * centred, axis=0) / safe_n

  total = state.count + n
  safe_total = jnp.maximum(total, 1)
  delta = batch_mean - state.mean
  mean = state.mean + delta * (n / safe_total)
  m2 = (state.var * state.count + batch_var * n
        + delta * delta * (state.count * n / safe_total))
  var = m2 / safe_total
  keep = n == 0
  return RunningMeanStd(mean=jnp.where(keep, state.mean, mean),
                        var=jnp.where(keep, state.var, var),
                        count=total)


def normalize(state: RunningMeanStd, x: Array, *, center: bool = True,
              clip: float | None = None, eps: float = 1e-8) -> Array:
  r"""``clip((x - mean) / sqrt(var + eps), -clip, clip)``.

  Args:
    state: statistics over samples of shape ``[*S]``.
    x: ``[*N, *S]``.
    center: subtract the mean (set False to only scale, as reward scaling
      does).
    clip: optional bound ``> 0`` on the magnitude of the result.
    eps: added to the variance, ``> 0``.

  Returns:
    ``[*N, *S]`` in the dtype of the statistics.
  """
  if clip is not None:
    _checks.check_scalar_in_range("clip", clip, 0.0, float("inf"),
                                  low_inclusive=False)
  _checks.check_scalar_in_range("eps", eps, 0.0, float("inf"),
                                low_inclusive=False)
  sample_rank = state.mean.ndim
  _checks.check_min_rank("x", x, sample_rank)
  if jnp.shape(x)[np.ndim(x) - sample_rank:] != state.mean.shape:
    raise ValueError(f"`x` must end with the sample shape {state.mean.shape}, "
                     f"got {jnp.shape(x)}.")
  dtype = state.mean.dtype
  x = jnp.asarray(x, dtype)
  lead = (1,) * (x.ndim - sample_rank)
  mean = state.mean.reshape(lead + state.mean.shape)
  std = jnp.sqrt(state.var + jnp.asarray(eps, dtype)).reshape(
      lead + state.mean.shape)
  y = (x - mean) / std if center else x / std
  if clip is not None:
    c = jnp.asarray(clip, dtype)
    y = jnp.clip(y, -c, c)
  return y


def whiten(x: Array, mask: Array | None = None, *, ddof: int = 0,
           shift_mean: bool = True, eps: float = 1e-8) -> Array:
  r"""Batch whitening, ``(x - mean) / (std + eps)``, over masked entries.

  The statistics of one batch (advantages before a policy step, rewards of a
  rollout), unlike :func:`normalize`'s running ones. With a ``mask``, only
  the selected entries enter the mean and standard deviation (padding
  tokens do not); every entry is transformed, so mask the result where it
  is used.

  ``std = sqrt(Σ m (x - mean)² / (Σ m - ddof))``. ``ddof = 0`` is what our
  learners use; ``ddof = 1`` matches PyTorch's ``Tensor.std`` (SB3, CleanRL,
  TRL's ``masked_whiten``). With ``shift_mean=False`` the mean is added
  back, so only the scale changes (TRL's reward whitening).

  Args:
    x: ``[*N]`` float.
    mask: optional ``[*N]`` bool; at least ``ddof + 1`` true entries.
    ddof: 0 or 1 (static).
    shift_mean: subtract the mean (static).
    eps: added to the standard deviation, ≥ 0.

  Returns:
    ``[*N]`` in the dtype of ``x``.

  Examples:
    >>> import jax.numpy as jnp
    >>> whiten(jnp.array([1.0, 3.0, 100.0]), jnp.array([True, True, False]))
    Array([-1.,  1., 98.], dtype=float32)
  """
  if isinstance(ddof, bool) or ddof not in (0, 1):
    raise ValueError(f"`ddof` must be 0 or 1, got {ddof!r}.")
  _checks.check_floating("x", x)
  _checks.check_scalar_in_range("eps", eps, 0.0, float("inf"))
  if mask is None:
    mean = jnp.mean(x)
    white = (x - mean) / (jnp.std(x, ddof=ddof) + eps)
  else:
    if jnp.shape(mask) != jnp.shape(x):
      raise ValueError(f"`mask` must have shape {jnp.shape(x)}, got "
                       f"{jnp.shape(mask)}.")
    _checks.check_flags("mask", mask)
    m = jnp.asarray(mask).astype(x.dtype)
    count = jnp.sum(m)
    mean = jnp.sum(x * m) / jnp.maximum(count, 1)
    var = jnp.sum(m * (x - mean) ** 2) / jnp.maximum(count - ddof, 1)
    white = (x - mean) / (jnp.sqrt(var) + eps)
  return white if shift_mean else white + mean
