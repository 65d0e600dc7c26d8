"""Action distributions as pure functions over arrays.

Two families, each with ``sample``, ``log_prob``, ``entropy``, ``kl`` and
``mode``:

* categorical, parameterised by unnormalised ``logits`` ``[*B, A]``; a logit of
  ``-inf`` masks an action out (its probability is exactly zero and it adds
  nothing, not NaN, to the entropy or the KL);
* diagonal Gaussian, parameterised by ``mean`` and ``log_std`` ``[*B, D]``.
  A state-independent log-std is the caller's choice: pass a ``[D]`` vector and
  it is broadcast explicitly against ``mean``.

``kl(p, q)`` is always ``KL(p || q) = E_p[log p - log q]``, analytic.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxrl_align import _checks

Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------- categorical


def _check_logits(logits):
  _checks.check_min_rank("logits", logits, 1)
  _checks.check_floating("logits", logits)
  _checks.check_non_empty("logits", logits, axis=-1)


def categorical_sample(key: Array, logits: Array) -> Array:
  """Samples actions from ``softmax(logits)``.

  Args:
    key: a PRNG key.
    logits: ``[*B, A]`` unnormalised log-probabilities.

  Returns:
    ``[*B]`` int32 action indices.
  """
  _check_logits(logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def categorical_log_prob(logits: Array, action: Array) -> Array:
  r"""``log softmax(logits)[action]``.

  Args:
    logits: ``[*B, A]`` unnormalised log-probabilities.
    action: ``[*B]`` integer actions in ``[0, A)``.

  Returns:
    ``[*B]`` log-probabilities in the dtype of ``logits``.

  Raises:
    ValueError: ``action`` is not of an integer dtype (a float would be
      truncated; refused under ``jit`` too), a concrete action is outside
      ``[0, A)`` (``-1`` would read the last class, ``A`` NaN), or the
      shapes do not match.
  """
  _check_logits(logits)
  if jnp.shape(action) != jnp.shape(logits)[:-1]:
    raise ValueError(f"`action` must have shape {jnp.shape(logits)[:-1]} "
                     f"(logits without the last axis), got {jnp.shape(action)}.")
  _checks.check_index("action", action, jnp.shape(logits)[-1])
  log_p = jax.nn.log_softmax(logits, axis=-1)
  index = jnp.asarray(action).astype(jnp.int32)[..., None]
  return jnp.take_along_axis(log_p, index, axis=-1)[..., 0]


def categorical_entropy(logits: Array) -> Array:
  r"""Entropy ``H = -\sum_a p_a \log p_a``, with ``0 log 0 = 0``.

  Args:
    logits: ``[*B, A]``.

  Returns:
    ``[*B]`` entropies (nats).
  """
  _check_logits(logits)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(log_p)
  # Zero the log first so masked actions give 0, not 0 * -inf, in the
  # value and in the gradient.
  return -jnp.sum(p * jnp.where(p > 0, log_p, 0), axis=-1)


def categorical_kl(logits_p: Array, logits_q: Array) -> Array:
  r"""``KL(p || q) = \sum_a p_a (\log p_a - \log q_a)``.

  Actions with ``p_a = 0`` contribute nothing; an action with ``p_a > 0`` and
  ``q_a = 0`` gives ``+inf``, as it should.

  Args:
    logits_p: ``[*B, A]`` logits of ``p``.
    logits_q: ``[*B, A]`` logits of ``q``.

  Returns:
    ``[*B]`` KL divergences (nats).
  """
  _check_logits(logits_p)
  _checks.check_same_shape(logits_p=logits_p, logits_q=logits_q)
  log_p = jax.nn.log_softmax(logits_p, axis=-1)
  log_q = jax.nn.log_softmax(logits_q, axis=-1)
  p = jnp.exp(log_p)
  return jnp.sum(p * jnp.where(p > 0, log_p - log_q, 0), axis=-1)


def categorical_mode(logits: Array) -> Array:
  """Most probable action (lowest index on ties).

  Args:
    logits: ``[*B, A]``.

  Returns:
    ``[*B]`` int32 actions.
  """
  _check_logits(logits)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


# ------------------------------------------------------------ diagonal Gaussian


def _broadcast_gaussian(mean, log_std):
  _checks.check_min_rank("mean", mean, 1)
  _checks.check_floating("mean", mean)
  _checks.check_floating("log_std", log_std)
  try:
    shape = jnp.broadcast_shapes(jnp.shape(mean), jnp.shape(log_std))
  except ValueError:
    shape = None
  if shape != jnp.shape(mean):
    raise ValueError(f"`log_std` of shape {jnp.shape(log_std)} does not "
                     f"broadcast to `mean` of shape {jnp.shape(mean)}.")
  return jnp.broadcast_to(log_std, jnp.shape(mean))


def gaussian_sample(key: Array, mean: Array, log_std: Array) -> Array:
  """Samples ``mean + exp(log_std) * ε``, ``ε ~ N(0, I)``.

  Args:
    key: a PRNG key.
    mean: ``[*B, D]``.
    log_std: ``[*B, D]`` or any shape that broadcasts to it (e.g. ``[D]``).

  Returns:
    ``[*B, D]`` actions in the dtype of ``mean``.
  """
  log_std = _broadcast_gaussian(mean, log_std)
  noise = jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean))
  return mean + jnp.exp(log_std) * noise


def gaussian_log_prob(mean: Array, log_std: Array, action: Array) -> Array:
  r"""Log-density of a diagonal Gaussian, summed over the last axis.

  .. math::

    \log p(x) = -\sum_i \Big[\frac{(x_i - \mu_i)^2}{2\sigma_i^2}
                + \log \sigma_i + \tfrac12 \log 2\pi\Big]

  Args:
    mean: ``[*B, D]``.
    log_std: broadcastable to ``[*B, D]``.
    action: ``[*B, D]``.

  Returns:
    ``[*B]`` log-densities.
  """
  log_std = _broadcast_gaussian(mean, log_std)
  _checks.check_same_shape(mean=mean, action=action)
  z = (action - mean) * jnp.exp(-log_std)
  return -jnp.sum(0.5 * z * z + log_std + 0.5 * _LOG_2PI, axis=-1)


def gaussian_entropy(mean: Array, log_std: Array) -> Array:
  r"""``H = \sum_i (\log \sigma_i + \tfrac12 \log 2\pi e)``.

  Args:
    mean: ``[*B, D]`` (fixes the output shape; the entropy does not depend on
      its values).
    log_std: broadcastable to ``[*B, D]``.

  Returns:
    ``[*B]`` entropies (nats).
  """
  log_std = _broadcast_gaussian(mean, log_std)
  return jnp.sum(log_std + 0.5 * (_LOG_2PI + 1.0), axis=-1)


def gaussian_kl(mean_p: Array, log_std_p: Array, mean_q: Array,
                log_std_q: Array) -> Array:
  r"""``KL(p || q)`` between diagonal Gaussians.

  .. math::

    \sum_i \Big[\log\frac{\sigma_{q,i}}{\sigma_{p,i}}
    + \frac{\sigma_{p,i}^2 + (\mu_{p,i} - \mu_{q,i})^2}{2\sigma_{q,i}^2}
    - \tfrac12\Big]

  Args:
    mean_p: ``[*B, D]``.
    log_std_p: broadcastable to ``[*B, D]``.
    mean_q: ``[*B, D]``.
    log_std_q: broadcastable to ``[*B, D]``.

  Returns:
    ``[*B]`` KL divergences (nats).
  """
  log_std_p = _broadcast_gaussian(mean_p, log_std_p)
  log_std_q = _broadcast_gaussian(mean_q, log_std_q)
  _checks.check_same_shape(mean_p=mean_p, mean_q=mean_q)
  var_ratio = jnp.exp(2.0 * (log_std_p - log_std_q))
  z = (mean_p - mean_q) * jnp.exp(-log_std_q)
  return jnp.sum(log_std_q - log_std_p + 0.5 * (var_ratio + z * z) - 0.5,
                 axis=-1)


def gaussian_mode(mean: Array, log_std: Array) -> Array:
  """The most probable action, ``mean``.

  Args:
    mean: ``[*B, D]``.
    log_std: broadcastable to ``[*B, D]`` (checked, otherwise unused).

  Returns:
    ``[*B, D]``.
  """
  _broadcast_gaussian(mean, log_std)
  return mean


# ---------------------------------------- generalized state-dependent noise


def gsde_log_std(features: Array, log_std: Array, *, eps: float = 1e-6
                 ) -> Array:
  r"""Per-action log-std of gSDE's Gaussian: the noise ``ε(s) = θᵀf(s)``
  with ``θ_ij ~ N(0, σ_ij²)`` has variance

  .. math::

    \Sigma_j(s) = \sum_i f_i(s)^2 \sigma_{ij}^2 + \text{eps},
    \qquad \sigma_{ij} = \exp(\text{log\_std}_{ij}),

  so the action ``μ(s) + θᵀf(s)`` is ``N(μ(s), diag Σ(s))`` for a fresh
  ``θ``; its log-probability, entropy and KL are the diagonal Gaussian's
  with the returned ``log σ(s) = ½ log Σ(s)``. ``eps`` keeps ``Σ > 0`` where
  the features vanish (SB3 adds 1e-6 as well).

  Args:
    features: ``[*B, F]`` latent features ``f(s)`` (gSDE stops their
      gradient; that is the caller's choice).
    log_std: ``[F, D]`` log-stds of the exploration matrix's entries.
    eps: added to the variance, ≥ 0.

  Returns:
    ``[*B, D]`` log-stds.

  References:
    Raffin, Kober & Stulp, 2022, "Smooth Exploration for Robotic
    Reinforcement Learning", https://arxiv.org/abs/2005.05719, eq. (3)–(4).
  """
  _checks.check_min_rank("features", features, 1)
  _checks.check_floating("features", features)
  _checks.check_floating("log_std", log_std)
  if jnp.ndim(log_std) != 2 or jnp.shape(log_std)[0] != jnp.shape(features)[-1]:
    raise ValueError(f"`log_std` must be [F, D] with F = {jnp.shape(features)[-1]}"
                     f" (the features' last axis), got {jnp.shape(log_std)}.")
  _checks.check_scalar_in_range("eps", eps, 0.0, float("inf"))
  variance = jnp.square(features) @ jnp.exp(2.0 * log_std)
  return 0.5 * jnp.log(variance + eps)


def gsde_exploration_matrix(key: Array, log_std: Array,
                            batch_shape: tuple[int, ...] = ()) -> Array:
  """Samples exploration matrices ``θ ~ N(0, σ²)`` element-wise.

  Args:
    key: a PRNG key.
    log_std: ``[F, D]``, ``σ = exp(log_std)``.
    batch_shape: leading shape, e.g. ``(N,)`` for one matrix per env.

  Returns:
    ``[*batch_shape, F, D]`` in the dtype of ``log_std``.
  """
  _checks.check_floating("log_std", log_std)
  shape = tuple(batch_shape) + jnp.shape(log_std)
  std = jnp.broadcast_to(jnp.exp(log_std), shape)
  return jax.random.normal(key, shape, jnp.result_type(log_std)) * std


def gsde_noise(features: Array, matrix: Array) -> Array:
  r"""gSDE's action noise ``ε_j(s) = \sum_i f_i(s) θ_{ij}``.

  Args:
    features: ``[*B, F]``.
    matrix: ``[*B, F, D]`` (one matrix per sample) or ``[F, D]`` (shared).

  Returns:
    ``[*B, D]``.
  """
  _checks.check_min_rank("features", features, 1)
  if jnp.ndim(matrix) == 2:
    return features @ matrix
  _checks.check_same_shape(features=features, matrix_rows=matrix[..., 0])
  return jnp.einsum("...f,...fd->...d", features, matrix)
