"""Natural-gradient trust-region steps: CG, Fisher-vector products, TRPO, NPG.

Parameters are any pytree of float arrays. Everything runs inside ``jit`` and
``vmap`` (loops are ``lax.while_loop``), is deterministic (CG starts from
zero), and never returns NaN parameters: a step that cannot be computed
safely (zero gradient, ``sᵀFs ≤ 0``, a non-finite loss) is rejected and the
parameters come back bit-identical.

The Fisher matrix is never formed: its products are :mod:`jaxrl_align.fisher`'s
(the Hessian of the mean KL at the current parameters, or its Gauss–Newton
form).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax.tree_utils as otu

from jaxrl_align import _checks
from jaxrl_align import fisher

Array = jax.Array
PyTree = Any


def _scale(a: Array, x: PyTree) -> PyTree:
  return jax.tree.map(lambda xi: jnp.asarray(a, xi.dtype) * xi, x)


def _select(pred: Array, on_true: PyTree, on_false: PyTree) -> PyTree:
  return jax.tree.map(lambda t, f: jnp.where(pred, t, f), on_true, on_false)


# ---------------------------------------------------------- conjugate gradient


class CGInfo(NamedTuple):
  """Diagnostics of :func:`conjugate_gradient_with_info`.

  Attributes:
    residual_norm: scalar ``‖b - A x‖`` (by the CG recurrence) at exit.
    iterations: scalar int32, the number of iterations run.
  """
  residual_norm: Array
  iterations: Array


class _CGCarry(NamedTuple):
  x: PyTree
  r: PyTree
  p: PyTree
  rr: Array
  i: Array
  broke_down: Array


def conjugate_gradient_with_info(
    matvec: Callable[[PyTree], PyTree],
    b: PyTree,
    *,
    iters: int,
    tol: float = 1e-10,
) -> tuple[PyTree, CGInfo]:
  r"""Conjugate gradient for ``A x = b``, ``A`` symmetric positive definite.

  Starts from ``x = 0`` and runs at most ``iters`` iterations, stopping early
  once ``‖r‖² ≤ tol``. If a search direction ``p`` has ``pᵀAp ≤ 0`` or a
  non-finite value (``A`` not positive definite along ``p``), it stops and
  keeps the last iterate: no division by zero, no NaN.

  Args:
    matvec: ``x -> A x`` on pytrees shaped like ``b``.
    b: right-hand side, a pytree of float arrays.
    iters: maximum number of iterations, a Python int > 0.
    tol: stopping threshold on the squared residual norm, ≥ 0.

  Returns:
    ``(x, CGInfo)``, ``x`` shaped like ``b``.

  References:
    Hestenes & Stiefel, 1952, "Methods of Conjugate Gradients for Solving
    Linear Systems"; Nocedal & Wright, 2006, "Numerical Optimization",
    algorithm 5.2.
  """
  _checks.check_positive_int("iters", iters)
  _checks.check_scalar_in_range("tol", tol, 0.0, float("inf"))
  rr0 = otu.tree_vdot(b, b)
  dtype = jnp.result_type(rr0)
  tol = jnp.asarray(tol, dtype)

  def _cond(c: _CGCarry):
    return (c.i < iters) & (c.rr > tol) & ~c.broke_down

  def _iteration(c: _CGCarry) -> _CGCarry:
    ap = matvec(c.p)
    pap = otu.tree_vdot(c.p, ap)
    ok = (pap > 0) & jnp.isfinite(pap)
    alpha = jnp.where(ok, c.rr / jnp.where(ok, pap, 1), 0)
    x = fisher.add_scaled(c.x, alpha, c.p)
    r = fisher.add_scaled(c.r, -alpha, ap)
    rr = otu.tree_vdot(r, r)
    ok = ok & jnp.isfinite(rr)
    beta = jnp.where(ok, rr / jnp.where(c.rr > 0, c.rr, 1), 0)
    p = fisher.add_scaled(r, beta, c.p)
    new = _CGCarry(x, r, p, rr, c.i + 1, ~ok)
    old = c._replace(i=c.i + 1, broke_down=~ok)
    return _select(ok, new, old)

  init = _CGCarry(x=otu.tree_zeros_like(b), r=b, p=b, rr=rr0,
                  i=jnp.zeros((), jnp.int32), broke_down=jnp.zeros((), bool))
  out = jax.lax.while_loop(_cond, _iteration, init)
  return out.x, CGInfo(residual_norm=jnp.sqrt(out.rr), iterations=out.i)


def conjugate_gradient(
    matvec: Callable[[PyTree], PyTree],
    b: PyTree,
    *,
    iters: int,
    tol: float = 1e-10,
) -> PyTree:
  """Solves ``matvec(x) = b`` by conjugate gradient; see
  :func:`conjugate_gradient_with_info` for the details.

  Args:
    matvec: ``x -> A x``, ``A`` symmetric positive definite.
    b: pytree of float arrays.
    iters: maximum number of iterations, a Python int > 0.
    tol: stopping threshold on ``‖r‖²``.

  Returns:
    ``x``, shaped like ``b``.

  Examples:
    >>> import jax.numpy as jnp
    >>> a = jnp.array([[4.0, 1.0], [1.0, 3.0]])
    >>> x = conjugate_gradient(lambda v: a @ v, jnp.array([1.0, 2.0]), iters=2)
    >>> [round(float(v), 4) for v in x]
    [0.0909, 0.6364]
  """
  return conjugate_gradient_with_info(matvec, b, iters=iters, tol=tol)[0]


# ------------------------------------------------------------------ TRPO, NPG


class TRPOInfo(NamedTuple):
  """Diagnostics of one :func:`trpo_step` or :func:`npg_step`.

  Attributes:
    loss: scalar loss at the incoming parameters.
    kl: scalar ``kl_fn`` at the returned parameters (0 when rejected).
    loss_improvement: scalar ``loss(old) - loss(new)`` (0 when rejected).
    expected_improvement: scalar first-order improvement ``-gᵀΔ`` of the full
      natural step (before backtracking); 0 when no step could be computed.
    accepted: scalar bool, the parameters moved.
    step_fraction: scalar fraction of the full step taken (0 when rejected).
    cg_residual: scalar ``‖(F + damping·I) s + g‖`` left by conjugate
      gradient (NaN only when the gradient itself is).
    cg_iterations: scalar int32.
    backtracks: scalar int32, candidate steps evaluated by the line search.
  """
  loss: Array
  kl: Array
  loss_improvement: Array
  expected_improvement: Array
  accepted: Array
  step_fraction: Array
  cg_residual: Array
  cg_iterations: Array
  backtracks: Array


def _check_step_args(max_kl, cg_iters, cg_damping, cg_tol):
  _checks.check_scalar_in_range("max_kl", max_kl, 0.0, float("inf"),
                                low_inclusive=False)
  _checks.check_positive_int("cg_iters", cg_iters)
  _checks.check_scalar_in_range("cg_damping", cg_damping, 0.0, float("inf"))
  _checks.check_scalar_in_range("cg_tol", cg_tol, 0.0, float("inf"))


def _natural_step(loss_fn, kl_fn, fisher_kl_fn, params, max_kl, cg_iters,
                  cg_damping, cg_tol, fisher_output=None, kl_penalty=0.0):
  """Full step ``t s`` with ``F s = -g``, ``t = sqrt(2 δ / sᵀFs)`` capped at
  ``-gᵀs / (kl_penalty · sᵀFs)`` when ``kl_penalty`` is not a literal 0, and
  its diagnostics."""
  if fisher_output is not None and fisher_kl_fn is not None:
    raise ValueError("give fisher_kl_fn or fisher_output, not both.")
  loss, grad = jax.value_and_grad(loss_fn)(params)
  dtype = jnp.result_type(loss)
  matvec = fisher.fisher_matvec(fisher_kl_fn or kl_fn, params, cg_damping,
                                fisher_output)
  direction, cg = conjugate_gradient_with_info(
      matvec, _scale(-1.0, grad), iters=cg_iters, tol=cg_tol)
  sfs = otu.tree_vdot(direction, matvec(direction))
  rate = -otu.tree_vdot(grad, direction)
  valid = (jnp.isfinite(loss) & jnp.isfinite(sfs) & jnp.isfinite(rate)
           & (sfs > 0) & (rate > 0))
  scale = jnp.where(
      valid,
      jnp.sqrt(2 * jnp.asarray(max_kl, dtype) / jnp.where(valid, sfs, 1)), 0)
  if not (isinstance(kl_penalty, (int, float)) and kl_penalty == 0):
    c = jnp.asarray(kl_penalty, dtype)
    capped = valid & (c > 0)
    cap = rate / jnp.where(capped, c * sfs, 1)
    scale = jnp.where(capped, jnp.minimum(scale, cap), scale)
  full_step = _scale(scale, direction)
  expected = jnp.where(valid, scale * rate, 0)
  return loss, full_step, expected, valid, cg


def trpo_step(
    loss_fn: Callable[[PyTree], Array],
    kl_fn: Callable[[PyTree], Array],
    params: PyTree,
    *,
    max_kl: float | Array,
    cg_iters: int = 10,
    cg_damping: float | Array = 0.1,
    backtrack_coeff: float | Array = 0.8,
    backtrack_iters: int = 10,
    cg_tol: float = 1e-10,
    fisher_kl_fn: Callable[[PyTree], Array] | None = None,
    fisher_output: tuple[Callable[[PyTree], PyTree],
                         Callable[[PyTree], Array]] | None = None,
    kl_penalty: float | Array = 0.0,
) -> tuple[PyTree, TRPOInfo]:
  r"""One TRPO update: natural-gradient direction and a KL-checked line search.

  1. ``g = ∇loss_fn(params)``; solve ``(F + damping·I) s = -g`` by CG, with
     ``F`` the Hessian of the KL at ``params`` (never formed).
  2. Scale to the trust region: ``Δ = sqrt(2·max_kl / sᵀFs) · s``; with
     ``kl_penalty = ν > 0``, at most the minimiser along ``s`` of the model
     ``loss + t·gᵀs + ½·ν·t²·sᵀFs``: ``Δ = min(sqrt(2·max_kl / sᵀFs),
     -gᵀs / (ν·sᵀFs)) · s``.
  3. Try ``params + c^i Δ`` for ``i = 0, 1, ...`` (``c = backtrack_coeff``)
     and accept the first with ``kl_fn ≤ max_kl`` and a lower, finite loss;
     after ``backtrack_iters`` failures return ``params`` unchanged.

  ``kl_penalty`` is for an objective regularised by ``ν·KL(π || π_0)`` to a
  fixed ``π_0`` whose ``loss_fn`` leaves the penalty out (folded into fixed
  advantages, as RLHF folds ``-β·log(π/π_ref)`` into the reward): the
  penalty's curvature, ``≈ ν·F``, is what the linear surrogate lacks, and
  without it every step runs to the trust region's edge, past the
  regularised optimum and back (TRPO on the language model cycled about
  π*: ``docs/rlhf.md``). For a tabular softmax policy with exact
  advantages in the loss's units, the capped step ``t = 1/ν`` is soft
  policy iteration (Cen et al. 2021).

  sb3-contrib's ``TRPO`` accepts ``KL(new || old) < δ`` instead; the
  Fisher matrix is the same, and passing that KL as ``kl_fn`` reproduces
  its step (``tests/test_sb3_parity.py``).

  Args:
    loss_fn: ``params -> scalar`` to minimise (the negated surrogate
      advantage).
    kl_fn: ``params -> scalar``, mean ``KL(π_old || π_params)``; zero at
      ``params``. Checked by the line search.
    params: pytree of float arrays (the current, "old" policy).
    max_kl: trust-region radius δ > 0 (may be traced).
    cg_iters: CG iterations, Python int > 0.
    cg_damping: ≥ 0, added to the Fisher diagonal.
    backtrack_coeff: step shrink factor in (0, 1).
    backtrack_iters: line-search trials, Python int > 0.
    cg_tol: CG stops early once the squared residual norm is ≤ this.
    fisher_kl_fn: optional KL used only for Fisher-vector products (e.g. on
      a sub-sample of the batch, which is cheaper); defaults to ``kl_fn``.
    fisher_output: optional ``(output_fn, output_kl_fn)``: Fisher-vector
      products in the cheaper Gauss–Newton form
      (:func:`gauss_newton_vector_product`), where ``output_kl_fn ∘
      output_fn`` is the KL they stand for (``kl_fn`` or a sub-sample of
      it); not with ``fisher_kl_fn``.
    kl_penalty: ``ν ≥ 0`` (may be traced), the coefficient, in the loss's
      units, of a KL penalty the loss leaves out; 0 (the default): no cap,
      the step of Schulman et al.

  Returns:
    ``(new_params, TRPOInfo)``.

  References:
    Schulman et al., 2015, "Trust Region Policy Optimization",
    https://arxiv.org/abs/1502.05477, section 6 and appendix C; Cen et al.,
    2021, "Fast Global Convergence of Natural Policy Gradient Methods with
    Entropy Regularization", https://arxiv.org/abs/2007.06558, section 3.
  """
  _check_step_args(max_kl, cg_iters, cg_damping, cg_tol)
  _checks.check_scalar_in_range("backtrack_coeff", backtrack_coeff, 0.0, 1.0,
                                low_inclusive=False, high_inclusive=False)
  _checks.check_positive_int("backtrack_iters", backtrack_iters)
  _checks.check_scalar_in_range("kl_penalty", kl_penalty, 0.0, float("inf"))
  loss, full_step, expected, valid, cg = _natural_step(
      loss_fn, kl_fn, fisher_kl_fn, params, max_kl, cg_iters, cg_damping,
      cg_tol, fisher_output, kl_penalty)
  dtype = jnp.result_type(loss)
  max_kl = jnp.asarray(max_kl, dtype)
  coeff = jnp.asarray(backtrack_coeff, dtype)

  def _cond(c):
    i, accepted, *_ = c
    return valid & ~accepted & (i < backtrack_iters)

  def _try_step(c):
    i, _, _, _, _ = c
    fraction = coeff ** i.astype(dtype)
    candidate = fisher.add_scaled(params, fraction, full_step)
    new_loss = jnp.asarray(loss_fn(candidate), dtype)
    new_kl = jnp.asarray(kl_fn(candidate), dtype)
    ok = (jnp.isfinite(new_loss) & jnp.isfinite(new_kl)
          & (new_kl <= max_kl) & (new_loss < loss))
    return i + 1, ok, fraction, new_loss, new_kl

  zero = jnp.zeros((), dtype)
  init = (jnp.zeros((), jnp.int32), jnp.zeros((), bool), zero, loss, zero)
  tries, accepted, fraction, new_loss, new_kl = jax.lax.while_loop(
      _cond, _try_step, init)
  new_params = _select(accepted, fisher.add_scaled(params, fraction, full_step),
                       params)
  info = TRPOInfo(
      loss=loss,
      kl=jnp.where(accepted, new_kl, zero),
      loss_improvement=jnp.where(accepted, loss - new_loss, zero),
      expected_improvement=expected,
      accepted=accepted,
      step_fraction=jnp.where(accepted, fraction, zero),
      cg_residual=cg.residual_norm,
      cg_iterations=cg.iterations,
      backtracks=tries)
  return new_params, info


def npg_step(
    loss_fn: Callable[[PyTree], Array],
    kl_fn: Callable[[PyTree], Array],
    params: PyTree,
    *,
    max_kl: float | Array,
    cg_iters: int = 10,
    cg_damping: float | Array = 0.1,
    cg_tol: float = 1e-10,
    fisher_kl_fn: Callable[[PyTree], Array] | None = None,
    fisher_output: tuple[Callable[[PyTree], PyTree],
                         Callable[[PyTree], Array]] | None = None,
) -> tuple[PyTree, TRPOInfo]:
  r"""Natural policy gradient: TRPO's full step, without a line search.

  ``params + sqrt(2·max_kl / sᵀFs) · s`` with ``(F + damping·I) s = -g``: the
  step whose *quadratic* KL model equals ``max_kl``. Nothing checks the true
  KL or the loss before the move, but the KL and loss reached are evaluated
  and reported. The step is rejected (parameters unchanged) only when it
  cannot be computed safely or lands on non-finite parameters.

  Args:
    loss_fn: ``params -> scalar`` to minimise.
    kl_fn: ``params -> scalar``, mean ``KL(π_old || π_params)``.
    params: pytree of float arrays.
    max_kl: δ > 0, the quadratic-model KL of the step.
    cg_iters: CG iterations, Python int > 0.
    cg_damping: ≥ 0.
    cg_tol: CG stops early once the squared residual norm is ≤ this.
    fisher_kl_fn: optional KL used only for Fisher-vector products.
    fisher_output: optional ``(output_fn, output_kl_fn)`` for Gauss–Newton
      Fisher-vector products (as in :func:`trpo_step`).

  Returns:
    ``(new_params, TRPOInfo)`` with ``step_fraction`` 1 when accepted and
    ``backtracks`` 0.

  References:
    Kakade, 2001, "A Natural Policy Gradient", NeurIPS; Rajeswaran et al.,
    2017, "Towards Generalization and Simplicity in Continuous Control",
    https://arxiv.org/abs/1703.02660.
  """
  _check_step_args(max_kl, cg_iters, cg_damping, cg_tol)
  loss, full_step, expected, valid, cg = _natural_step(
      loss_fn, kl_fn, fisher_kl_fn, params, max_kl, cg_iters, cg_damping,
      cg_tol, fisher_output)
  dtype = jnp.result_type(loss)
  candidate = fisher.add_scaled(params, 1.0, full_step)
  finite = jax.tree.reduce(
      jnp.logical_and,
      jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), candidate),
      jnp.ones((), bool))
  accepted = valid & finite
  new_params = _select(accepted, candidate, params)
  new_loss = jnp.asarray(loss_fn(new_params), dtype)
  zero = jnp.zeros((), dtype)
  info = TRPOInfo(
      loss=loss,
      kl=jnp.where(accepted, jnp.asarray(kl_fn(new_params), dtype), zero),
      loss_improvement=jnp.where(accepted, loss - new_loss, zero),
      expected_improvement=expected,
      accepted=accepted,
      step_fraction=jnp.where(accepted, jnp.ones((), dtype), zero),
      cg_residual=cg.residual_norm,
      cg_iterations=cg.iterations,
      backtracks=jnp.zeros((), jnp.int32))
  return new_params, info
