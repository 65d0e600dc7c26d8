"""Conjugate gradient, Fisher-vector products, TRPO and NPG steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import jaxrl_align as jra


def random_spd(rng, n, cond):
  """Q diag(λ) Qᵀ with eigenvalues log-spaced in [1, cond]."""
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  eig = np.logspace(0.0, np.log10(cond), n)
  rng.shuffle(eig)
  return (q * eig) @ q.T


# ------------------------------------------------------------------------ CG


@pytest.mark.parametrize("cond", [1.0, 10.0, 1e2, 1e3])
def test_cg_equals_solve_float64(cond):
  rng = np.random.default_rng(int(cond))
  n = 40
  with jax.enable_x64(True):
    a = jnp.asarray(random_spd(rng, n, cond))
    b = jnp.asarray(rng.normal(size=n))
    x = jax.jit(lambda b: jra.conjugate_gradient(
        lambda v: a @ v, b, iters=2 * n, tol=0.0))(b)
    expected = jnp.linalg.solve(a, b)
    assert x.dtype == jnp.float64
    rel = jnp.linalg.norm(x - expected) / jnp.linalg.norm(expected)
    assert rel < 1e-5, rel


@pytest.mark.parametrize("cond", [1.0, 10.0, 1e2, 1e3])
def test_cg_equals_solve_float32(cond):
  rng = np.random.default_rng(10 + int(cond))
  n = 40
  a = jnp.asarray(random_spd(rng, n, cond), jnp.float32)
  b = jnp.asarray(rng.normal(size=n), jnp.float32)
  x = jax.jit(lambda b: jra.conjugate_gradient(
      lambda v: a @ v, b, iters=3 * n, tol=0.0))(b)
  expected = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64))
  rel = np.linalg.norm(np.asarray(x, np.float64) - expected) / np.linalg.norm(
      expected)
  assert rel < 1e-3, rel


def test_cg_on_a_pytree_equals_solve_of_the_flat_system():
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    a = jnp.asarray(random_spd(rng, 7, 50.0))
    b = {"w": jnp.asarray(rng.normal(size=(2, 2))),
         "b": jnp.asarray(rng.normal(size=3))}
    flat_b, unravel = ravel_pytree(b)
    matvec = lambda v: unravel(a @ ravel_pytree(v)[0])
    x, info = jra.conjugate_gradient_with_info(matvec, b, iters=20, tol=1e-24)
    np.testing.assert_allclose(ravel_pytree(x)[0], jnp.linalg.solve(a, flat_b),
                               rtol=1e-9, atol=1e-12)
    assert jax.tree.structure(x) == jax.tree.structure(b)
    assert info.residual_norm <= 1e-12
    assert 0 < int(info.iterations) <= 20


def test_cg_is_batched_by_vmap():
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    mats = jnp.asarray(np.stack([random_spd(rng, 5, 20.0) for _ in range(3)]))
    rhs = jnp.asarray(rng.normal(size=(3, 5)))
    solve = lambda a, b: jra.conjugate_gradient(lambda v: a @ v, b, iters=10,
                                                tol=0.0)
    xs = jax.jit(jax.vmap(solve))(mats, rhs)
    np.testing.assert_allclose(xs, jnp.linalg.solve(mats, rhs[..., None])[..., 0],
                               rtol=1e-9)


def test_cg_zero_rhs_and_degenerate_operators_never_give_nan():
  b = jnp.ones(4)
  # b = 0: the answer is 0 and no iteration runs.
  x, info = jra.conjugate_gradient_with_info(lambda v: 2 * v, jnp.zeros(4),
                                             iters=5)
  assert np.all(x == 0) and int(info.iterations) == 0
  # A = 0 (pᵀAp = 0): stop at x = 0.
  x = jra.conjugate_gradient(lambda v: 0 * v, b, iters=5)
  assert np.all(np.isfinite(x)) and np.all(x == 0)
  # A negative definite: stop, never divide by a non-positive curvature.
  x = jra.conjugate_gradient(lambda v: -v, b, iters=5)
  assert np.all(np.isfinite(x)) and np.all(x == 0)
  # A operator returning NaN: stop with the last finite iterate.
  x = jra.conjugate_gradient(lambda v: v * jnp.nan, b, iters=5)
  assert np.all(np.isfinite(x))


def test_cg_stops_early_at_tolerance():
  a = jnp.diag(jnp.array([1.0, 2.0, 3.0]))
  _, info = jra.conjugate_gradient_with_info(lambda v: a @ v, jnp.ones(3),
                                             iters=50, tol=1e-10)
  assert int(info.iterations) <= 4  # exact in 3 steps in exact arithmetic


@given(n=st.integers(1, 8), log_cond=st.floats(0.0, 3.0),
       seed=st.integers(0, 2**31 - 1))
def test_cg_property_matches_solve(n, log_cond, seed):
  rng = np.random.default_rng(seed)
  with jax.enable_x64(True):
    a = jnp.asarray(random_spd(rng, n, 10.0 ** log_cond))
    b = jnp.asarray(rng.normal(size=n))
    x = jra.conjugate_gradient(lambda v: a @ v, b, iters=2 * n, tol=0.0)
    expected = jnp.linalg.solve(a, b)
    rel = jnp.linalg.norm(x - expected) / jnp.linalg.norm(expected)
    assert rel < 1e-6


def test_cg_bad_input():
  with pytest.raises(ValueError, match="iters"):
    jra.conjugate_gradient(lambda v: v, jnp.ones(2), iters=0)
  with pytest.raises(ValueError, match="tol"):
    jra.conjugate_gradient(lambda v: v, jnp.ones(2), iters=2, tol=-1.0)


# ------------------------------------------------------------- tiny policies


def init_mlp(rng, sizes, dtype):
  return [{"w": jnp.asarray(rng.normal(size=(m, n)) / np.sqrt(m), dtype),
           "b": jnp.asarray(rng.normal(size=(n,)) * 0.1, dtype)}
          for m, n in zip(sizes[:-1], sizes[1:])]


def mlp(layers, x):
  for layer in layers[:-1]:
    x = jnp.tanh(x @ layer["w"] + layer["b"][None])
  return x @ layers[-1]["w"] + layers[-1]["b"][None]


def categorical_problem(seed=0, dtype=jnp.float32, n_obs=32, n_act=3):
  """Tiny categorical policy, a batch of states, actions and advantages."""
  rng = np.random.default_rng(seed)
  params = init_mlp(rng, [4, 5, n_act], dtype)
  obs = jnp.asarray(rng.normal(size=(n_obs, 4)), dtype)
  old_logits = mlp(params, obs)
  action = jra.categorical_sample(jax.random.key(seed), old_logits)
  old_log_prob = jra.categorical_log_prob(old_logits, action)
  advantage = jnp.asarray(rng.normal(size=n_obs), dtype)

  def loss_fn(p):
    return jra.ppo_clip_loss(jra.categorical_log_prob(mlp(p, obs), action),
                             old_log_prob, advantage, clip_eps=1e6)

  def kl_fn(p):
    return jnp.mean(jra.categorical_kl(old_logits, mlp(p, obs)))

  def fisher(p):
    """Explicit E_s[Σ_a π_a ∇log π_a ∇log π_aᵀ] at p, by first derivatives."""
    flat, unravel = ravel_pytree(p)
    log_pi = lambda f: jax.nn.log_softmax(mlp(unravel(f), obs))  # [N, A]
    jac = jax.jacrev(log_pi)(flat)  # [N, A, P]
    pi = jnp.exp(log_pi(flat))
    return jnp.einsum("na,nap,naq->pq", pi, jac, jac) / n_obs

  return params, loss_fn, kl_fn, fisher


def gaussian_problem(seed=0, dtype=jnp.float32, n_obs=32, act_dim=2):
  """Tiny Gaussian policy with a state-independent log-std."""
  rng = np.random.default_rng(seed)
  params = {"mlp": init_mlp(rng, [3, 4, act_dim], dtype),
            "log_std": jnp.asarray(rng.normal(size=act_dim) * 0.3, dtype)}
  obs = jnp.asarray(rng.normal(size=(n_obs, 3)), dtype)
  old_mean = mlp(params["mlp"], obs)
  old_log_std = params["log_std"]
  action = jra.gaussian_sample(jax.random.key(seed), old_mean, old_log_std)
  old_log_prob = jra.gaussian_log_prob(old_mean, old_log_std, action)
  advantage = jnp.asarray(rng.normal(size=n_obs), dtype)

  def loss_fn(p):
    log_prob = jra.gaussian_log_prob(mlp(p["mlp"], obs), p["log_std"], action)
    return jra.ppo_clip_loss(log_prob, old_log_prob, advantage, clip_eps=1e6)

  def kl_fn(p):
    return jnp.mean(jra.gaussian_kl(old_mean, old_log_std, mlp(p["mlp"], obs),
                                    p["log_std"]))

  def fisher(p):
    """Gaussian Fisher in (mean, log σ) is diag(1/σ², 2): chain rule by Jᵀ M J."""
    flat, unravel = ravel_pytree(p)
    def stats(f):
      q = unravel(f)
      log_std = jnp.broadcast_to(q["log_std"], (n_obs, act_dim))
      return jnp.concatenate([mlp(q["mlp"], obs), log_std], axis=-1)
    jac = jax.jacrev(stats)(flat)  # [N, 2D, P]
    metric = jnp.concatenate([jnp.exp(-2 * p["log_std"]),
                              2 * jnp.ones(act_dim, dtype)])
    return jnp.einsum("nip,i,niq->pq", jac, metric, jac) / n_obs

  return params, loss_fn, kl_fn, fisher


PROBLEMS = {"categorical": categorical_problem, "gaussian": gaussian_problem}


# ----------------------------------------------------- Fisher-vector product


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
def test_fvp_equals_explicit_hessian_and_fisher(kind):
  with jax.enable_x64(True):
    params, _, kl_fn, fisher = PROBLEMS[kind](dtype=jnp.float64)
    flat, unravel = ravel_pytree(params)
    hessian = jax.hessian(lambda f: kl_fn(unravel(f)))(flat)
    fisher_matrix = fisher(params)
    # The Hessian of KL(π_old || π_θ) at θ_old is the Fisher matrix.
    np.testing.assert_allclose(hessian, fisher_matrix, rtol=1e-8, atol=1e-10)
    rng = np.random.default_rng(0)
    for damping in (0.0, 0.1):
      v_flat = jnp.asarray(rng.normal(size=flat.shape))
      fvp = jax.jit(lambda v: jra.fisher_vector_product(
          kl_fn, params, v, damping=damping))(unravel(v_flat))
      np.testing.assert_allclose(ravel_pytree(fvp)[0],
                                 hessian @ v_flat + damping * v_flat,
                                 rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------- TRPO


def tree_equal(a, b):
  return all(x.dtype == y.dtype and np.array_equal(x, y)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
def test_trpo_accepted_step_respects_kl_and_lowers_loss(kind):
  params, loss_fn, kl_fn, _ = PROBLEMS[kind](seed=1)
  max_kl = 0.01
  step = jax.jit(lambda p: jra.trpo_step(loss_fn, kl_fn, p, max_kl=max_kl))
  new_params, info = step(params)
  assert bool(info.accepted)
  new_kl, new_loss, old_loss = kl_fn(new_params), loss_fn(new_params), loss_fn(params)
  assert new_kl <= max_kl
  assert new_loss < old_loss
  np.testing.assert_allclose(info.kl, new_kl, rtol=1e-5)
  np.testing.assert_allclose(info.loss_improvement, old_loss - new_loss,
                             rtol=1e-4)
  assert 0 < float(info.step_fraction) <= 1
  assert int(info.backtracks) >= 1
  assert np.isfinite(float(info.cg_residual))
  # A trust region this small is reached almost exactly by the quadratic
  # model: the KL of the step is a sizeable fraction of max_kl.
  assert new_kl > 0.3 * max_kl * float(info.step_fraction) ** 2


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
def test_trpo_full_step_is_the_dense_natural_gradient(kind):
  # Independent reference: explicit Fisher F (first derivatives only),
  # s = -(F + λI)⁻¹ g by dense solve, Δ = sqrt(2δ / sᵀ(F + λI)s) s.
  with jax.enable_x64(True):
    params, loss_fn, kl_fn, fisher = PROBLEMS[kind](seed=2, dtype=jnp.float64)
    flat, unravel = ravel_pytree(params)
    max_kl, damping = 1e-4, 0.1
    g = jax.grad(lambda f: loss_fn(unravel(f)))(flat)
    f_damped = fisher(params) + damping * jnp.eye(flat.size)
    s = -jnp.linalg.solve(f_damped, g)
    expected = jnp.sqrt(2 * max_kl / (s @ f_damped @ s)) * s
    new_params, info = jra.trpo_step(loss_fn, kl_fn, params, max_kl=max_kl,
                                     cg_iters=2 * flat.size, cg_tol=0.0,
                                     cg_damping=damping)
    assert bool(info.accepted) and float(info.step_fraction) == 1.0
    np.testing.assert_allclose(ravel_pytree(new_params)[0] - flat, expected,
                               rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(info.expected_improvement, -(g @ expected),
                               rtol=1e-6)


def test_trpo_forced_rejection_leaves_params_bit_identical():
  params, loss_fn, kl_fn, _ = categorical_problem(seed=3)
  # The KL check always fails: same Hessian, shifted above any max_kl.
  never = lambda p: kl_fn(p) + 1.0
  new_params, info = jax.jit(lambda p: jra.trpo_step(
      loss_fn, never, p, max_kl=0.01, backtrack_iters=7))(params)
  assert tree_equal(new_params, params)
  assert not bool(info.accepted)
  assert float(info.step_fraction) == 0.0
  assert float(info.loss_improvement) == 0.0
  assert int(info.backtracks) == 7


def test_trpo_rejects_a_step_that_does_not_lower_the_loss():
  params, loss_fn, kl_fn, _ = categorical_problem(seed=4)
  # The gradient points downhill, but the "true" loss rises in every direction.
  worse = lambda p: loss_fn(p) + 1e3 * kl_fn(p)
  new_params, info = jra.trpo_step(worse, kl_fn, params, max_kl=0.05,
                                   cg_damping=1e-3)
  assert tree_equal(new_params, params) and not bool(info.accepted)


def test_trpo_zero_gradient_nan_loss_and_negative_curvature_are_safe():
  params, loss_fn, kl_fn, _ = categorical_problem(seed=5)
  cases = {
      "zero gradient": (lambda p: 0.0 * loss_fn(p), kl_fn, 0.1),
      "nan loss": (lambda p: loss_fn(p) * jnp.nan, kl_fn, 0.1),
      "sFs <= 0": (loss_fn, lambda p: -kl_fn(p), 0.0),
  }
  for name, (lf, kf, damping) in cases.items():
    for step_fn in (jra.trpo_step, jra.npg_step):
      new_params, info = step_fn(lf, kf, params, max_kl=0.01,
                                 cg_damping=damping)
      assert tree_equal(new_params, params), (name, step_fn.__name__)
      assert not bool(info.accepted), name
      # Diagnostics stay finite; only a NaN loss (and the residual of its NaN
      # gradient) is reported as the NaN it is.
      for field, leaf in info._asdict().items():
        if name == "nan loss" and field in ("loss", "cg_residual"):
          continue
        assert np.isfinite(float(leaf)), (name, field, info)
      assert float(info.step_fraction) == 0 and float(info.kl) == 0


def test_trpo_is_deterministic_and_vmaps_over_max_kl():
  params, loss_fn, kl_fn, _ = categorical_problem(seed=6)
  step = lambda m: jra.trpo_step(loss_fn, kl_fn, params, max_kl=m)
  max_kls = jnp.array([1e-3, 1e-2, 5e-2])
  swept, infos = jax.jit(jax.vmap(step))(max_kls)
  for i, m in enumerate(max_kls):
    single, info = step(float(m))
    for a, b in zip(jax.tree.leaves(single),
                    jax.tree.leaves(jax.tree.map(lambda x: x[i], swept))):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    assert bool(infos.accepted[i]) == bool(info.accepted)
    assert float(infos.kl[i]) <= float(m)
  again, _ = jax.jit(jax.vmap(step))(max_kls)
  assert tree_equal(swept, again)


def test_trpo_fisher_subsample_kl_is_used_for_the_direction_only():
  params, loss_fn, kl_fn, _ = categorical_problem(seed=7)
  tiny = lambda p: 1e-6 * kl_fn(p)  # a very different Fisher
  _, info_a = jra.trpo_step(loss_fn, kl_fn, params, max_kl=0.01)
  new_b, info_b = jra.trpo_step(loss_fn, kl_fn, params, max_kl=0.01,
                                fisher_kl_fn=tiny, cg_damping=1e-8)
  assert not np.isclose(float(info_a.expected_improvement),
                        float(info_b.expected_improvement))
  # The line search still checks the real KL.
  assert kl_fn(new_b) <= 0.01


def test_trpo_kl_penalty_caps_the_step_at_the_regularised_optimum():
  """A bandit, softmax logits θ, objective ``E_π[r] - β KL(π || π_ref)``;
  the loss is TRPO's surrogate with the penalty folded into fixed
  advantages ``A = r - β log(π_old / π_ref)`` (so it is linear along the
  step). With ``kl_penalty=β`` and a trust region too wide to bind, one
  step lands on ``π* ∝ π_ref·exp(r/β)`` (the natural step of 1/β: soft
  policy iteration, Cen et al. 2021), where the trust region alone goes to
  its edge, far past it; ``kl_penalty=0`` is the step without the argument,
  bit for bit; the penalty may be traced (``vmap``)."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(11)
    n, beta = 6, 0.5
    ref = jnp.asarray(rng.normal(size=n))
    old = ref + jnp.asarray(rng.normal(size=n))
    r = jnp.asarray(rng.normal(size=n))
    pi_old = jax.nn.softmax(old)
    adv = r - beta * (jax.nn.log_softmax(old) - jax.nn.log_softmax(ref))
    loss_fn = lambda th: -jnp.sum(jax.nn.softmax(th) * adv)  # noqa: E731
    kl_fn = lambda th: jnp.sum(pi_old * (  # noqa: E731
        jnp.log(pi_old) - jax.nn.log_softmax(th)))
    star = jax.nn.softmax(jax.nn.log_softmax(ref) + r / beta)
    step = lambda c, max_kl=10.0: jra.trpo_step(  # noqa: E731
        loss_fn, kl_fn, old, max_kl=max_kl, cg_iters=n - 1, cg_tol=0.0,
        cg_damping=0.0, kl_penalty=c)  # F has rank n - 1: n - 1 are exact
    capped, info = jax.jit(step)(beta)
    assert bool(info.accepted) and float(info.step_fraction) == 1.0
    np.testing.assert_allclose(jax.nn.softmax(capped), star, atol=1e-9)
    assert float(info.kl) < 10.0
    edge, info = step(0.0)
    np.testing.assert_allclose(float(info.kl), 10.0, rtol=0.2)
    assert float(jnp.abs(jax.nn.softmax(edge) - star).max()) > 0.1
    # A larger penalty caps more: the step is the model's minimiser, 1/c
    # (logits compared up to the constant a softmax ignores).
    centre = lambda x: x - jnp.mean(x)  # noqa: E731
    for kappa in (0.25, 0.5):
      part, _ = step(beta / kappa)
      np.testing.assert_allclose(centre(part - old),
                                 kappa * centre(capped - old), rtol=1e-7,
                                 atol=1e-10)
  params, loss_fn, kl_fn, _ = categorical_problem(seed=12)
  plain = jra.trpo_step(loss_fn, kl_fn, params, max_kl=0.01)
  zero = jra.trpo_step(loss_fn, kl_fn, params, max_kl=0.01, kl_penalty=0.0)
  assert tree_equal(plain, zero)
  penalties = jnp.asarray([0.0, 1.0, 100.0])
  swept, infos = jax.jit(jax.vmap(lambda c: jra.trpo_step(
      loss_fn, kl_fn, params, max_kl=0.01, kl_penalty=c)))(penalties)
  assert float(infos.kl[0]) > 0.5 * 0.01  # no cap: near the edge
  assert float(infos.kl[2]) < float(infos.kl[1]) <= float(infos.kl[0])
  with pytest.raises(ValueError, match="kl_penalty"):
    jra.trpo_step(loss_fn, kl_fn, params, max_kl=0.01, kl_penalty=-1.0)


def test_trpo_bad_input():
  params, loss_fn, kl_fn, _ = categorical_problem()
  bad = [({"max_kl": 0.0}, "max_kl"), ({"max_kl": -1.0}, "max_kl"),
         ({"max_kl": 0.01, "cg_iters": 0}, "cg_iters"),
         ({"max_kl": 0.01, "cg_damping": -0.1}, "cg_damping"),
         ({"max_kl": 0.01, "backtrack_coeff": 1.0}, "backtrack_coeff"),
         ({"max_kl": 0.01, "backtrack_iters": 0}, "backtrack_iters")]
  for kwargs, name in bad:
    with pytest.raises(ValueError, match=name):
      jra.trpo_step(loss_fn, kl_fn, params, **kwargs)
  with pytest.raises(ValueError, match="max_kl"):
    jra.npg_step(loss_fn, kl_fn, params, max_kl=0.0)


# ----------------------------------------------------------------------- NPG


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
def test_npg_step_is_the_full_natural_step(kind):
  with jax.enable_x64(True):
    params, loss_fn, kl_fn, _ = PROBLEMS[kind](seed=8, dtype=jnp.float64)
    max_kl = 1e-5
    trpo_params, trpo_info = jra.trpo_step(loss_fn, kl_fn, params,
                                           max_kl=max_kl)
    npg_params, info = jax.jit(lambda p: jra.npg_step(
        loss_fn, kl_fn, p, max_kl=max_kl))(params)
    assert bool(info.accepted) and float(trpo_info.step_fraction) == 1.0
    np.testing.assert_allclose(ravel_pytree(npg_params)[0],
                               ravel_pytree(trpo_params)[0], rtol=1e-10)
    # At this radius the quadratic model of the KL is accurate: the damped
    # model gives exactly max_kl, the true KL is a little below it.
    assert 0.5 * max_kl < float(info.kl) <= 1.05 * max_kl
    np.testing.assert_allclose(info.kl, kl_fn(npg_params), rtol=1e-9)
