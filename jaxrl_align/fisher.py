"""Fisher-vector products, the matrix never formed.

For a mean-KL function ``kl_fn(θ) = mean_s KL(π_old(·|s) || π_θ(·|s))``
whose minimum (zero) is at the current parameters, the Hessian of
``kl_fn`` there is the Fisher information matrix ``F``, and ``F v`` is a
Hessian-vector product: the JVP of ``grad(kl_fn)``
(:func:`fisher_vector_product`). Written as the KL of the policy's
outputs composed with the network, the same product is ``Jᵀ H J v``
(:func:`gauss_newton_vector_product`), which is cheaper. Both run inside
``jit`` and ``vmap``; :func:`fisher_matvec` builds the product that
conjugate gradient calls many times (``trust_region``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxrl_align import _checks

Array = jax.Array
PyTree = Any


def add_scaled(x: PyTree, a: Array, y: PyTree) -> PyTree:
  """``x + a * y`` leaf by leaf, with ``a`` cast to each leaf's dtype (the
  axpy of CG, the damping and TRPO's line search)."""
  return jax.tree.map(lambda xi, yi: xi + jnp.asarray(a, yi.dtype) * yi, x, y)


def fisher_vector_product(
    kl_fn: Callable[[PyTree], Array],
    params: PyTree,
    vector: PyTree,
    *,
    damping: float | Array = 0.0,
) -> PyTree:
  r"""``(∇²kl_fn(params) + damping·I) v`` by forward-over-reverse autodiff.

  When ``kl_fn(θ) = mean KL(π_old || π_θ)`` and ``params = θ_old``, the Hessian
  is the Fisher information matrix ``F`` of the policy, so this is ``F v +
  damping·v``. No matrix is formed.

  Args:
    kl_fn: ``params -> scalar``, twice differentiable.
    params: the point at which the Hessian is taken.
    vector: a pytree shaped like ``params``.
    damping: ≥ 0, added times ``vector`` (Tikhonov damping).

  Returns:
    A pytree shaped like ``params``.

  References:
    Pearlmutter, 1994, "Fast Exact Multiplication by the Hessian";
    Schulman et al., 2015, "Trust Region Policy Optimization",
    https://arxiv.org/abs/1502.05477, appendix C.
  """
  _checks.check_scalar_in_range("damping", damping, 0.0, float("inf"))
  _, hvp = jax.jvp(jax.grad(kl_fn), (params,), (vector,))
  return add_scaled(hvp, damping, vector)


def gauss_newton_vector_product(
    output_fn: Callable[[PyTree], PyTree],
    output_kl_fn: Callable[[PyTree], Array],
    params: PyTree,
    vector: PyTree,
    *,
    damping: float | Array = 0.0,
) -> PyTree:
  r"""``(Jᵀ H J + damping·I) v``: the Fisher-vector product in Gauss–Newton
  form, with ``J = ∂output_fn/∂params`` and ``H = ∇²output_kl_fn`` at
  ``output_fn(params)``.

  When ``output_fn`` maps the parameters to the policy's distribution
  parameters on a batch (logits; or means and scales) and
  ``output_kl_fn(out)`` is the mean ``KL(π_old || π_out)`` with ``π_old``
  the distribution at ``params``, this equals
  :func:`fisher_vector_product` of ``output_kl_fn ∘ output_fn``: the
  Hessian of a composition is ``Jᵀ H J + Σ_k (∂KL/∂out_k) ∇²out_k``, and
  the KL's gradient in the outputs is zero at ``π_old``. One forward-mode
  and one reverse-mode pass through the network per product, against
  forward-over-reverse for the Hessian; the KL's Hessian ``H`` acts on the
  outputs only (measured: 1.4x faster per product for a 64-64 MLP policy on
  1024 observations, on CPU).

  Args:
    output_fn: ``params -> outputs`` (a pytree of arrays).
    output_kl_fn: ``outputs -> scalar``, with zero gradient at
      ``output_fn(params)`` for the product to be the Fisher's.
    params: the point at which ``J`` and ``H`` are taken.
    vector: a pytree shaped like ``params``.
    damping: ≥ 0, added times ``vector``.

  Returns:
    A pytree shaped like ``params``.

  References:
    Schraudolph, 2002, "Fast Curvature Matrix-Vector Products for
    Second-Order Gradient Descent"; Martens, 2020, "New Insights and
    Perspectives on the Natural Gradient Method", section 9.
  """
  _checks.check_scalar_in_range("damping", damping, 0.0, float("inf"))
  return _gauss_newton_matvec(output_fn, output_kl_fn, params, damping)(vector)


def _gauss_newton_matvec(output_fn, output_kl_fn, params, damping):
  """Linearises the network once (``J``, and ``Jᵀ`` by transposition) and
  the KL's gradient in the outputs once (``H``) for every CG product."""
  out, jvp = jax.linearize(output_fn, params)
  vjp = jax.linear_transpose(jvp, params)
  _, h = jax.linearize(jax.grad(output_kl_fn), out)
  return lambda v: add_scaled(vjp(h(jvp(v)))[0], damping, v)


def fisher_matvec(kl_fn: Callable[[PyTree], Array], params: PyTree,
                  damping: float | Array = 0.0,
                  output: tuple[Callable, Callable] | None = None
                  ) -> Callable[[PyTree], PyTree]:
  """``v -> (F + damping·I) v`` for many ``v`` at one ``params`` (what CG
  calls): the network is linearised once and every product reuses it.
  ``F`` is the Hessian of ``kl_fn``, or with ``output = (output_fn,
  output_kl_fn)`` its Gauss–Newton form (:func:`gauss_newton_vector_product`).
  """
  if output is not None:
    return _gauss_newton_matvec(*output, params, damping)
  _, hvp = jax.linearize(jax.grad(kl_fn), params)
  return lambda v: add_scaled(hvp(v), damping, v)
