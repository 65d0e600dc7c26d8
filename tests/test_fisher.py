"""Fisher-vector products in Gauss–Newton form (``gauss_newton_vector_product``
and TRPO's ``fisher_output``) against the Hessian of the KL, the explicit
Fisher matrix built from first derivatives (test_trust_region's problems),
and wrong variants that the same comparisons catch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxrl_align as jra
from test_trust_region import categorical_problem
from test_trust_region import gaussian_problem
from test_trust_region import mlp


def _outputs(kind, params, seed=0, n_obs=32, dtype=jnp.float32):
  """``(output_fn, output_kl_fn)`` of test_trust_region's problem ``kind``
  (the same observations, drawn from the same seed), at ``params``."""
  rng = np.random.default_rng(seed)
  if kind == "categorical":
    rng.normal(size=(4, 5)), rng.normal(size=(5,)), rng.normal(size=(5, 3))
    rng.normal(size=(3,))
    obs = jnp.asarray(rng.normal(size=(n_obs, 4)), dtype)
    old = mlp(params, obs)
    return (lambda p: mlp(p, obs),
            lambda out: jnp.mean(jra.categorical_kl(old, out)))
  rng.normal(size=(3, 4)), rng.normal(size=(4,)), rng.normal(size=(4, 2))
  rng.normal(size=(2,)), rng.normal(size=2)
  obs = jnp.asarray(rng.normal(size=(n_obs, 3)), dtype)
  old = (mlp(params["mlp"], obs), params["log_std"])
  return (lambda p: (mlp(p["mlp"], obs), p["log_std"]),
          lambda out: jnp.mean(jra.gaussian_kl(*old, *out)))


PROBLEMS = {"categorical": categorical_problem, "gaussian": gaussian_problem}


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
def test_gauss_newton_product_is_the_fisher_at_the_old_policy(kind):
  with jax.enable_x64(True):
    params, _, kl_fn, fisher = PROBLEMS[kind](dtype=jnp.float64)
    output_fn, output_kl = _outputs(kind, params, dtype=jnp.float64)
    flat, unravel = ravel_pytree(params)
    # the pieces compose to the problem's own KL (away from the old policy,
    # where it is not zero: the same observations)
    moved = unravel(flat + 0.1)
    assert kl_fn(moved) > 1e-4
    np.testing.assert_allclose(output_kl(output_fn(moved)), kl_fn(moved),
                               rtol=1e-12)
    fisher_matrix = fisher(params)  # first derivatives only
    rng = np.random.default_rng(1)
    for damping in (0.0, 0.1):
      v = jnp.asarray(rng.normal(size=flat.shape))
      gn = jax.jit(lambda v: jra.gauss_newton_vector_product(
          output_fn, output_kl, params, v, damping=damping))(unravel(v))
      np.testing.assert_allclose(ravel_pytree(gn)[0],
                                 fisher_matrix @ v + damping * v,
                                 rtol=1e-9, atol=1e-12)
      hvp = jra.fisher_vector_product(kl_fn, params, unravel(v),
                                      damping=damping)
      np.testing.assert_allclose(ravel_pytree(gn)[0], ravel_pytree(hvp)[0],
                                 rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
def test_wrong_curvature_in_the_outputs_is_caught(kind):
  """Jᵀ J v (the outputs' curvature left out) is not the Fisher product;
  nor is the Gauss–Newton form away from the old policy, where the KL's
  gradient in the outputs is not zero (the Hessian has a second term)."""
  with jax.enable_x64(True):
    params, _, kl_fn, fisher = PROBLEMS[kind](dtype=jnp.float64)
    output_fn, output_kl = _outputs(kind, params, dtype=jnp.float64)
    flat, unravel = ravel_pytree(params)
    v = jnp.asarray(np.random.default_rng(2).normal(size=flat.shape))
    right = fisher(params) @ v
    wrong = jra.gauss_newton_vector_product(
        output_fn, lambda out: 0.5 * sum(
            jnp.sum(x ** 2) for x in jax.tree.leaves(out)), params, unravel(v))
    assert np.linalg.norm(ravel_pytree(wrong)[0] - right) > 1e-2 * np.linalg.norm(
        right)
    moved = unravel(flat + 0.3 * jnp.asarray(
        np.random.default_rng(3).normal(size=flat.shape)))
    hessian = jax.hessian(lambda f: kl_fn(unravel(f)))(ravel_pytree(moved)[0])
    gn = jra.gauss_newton_vector_product(output_fn, output_kl, moved,
                                         unravel(v))
    gap = np.linalg.norm(ravel_pytree(gn)[0] - hessian @ v)
    assert gap > 1e-3 * np.linalg.norm(hessian @ v)


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
def test_trpo_with_gauss_newton_products_takes_the_same_step(kind):
  with jax.enable_x64(True):
    params, loss_fn, kl_fn, _ = PROBLEMS[kind](seed=0, dtype=jnp.float64)
    outputs = _outputs(kind, params, seed=0, dtype=jnp.float64)
    step = jax.jit(lambda p, o: jra.trpo_step(
        loss_fn, kl_fn, p, max_kl=0.01, cg_iters=10, fisher_output=o),
        static_argnums=1)
    new_a, info_a = jra.trpo_step(loss_fn, kl_fn, params, max_kl=0.01,
                                  cg_iters=10)
    new_b, info_b = step(params, outputs)
    assert bool(info_a.accepted) and bool(info_b.accepted)
    np.testing.assert_allclose(ravel_pytree(new_b)[0], ravel_pytree(new_a)[0],
                               rtol=1e-8, atol=1e-10)
    for a, b in zip(info_a, info_b):
      np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError, match="not both"):
      jra.trpo_step(loss_fn, kl_fn, params, max_kl=0.01, fisher_kl_fn=kl_fn,
                    fisher_output=outputs)


def test_vmap_over_vectors_equals_one_by_one():
  params, _, _, _ = categorical_problem(seed=4)
  output_fn, output_kl = _outputs("categorical", params, seed=4)
  flat, unravel = ravel_pytree(params)
  vs = jnp.asarray(np.random.default_rng(5).normal(size=(3,) + flat.shape),
                   jnp.float32)
  product = lambda v: ravel_pytree(jra.gauss_newton_vector_product(
      output_fn, output_kl, params, unravel(v), damping=0.1))[0]
  batched = jax.jit(jax.vmap(product))(vs)
  for i in range(3):
    np.testing.assert_allclose(batched[i], product(vs[i]), rtol=1e-5,
                               atol=1e-6)
