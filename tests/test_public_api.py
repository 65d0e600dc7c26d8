"""Every public function: exported, documented, and equal under jit and vmap.

For each function, a call on concrete inputs is the reference; the same call
under ``jax.jit`` and a ``jax.vmap`` over a stack of three different inputs
must reproduce it (the vmapped row ``i`` equals the eager call on input
``i``).
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_align as jra

RNG = np.random.default_rng(0)


def f32(*shape):
  return jnp.asarray(RNG.normal(size=shape), jnp.float32)


def flags(*shape):
  return jnp.asarray(RNG.random(shape) < 0.2)


def stack3(make):
  """Three independent draws of an input tuple, and their stack."""
  draws = [make() for _ in range(3)]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *draws)
  return draws, stacked


def _trpo(fn):
  def run(w, obs, adv, max_kl):
    old_logits = obs @ w
    action = jra.categorical_mode(old_logits)
    old_lp = jra.categorical_log_prob(old_logits, action)
    loss = lambda p: jra.ppo_clip_loss(
        jra.categorical_log_prob(obs @ p, action), old_lp, adv, clip_eps=10.0)
    kl = lambda p: jnp.mean(jra.categorical_kl(old_logits, obs @ p))
    return fn(loss, kl, w, max_kl=max_kl)
  return run


def _cg(a_half, b):
  a = a_half @ a_half.T + 3 * jnp.eye(4)
  return jra.conjugate_gradient_with_info(lambda v: a @ v, b, iters=4)


def _fvp(w, obs, v):
  kl = lambda p: jnp.mean(jra.categorical_kl(obs @ w, obs @ p))
  return jra.fisher_vector_product(kl, w, v, damping=0.1)


def _gauss_newton(w, obs, v):
  return jra.gauss_newton_vector_product(
      lambda p: obs @ p, lambda out: jnp.mean(jra.categorical_kl(obs @ w, out)),
      w, v, damping=0.1)


def _controller(make):
  def run(kl, n):
    ctrl = make()
    return ctrl.update(ctrl.init(), kl, n)
  return run


CASES = {
    "gae": (lambda *a: jra.gae(*a, gamma=0.9, lam=0.8),
            lambda: (f32(6, 2), f32(6, 2), f32(6, 2), flags(6, 2), flags(6, 2))),
    "lambda_returns": (lambda *a: jra.lambda_returns(*a, gamma=0.9, lam=0.8),
                       lambda: (f32(6, 2), f32(6, 2), flags(6, 2), flags(6, 2))),
    "discounted_returns": (lambda *a: jra.discounted_returns(*a, gamma=0.9),
                           lambda: (f32(6), f32(6), flags(6), flags(6))),
    "categorical_sample": (jra.categorical_sample,
                           lambda: (jax.random.key(RNG.integers(99)), f32(5, 3))),
    "categorical_log_prob": (jra.categorical_log_prob,
                             lambda: (f32(5, 3), jnp.asarray(RNG.integers(0, 3, 5)))),
    "categorical_entropy": (jra.categorical_entropy, lambda: (f32(5, 3),)),
    "categorical_kl": (jra.categorical_kl, lambda: (f32(5, 3), f32(5, 3))),
    "categorical_mode": (jra.categorical_mode, lambda: (f32(5, 3),)),
    "gaussian_sample": (jra.gaussian_sample,
                        lambda: (jax.random.key(RNG.integers(99)), f32(5, 2), f32(2))),
    "gaussian_log_prob": (jra.gaussian_log_prob, lambda: (f32(5, 2), f32(2), f32(5, 2))),
    "gaussian_entropy": (jra.gaussian_entropy, lambda: (f32(5, 2), f32(2))),
    "gaussian_kl": (jra.gaussian_kl, lambda: (f32(5, 2), f32(2), f32(5, 2), f32(5, 2))),
    "gaussian_mode": (jra.gaussian_mode, lambda: (f32(5, 2), f32(2))),
    "gsde_log_std": (jra.gsde_log_std, lambda: (f32(5, 3), f32(3, 2))),
    "gsde_exploration_matrix": (
        lambda k, s: jra.gsde_exploration_matrix(k, s, (4,)),
        lambda: (jax.random.key(RNG.integers(99)), f32(3, 2))),
    "gsde_noise": (jra.gsde_noise, lambda: (f32(5, 3), f32(5, 3, 2))),
    "ppo_clip_loss": (lambda a, b, c, m: jra.ppo_clip_loss(a, b, c, clip_eps=0.2, mask=m),
                      lambda: (f32(8), f32(8), f32(8), flags(8))),
    "clipped_surrogate": (
        lambda r, a, high: jra.clipped_surrogate(r, a, clip_low=0.2, clip_high=high,
                                                 dual_clip=3.0),
        lambda: (f32(8), f32(8), jnp.float32(RNG.random() * 0.3 + 0.05))),
    "aggregate_tokens": (
        lambda x, m, t: (jra.aggregate_tokens(x, m, "grpo"),
                         jra.aggregate_tokens(x, m, "bnpo"),
                         jra.aggregate_tokens(x, m, "dr_grpo", max_length=6),
                         jra.aggregate_tokens(x, m, "dapo", tokens=t)),
        lambda: (f32(4, 6), flags(4, 6) | (jnp.arange(6) < 2)[None], jnp.float32(RNG.random() + 1))),
    "clip_fraction": (lambda a, b: jra.clip_fraction(a, b, clip_eps=0.2),
                      lambda: (f32(8), f32(8))),
    "kl_k1": (jra.kl_k1, lambda: (f32(8), f32(8))),
    "kl_k2": (jra.kl_k2, lambda: (f32(8), f32(8))),
    "kl_k3": (jra.kl_k3, lambda: (f32(8), f32(8))),
    "approx_kl": (jra.approx_kl, lambda: (f32(8), f32(8))),
    # Keyword-only traced arguments (β here, max_kl below) are vmapped too.
    "ppo_kl_penalty_loss": (
        lambda a, b, c, d, beta: jra.ppo_kl_penalty_loss(a, b, c, d, beta=beta),
        lambda: (f32(8), f32(8), f32(8), jnp.abs(f32(8)), jnp.float32(RNG.random()))),
    "masked_mean": (jra.masked_mean, lambda: (f32(8), flags(8))),
    "value_loss": (jra.value_loss, lambda: (f32(8), f32(8))),
    "clipped_value_loss": (lambda a, b, c: jra.clipped_value_loss(a, b, c, clip_eps=0.2),
                           lambda: (f32(8), f32(8), f32(8))),
    "entropy_loss": (jra.entropy_loss, lambda: (f32(8),)),
    "running_mean_std_update": (
        lambda x: jra.running_mean_std_update(jra.running_mean_std_init((2,)), x),
        lambda: (f32(9, 2),)),
    "normalize": (lambda m, v, x: jra.normalize(
        jra.RunningMeanStd(m, jnp.abs(v), jnp.ones(())), x, clip=1.0),
        lambda: (f32(2), f32(2), f32(4, 2))),
    "conjugate_gradient_with_info": (_cg, lambda: (f32(4, 4), f32(4))),
    "conjugate_gradient": (lambda a, b: _cg(a, b)[0], lambda: (f32(4, 4), f32(4))),
    "fisher_vector_product": (_fvp, lambda: (f32(3, 2), f32(6, 3), f32(3, 2))),
    "gauss_newton_vector_product": (
        _gauss_newton, lambda: (f32(3, 2), f32(6, 3), f32(3, 2))),
    "trpo_step": (_trpo(jra.trpo_step),
                  lambda: (f32(3, 2), f32(16, 3), f32(16), jnp.float32(0.02))),
    "npg_step": (_trpo(jra.npg_step),
                 lambda: (f32(3, 2), f32(16, 3), f32(16), jnp.float32(0.02))),
    "fixed_kl_controller": (_controller(lambda: jra.fixed_kl_controller(0.1)),
                            lambda: (jnp.float32(RNG.random()), jnp.float32(4))),
    "adaptive_kl_controller": (
        _controller(lambda: jra.adaptive_kl_controller(0.1, target=0.5, horizon=10)),
        lambda: (jnp.float32(RNG.random()), jnp.float32(4))),
    "ppo_kl_controller": (_controller(lambda: jra.ppo_kl_controller(1.0, target=0.5)),
                          lambda: (jnp.float32(RNG.random() * 2), jnp.float32(1))),
    "whiten": (lambda x, m: jra.whiten(x, m, ddof=1), lambda: (f32(8), flags(8) | (jnp.arange(8) < 2))),
    "bradley_terry_loss": (lambda a, b, m: jra.bradley_terry_loss(a, b, mask=m),
                           lambda: (f32(8), f32(8), flags(8))),
    "dpo_loss": (lambda a, b, c, d, beta: jra.dpo_loss(a, b, c, d, beta=beta,
                                                       label_smoothing=0.1),
                 lambda: (f32(8), f32(8), f32(8), f32(8), jnp.float32(RNG.random() + 0.1))),
    "kl_penalized_rewards": (
        lambda s, lp, ref, m, c: jra.kl_penalized_rewards(s, lp, ref, m, kl_coef=c,
                                                          estimator="k3"),
        lambda: (f32(3), f32(5, 3), f32(5, 3), flags(5, 3) | (jnp.arange(5) < 2)[:, None],
                 jnp.float32(RNG.random()))),
    "time_major": (jra.time_major, lambda: (f32(3, 5),)),
    "batch_major": (jra.batch_major, lambda: (f32(5, 3, 2),)),
    "last_step": (jra.last_step, lambda: (flags(6, 3),)),
    "rloo_advantages": (jra.rloo_advantages, lambda: (f32(4, 3),)),
    "grpo_advantages": (jra.grpo_advantages, lambda: (f32(4, 3),)),
}

CLASSES = {"CGInfo", "KLController", "KLControllerState", "RunningMeanStd",
           "TRPOInfo"}


def test_all_names_are_exported_and_documented():
  assert len(set(jra.__all__)) == len(jra.__all__)
  for name in jra.__all__:
    obj = getattr(jra, name)
    assert obj.__doc__ and len(obj.__doc__) > 40, name
    if inspect.isfunction(obj):
      assert "Returns" in obj.__doc__, name
      if inspect.signature(obj).parameters:
        assert "Args" in obj.__doc__, name
  functions = {n for n in jra.__all__ if inspect.isfunction(getattr(jra, n))}
  assert functions | CLASSES == set(jra.__all__)
  assert functions - {"running_mean_std_init"} == set(CASES)


def _assert_tree_close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      continue
    np.testing.assert_allclose(np.asarray(x, np.float64),
                               np.asarray(y, np.float64), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_and_vmap_reproduce_eager_calls(name):
  fn, make = CASES[name]
  draws, stacked = stack3(make)
  eager = [fn(*args) for args in draws]
  _assert_tree_close(jax.jit(fn)(*draws[0]), eager[0])
  batched = jax.jit(jax.vmap(fn))(*stacked)
  for i in range(3):
    _assert_tree_close(jax.tree.map(lambda x: x[i], batched), eager[i])


def test_running_mean_std_init_under_jit():
  out = jax.jit(lambda: jra.running_mean_std_init((3,), jnp.float32))()
  assert out.mean.shape == (3,) and float(out.count) == 0
