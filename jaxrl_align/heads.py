"""Policy heads: the distribution a network's policy output parameterises.

A head is chosen once, from the action space, and every piece of a learner
that samples, scores or compares actions asks the head; no ``if discrete``
elsewhere. Each head is a small hashable object (a static part of a
learner) over the pure functions of :mod:`jaxrl_align.distributions`::

    head = heads.for_space(env.action_space(env_params))
    action = head.sample(key, out); log_p = head.log_prob(out, action)
    head.entropy(out); head.kl(old_out, new_out); head.mode(out)

``out`` is what the network's policy part returns for a batch of
observations ``[B, ...]``: logits ``[B, A]`` (:class:`Categorical`) or
``(mean [B, D], log_std [D])`` (:class:`DiagGaussian`), or
``(mean [B, D], log_std [F, D], features [B, F])`` (:class:`GSDEGaussian`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import distributions

Array = jax.Array


class Categorical(NamedTuple):
  """A categorical policy over ``num_actions`` actions; ``out`` = logits.

  Attributes:
    num_actions: number of actions.
  """
  num_actions: int

  @property
  def out_dim(self) -> int:
    """Size of the network's last layer."""
    return self.num_actions

  def extra_params(self, module) -> None:
    """Parameters the head adds to the network (none)."""
    del module

  def output(self, out: Array, extra, features: Array) -> Array:
    """What the network returns: the logits."""
    del extra, features
    return out

  def sample(self, key: Array, out: Array) -> Array:
    return distributions.categorical_sample(key, out)

  def noise(self, key: Array, batch_shape: tuple[int, ...]) -> Array:
    """Sampling noise drawn beforehand for ``batch_shape`` samples:
    standard Gumbel ``[*batch_shape, A]``, so that :meth:`sample_with` of
    it is :meth:`sample` with the same key, exactly."""
    return jax.random.gumbel(key, tuple(batch_shape) + (self.num_actions,))

  def sample_with(self, out, noise, xp=jnp):
    """The actions that ``noise`` (:meth:`noise`) picks for ``out``:
    ``argmax(logits + noise)`` (the Gumbel-max trick); ``xp``: ``jnp``,
    or ``numpy`` for a host that acts without a program."""
    return xp.argmax(out + noise, axis=-1).astype(xp.int32)

  def log_prob(self, out: Array, action: Array) -> Array:
    return distributions.categorical_log_prob(out, action)

  def entropy(self, out: Array) -> Array:
    return distributions.categorical_entropy(out)

  def kl(self, old_out: Array, new_out: Array) -> Array:
    """``KL(old || new)`` per sample (analytic)."""
    return distributions.categorical_kl(old_out, new_out)

  def mode(self, out: Array) -> Array:
    return distributions.categorical_mode(out)

  def every(self, out: Array, k: int) -> Array:
    """The outputs of every ``k``-th sample."""
    return out[::k]

  def with_log_std(self, params, log_std) -> Any:
    """Parameters with the initial log-std set (a categorical has none)."""
    del log_std
    return params


class DiagGaussian(NamedTuple):
  """A diagonal Gaussian policy with a state-independent log-std parameter;
  ``out = (mean [B, D], log_std [D])``.

  Attributes:
    action_dim: ``D``, the size of a (flattened) action.
  """
  action_dim: int

  @property
  def out_dim(self) -> int:
    return self.action_dim

  def extra_params(self, module) -> Array:
    """Creates the network's ``log_std`` parameter (zeros; set the initial
    value with :meth:`with_log_std`)."""
    return module.param("log_std", lambda _, shape: jnp.zeros(shape),
                        (self.action_dim,))

  def output(self, out: Array, extra: Array, features: Array):
    del features
    return out, extra

  def sample(self, key: Array, out) -> Array:
    return distributions.gaussian_sample(key, *out)

  def noise(self, key: Array, batch_shape: tuple[int, ...]) -> Array:
    """Sampling noise drawn beforehand for ``batch_shape`` samples:
    standard normal ``[*batch_shape, D]``, so that :meth:`sample_with` of
    it is :meth:`sample` with the same key, exactly."""
    return jax.random.normal(key, tuple(batch_shape) + (self.action_dim,))

  def sample_with(self, out, noise, xp=jnp):
    """The actions ``mean + exp(log_std) * noise`` (:meth:`noise`);
    ``xp``: ``jnp``, or ``numpy`` for a host that acts without a
    program."""
    mean, log_std = out
    std = xp.exp(log_std)
    return mean + std.reshape((1,) * (mean.ndim - std.ndim) + std.shape) * noise

  def log_prob(self, out, action: Array) -> Array:
    return distributions.gaussian_log_prob(*out, action)

  def entropy(self, out) -> Array:
    return distributions.gaussian_entropy(*out)

  def kl(self, old_out, new_out) -> Array:
    return distributions.gaussian_kl(*old_out, *new_out)

  def mode(self, out) -> Array:
    return distributions.gaussian_mode(*out)

  def every(self, out, k: int):
    # Only the mean is per-sample; the log-std is shared.
    return out[0][::k], out[1]

  def with_log_std(self, params, log_std):
    inner = dict(params["params"])
    inner["log_std"] = jnp.full_like(inner["log_std"], log_std)
    return {**params, "params": inner}


class GSDEGaussian(NamedTuple):
  """A Gaussian policy with generalized state-dependent exploration (gSDE).

  ``out = (mean [B, D], log_std [F, D], features [B, F])``: ``features``
  are the actor's last hidden layer with the gradient stopped (SB3's
  default ``learn_features=False``). During a rollout the action is
  ``mean + θᵀ features`` with an exploration matrix ``θ ~ N(0, σ²)`` drawn
  by :meth:`exploration_matrix` and held for several steps; scored on its
  own the action is ``N(mean, Σ(s))``, ``Σ_j = Σ_i f_i² σ_ij²``
  (:func:`~jaxrl_align.distributions.gsde_log_std`), which is what
  :meth:`log_prob`, :meth:`entropy`, :meth:`kl` and :meth:`sample` use.

  Attributes:
    action_dim: ``D``.
    latent_dim: ``F``, the size of the actor's last hidden layer.
  """
  action_dim: int
  latent_dim: int

  @property
  def out_dim(self) -> int:
    return self.action_dim

  def extra_params(self, module) -> Array:
    """Creates the ``[F, D]`` ``log_std`` parameter."""
    return module.param("log_std", lambda _, shape: jnp.zeros(shape),
                        (self.latent_dim, self.action_dim))

  def output(self, out: Array, extra: Array, features: Array):
    return out, extra, jax.lax.stop_gradient(features)

  def _gaussian(self, out):
    mean, log_std, features = out
    return mean, distributions.gsde_log_std(features, log_std)

  def sample(self, key: Array, out) -> Array:
    """A sample with a fresh exploration matrix (``N(mean, Σ(s))``)."""
    return distributions.gaussian_sample(key, *self._gaussian(out))

  def explore(self, out, matrix: Array) -> Array:
    """``mean + θᵀ features`` with ``matrix`` ``θ`` ``[B, F, D]``."""
    return out[0] + distributions.gsde_noise(out[2], matrix)

  def exploration_matrix(self, key: Array, params, batch: int) -> Array:
    """``[batch, F, D]`` matrices ``θ ~ N(0, σ²)`` from the params' log-std."""
    return distributions.gsde_exploration_matrix(
        key, params["params"]["log_std"], (batch,))

  def log_prob(self, out, action: Array) -> Array:
    return distributions.gaussian_log_prob(*self._gaussian(out), action)

  def entropy(self, out) -> Array:
    return distributions.gaussian_entropy(*self._gaussian(out))

  def kl(self, old_out, new_out) -> Array:
    return distributions.gaussian_kl(*self._gaussian(old_out),
                                     *self._gaussian(new_out))

  def mode(self, out) -> Array:
    return out[0]

  def every(self, out, k: int):
    return out[0][::k], out[1], out[2][::k]

  def with_log_std(self, params, log_std):
    return DiagGaussian.with_log_std(self, params, log_std)


def for_space(space, sde_latent_dim: int | None = None):
  """The head for an action space: ``Discrete`` → :class:`Categorical`,
  ``Box`` → :class:`DiagGaussian` (flattened). gymnax and Gymnasium spaces
  both work.

  Args:
    space: the action space.
    sde_latent_dim: with gSDE, the size of the actor's last hidden layer:
      a ``Box`` space gets :class:`GSDEGaussian`.

  Returns:
    A head.

  Raises:
    ValueError: any other space (``MultiDiscrete``, ``Dict``, ...), or
      gSDE for a ``Discrete`` one.
  """
  kind = type(space).__name__
  if kind == "Discrete" and sde_latent_dim is None:
    return Categorical(int(space.n))
  if kind == "Box":
    dim = int(np.prod(space.shape))
    return (DiagGaussian(dim) if sde_latent_dim is None
            else GSDEGaussian(dim, sde_latent_dim))
  raise ValueError(f"Unsupported action space {space}: the learners take "
                   f"Discrete or Box actions (gSDE: Box only).")
