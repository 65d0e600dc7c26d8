"""Actor and critic networks (Flax linen), with a vmap-safe orthogonal init.

The agents need only this interface from a network::

    params = network.init(key, obs)                   # obs [B, *obs_shape]
    policy_out, value = network.apply(params, obs)    # value [B]

where ``policy_out`` is what the network's policy head
(:mod:`jaxrl_align.heads`) reads: ``logits [B, A]`` for a categorical policy,
``(mean [B, D], log_std [D])`` for a diagonal Gaussian one (and the
actor's last hidden layer as well for gSDE). Any module with
that interface can replace :class:`ActorCritic`.

Orthogonal initialisation without QR. jaxlib's CPU QR, batched inside
``jit(vmap(...))`` (which is what ``vmap(train)`` over seeds does with
``flax.linen.initializers.orthogonal``), intermittently deadlocks on 2-core
machines. :func:`orthogonal` computes the same distribution from matrix
products only: the polar factor of a Gaussian matrix is Haar-distributed on
the orthogonal group (or the Stiefel manifold, for rectangular shapes), and
the Newton–Schulz iteration ``X ← X (3I - XᵀX) / 2`` converges to it.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

_NEWTON_SCHULZ_STEPS = 60


def _polar_factor(g: Array) -> Array:
  """``g (gᵀg)^{-1/2}`` for a tall ``[m, n]`` matrix, by Newton–Schulz."""
  # Scaling by the Frobenius norm puts every singular value in (0, 1], inside
  # the iteration's region of convergence (0, √3). Small singular values grow
  # by ≈1.5x per step until they near 1, then converge quadratically; with
  # 60 steps a singular value as small as 1e-9 of the norm converges.
  x = g / jnp.linalg.norm(g)
  eye = jnp.eye(g.shape[1], dtype=g.dtype)

  def _step(x, _):
    return 0.5 * x @ (3.0 * eye - x.T @ x), None

  x, _ = jax.lax.scan(_step, x, None, length=_NEWTON_SCHULZ_STEPS)
  return x


def orthogonal(scale: float = 1.0):
  """Orthogonal initialiser (Saxe et al. 2014) using matrix products only.

  Args:
    scale: multiplies the orthogonal matrix.

  Returns:
    A Flax initialiser ``(key, shape, dtype) -> array`` for a 2-D kernel
    ``[fan_in, fan_out]``: orthonormal columns when ``fan_in ≥ fan_out``,
    orthonormal rows otherwise.

  References:
    Saxe et al., 2014, "Exact solutions to the nonlinear dynamics of learning
    in deep linear neural networks", https://arxiv.org/abs/1312.6120.
  """
  def init(key, shape, dtype=jnp.float32):
    if len(shape) != 2:
      raise ValueError(f"orthogonal init needs a 2-D shape, got {shape}.")
    rows, cols = shape
    tall = rows >= cols
    g = jax.random.normal(key, (rows, cols) if tall else (cols, rows),
                          jnp.float32)
    q = _polar_factor(g)
    return (scale * (q if tall else q.T)).astype(dtype)

  return init


def torch_default_dense(size: int, fan_in: int) -> nn.Dense:
  """A dense layer initialised as PyTorch's ``nn.Linear``: weights and
  biases ``U(-1/√fan_in, 1/√fan_in)`` (SB3's ``ortho_init=False``)."""
  bound = fan_in ** -0.5

  def bias_init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return nn.Dense(size, kernel_init=nn.initializers.variance_scaling(
      1.0 / 3.0, "fan_in", "uniform"), bias_init=bias_init)


ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


class MLP(nn.Module):
  """MLP with orthogonal init: ``√2`` hidden, ``out_scale`` output (SB3's
  scales, for either activation).

  Attributes:
    hidden: hidden layer sizes.
    out_dim: output size.
    out_scale: scale of the output layer's orthogonal init.
    with_features: *static* also return the last hidden layer.
    ortho_init: orthogonal init (else PyTorch's default,
      :func:`torch_default_dense`).
    activation: of the hidden layers, a key of :data:`ACTIVATIONS`
      (``"tanh"``, SB3's default; ``"relu"``, the Zoo's MuJoCo entries).
  """
  hidden: Sequence[int]
  out_dim: int
  out_scale: float = 1.0
  with_features: bool = False
  ortho_init: bool = True
  activation: str = "tanh"

  def _dense(self, size, fan_in, scale):
    if not self.ortho_init:
      return torch_default_dense(size, fan_in)
    return nn.Dense(size, kernel_init=orthogonal(scale),
                    bias_init=nn.initializers.zeros)

  @nn.compact
  def __call__(self, x: Array):
    """``x [B, in]`` -> ``[B, out_dim]`` (and ``[B, hidden[-1]]``)."""
    act = ACTIVATIONS[self.activation]
    for size in self.hidden:
      x = act(self._dense(size, x.shape[-1], 2.0 ** 0.5)(x))
    out = self._dense(self.out_dim, x.shape[-1], self.out_scale)(x)
    return (out, x) if self.with_features else out


class ActorCritic(nn.Module):
  """Separate actor and critic MLPs; the head shapes the policy output.

  Attributes:
    head: the policy head (:mod:`jaxrl_align.heads`); the actor's last
      layer has ``head.out_dim`` units and the head may add parameters (a
      Gaussian's state-independent ``log_std``).
    hidden: hidden sizes of both MLPs.
    ortho_init: orthogonal init (else PyTorch's default).
    activation: of both MLPs' hidden layers (:data:`ACTIVATIONS`).
  """
  head: Any
  hidden: Sequence[int] = (64, 64)
  ortho_init: bool = True
  activation: str = "tanh"

  @nn.compact
  def __call__(self, obs: Array):
    """``obs [B, *obs_shape]`` -> ``(policy_out, value [B])``."""
    x = obs.reshape((obs.shape[0], -1))
    out, features = MLP(self.hidden, self.head.out_dim, out_scale=0.01,
                        with_features=True, ortho_init=self.ortho_init,
                        activation=self.activation, name="actor")(x)
    value = MLP(self.hidden, 1, out_scale=1.0, ortho_init=self.ortho_init,
                activation=self.activation, name="critic")(x)[:, 0]
    extra = self.head.extra_params(self)
    return self.head.output(out, extra, features), value

  def actor_arrays(self, params):
    """``(layers, extra)``: the actor's dense layers as ``(kernel [in,
    out], bias [out])`` pairs in order, the last one the policy output's,
    and the head's own parameter (``log_std``; None for a categorical):
    what an actor outside JAX needs (:mod:`jaxrl_align.agents.host_actor`).
    """
    inner = params["params"]
    actor = inner["actor"]
    layers = tuple((actor[f"Dense_{i}"]["kernel"], actor[f"Dense_{i}"]["bias"])
                   for i in range(len(self.hidden) + 1))
    return layers, inner.get("log_std")
