"""Inputs of the public primitives that would return garbage silently are
refused with a ``ValueError`` naming the argument (issue 28, point 4).

One table per module: each row a call that must be refused and the name
its message must carry. Dtypes and shapes are refused while tracing too;
values (an action of -1, a flag of 2, gamma of 1.5) only when concrete:
under ``jit`` they are tracers, so the same calls compile to the program
they compiled to before, and valid inputs (bool or integer 0/1 flags and
masks) give what they always gave.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_align as jra

T, B, A = 4, 3, 5
F = jnp.linspace(-1.0, 1.0, T * B, dtype=jnp.float32).reshape(T, B)
NO = jnp.zeros((T, B), bool)
LOGITS = jnp.zeros((B, A))
ACTION = jnp.arange(B, dtype=jnp.int32)
X8 = jnp.linspace(-1.0, 1.0, 8, dtype=jnp.float32)
MASK8 = jnp.arange(8) < 5
EMPTY = jnp.zeros((0,))


def _gae(**kw):
  args = dict(reward=F, value=F, next_value=F, terminated=NO, truncated=NO,
              gamma=0.9, lam=0.95)
  args.update(kw)
  return jra.gae(args.pop("reward"), args.pop("value"),
                 args.pop("next_value"), args.pop("terminated"),
                 args.pop("truncated"), **args)


def _lambda(**kw):
  args = dict(reward=F, next_value=F, terminated=NO, truncated=NO,
              gamma=0.9, lam=0.95)
  args.update(kw)
  return jra.lambda_returns(args.pop("reward"), args.pop("next_value"),
                            args.pop("terminated"), args.pop("truncated"),
                            **args)


ADVANTAGES = [
    ("gae float terminated 0.5", lambda: _gae(terminated=jnp.full((T, B), 0.5)),
     "terminated"),
    ("gae float terminated 0/1", lambda: _gae(terminated=NO.astype(jnp.float32)),
     "terminated"),
    ("gae int terminated 2", lambda: _gae(terminated=jnp.full((T, B), 2)),
     "terminated"),
    ("gae float truncated", lambda: _gae(truncated=jnp.full((T, B), 2.0)), "truncated"),
    ("gae T = 0", lambda: _gae(**{k: jnp.zeros((0, B), d) for k, d in (
        ("reward", float), ("value", float), ("next_value", float),
        ("terminated", bool), ("truncated", bool))}), "reward"),
    ("gae string gamma", lambda: _gae(gamma="0.9"), "gamma"),
    ("gae None gamma", lambda: _gae(gamma=None), "gamma"),
    ("gae bool gamma", lambda: _gae(gamma=True), "gamma"),
    ("gae gamma 1.5", lambda: _gae(gamma=1.5), "gamma"),
    ("gae string lam", lambda: _gae(lam="1"), "lam"),
    ("gae lam -0.1", lambda: _gae(lam=-0.1), "lam"),
    ("lambda_returns float terminated", lambda: _lambda(terminated=jnp.full((T, B), 0.5)),
     "terminated"),
    ("lambda_returns T = 0", lambda: _lambda(
        reward=jnp.zeros((0,)), next_value=jnp.zeros((0,)),
        terminated=jnp.zeros((0,), bool), truncated=jnp.zeros((0,), bool)),
     "reward"),
    ("discounted_returns string gamma", lambda: jra.discounted_returns(
        F, F, NO, NO, gamma="0.99"), "gamma"),
    ("discounted_returns float truncated", lambda: jra.discounted_returns(
        F, F, NO, NO.astype(jnp.float32), gamma=0.99), "truncated"),
    ("grpo negative eps", lambda: jra.grpo_advantages(F, eps=-1.0), "eps"),
    ("grpo string eps", lambda: jra.grpo_advantages(F, eps="0"), "eps"),
    ("rloo one sample", lambda: jra.rloo_advantages(F[:1]), "reward"),
]

DISTRIBUTIONS = [
    ("float action", lambda: jra.categorical_log_prob(LOGITS, ACTION.astype(float)),
     "action"),
    ("action 1.7", lambda: jra.categorical_log_prob(
        LOGITS, jnp.asarray([0.0, 1.7, 2.0])), "action"),
    ("bool action", lambda: jra.categorical_log_prob(LOGITS, ACTION > 0),
     "action"),
    ("action -1", lambda: jra.categorical_log_prob(
        LOGITS, jnp.asarray([0, -1, 2])), "action"),
    ("action = A", lambda: jra.categorical_log_prob(
        LOGITS, jnp.asarray([0, A, 2])), "action"),
    ("NumPy action -1", lambda: jra.categorical_log_prob(
        LOGITS, np.asarray([0, -1, 2])), "action"),
    ("no actions", lambda: jra.categorical_entropy(jnp.zeros((B, 0))),
     "logits"),
    ("no actions to sample", lambda: jra.categorical_sample(
        jax.random.key(0), jnp.zeros((B, 0))), "logits"),
    ("gsde negative eps", lambda: jra.gsde_log_std(
        jnp.ones((B, 2)), jnp.zeros((2, 3)), eps=-1.0), "eps"),
]

LOSSES = [
    ("ppo_clip_loss string clip_eps", lambda: jra.ppo_clip_loss(
        X8, X8, X8, clip_eps="0.2"), "clip_eps"),
    ("ppo_clip_loss clip_eps 0", lambda: jra.ppo_clip_loss(
        X8, X8, X8, clip_eps=0.0), "clip_eps"),
    ("ppo_clip_loss float mask", lambda: jra.ppo_clip_loss(
        X8, X8, X8, clip_eps=0.2, mask=jnp.where(MASK8, 0.5, 0.0)), "mask"),
    ("ppo_clip_loss int mask 2", lambda: jra.ppo_clip_loss(
        X8, X8, X8, clip_eps=0.2, mask=MASK8.astype(jnp.int32) * 2), "mask"),
    ("ppo_clip_loss empty", lambda: jra.ppo_clip_loss(
        EMPTY, EMPTY, EMPTY, clip_eps=0.2), "log_prob"),
    ("clip_fraction None clip_eps", lambda: jra.clip_fraction(
        X8, X8, clip_eps=None), "clip_eps"),
    ("approx_kl float mask", lambda: jra.approx_kl(X8, X8, mask=X8),
     "mask"),
    ("approx_kl empty", lambda: jra.approx_kl(EMPTY, EMPTY), "log_prob"),
    ("ppo_kl_penalty_loss string beta", lambda: jra.ppo_kl_penalty_loss(
        X8, X8, X8, X8, beta="1"), "beta"),
    ("ppo_kl_penalty_loss empty", lambda: jra.ppo_kl_penalty_loss(
        EMPTY, EMPTY, EMPTY, EMPTY, beta=1.0), "log_prob"),
    ("value_loss empty", lambda: jra.value_loss(EMPTY, EMPTY), "value"),
    ("value_loss float mask", lambda: jra.value_loss(X8, X8, mask=X8),
     "mask"),
    ("clipped_value_loss negative clip_eps", lambda: jra.clipped_value_loss(
        X8, X8, X8, clip_eps=-0.2), "clip_eps"),
    ("entropy_loss empty", lambda: jra.entropy_loss(EMPTY), "entropy"),
    ("masked_mean empty", lambda: jra.masked_mean(EMPTY), "x"),
    ("masked_mean float mask", lambda: jra.masked_mean(X8, X8), "mask"),
]

NORMALIZATION = [
    ("init int dtype", lambda: jra.running_mean_std_init((2,), jnp.int32),
     "dtype"),
    ("init negative shape", lambda: jra.running_mean_std_init((-2,)),
     "shape"),
    ("update float mask", lambda: jra.running_mean_std_update(
        jra.running_mean_std_init((2,)), jnp.ones((4, 2)),
        mask=jnp.ones(4) * 0.5), "mask"),
    ("normalize string clip", lambda: jra.normalize(
        jra.running_mean_std_init(()), X8, clip="5"), "clip"),
    ("normalize eps 0", lambda: jra.normalize(
        jra.running_mean_std_init(()), X8, eps=0.0), "eps"),
    ("whiten float mask", lambda: jra.whiten(X8, X8), "mask"),
    ("whiten negative eps", lambda: jra.whiten(X8, eps=-1.0), "eps"),
    ("whiten bool ddof", lambda: jra.whiten(X8, ddof=True), "ddof"),
]


def _controller_update(make, kl, num_steps=1):
  ctrl = make()
  return ctrl.update(ctrl.init(), kl, num_steps)


ADAPTIVE = lambda: jra.adaptive_kl_controller(0.1, target=6.0, horizon=1e4)  # noqa: E731

KL_CONTROL = [
    ("fixed string coef", lambda: jra.fixed_kl_controller("0.1"), "coef"),
    ("adaptive target 0", lambda: jra.adaptive_kl_controller(
        0.1, target=0.0, horizon=10.0), "target"),
    ("adaptive None horizon", lambda: jra.adaptive_kl_controller(
        0.1, target=6.0, horizon=None), "horizon"),
    ("ppo tolerance 1", lambda: jra.ppo_kl_controller(
        1.0, target=0.01, tolerance=1.0), "tolerance"),
    ("update string kl", lambda: _controller_update(ADAPTIVE, "0.5"), "kl"),
    ("update kl vector", lambda: _controller_update(ADAPTIVE, X8), "kl"),
    ("update negative num_steps", lambda: _controller_update(
        ADAPTIVE, 0.5, -64), "num_steps"),
    ("ppo update string kl", lambda: _controller_update(
        lambda: jra.ppo_kl_controller(1.0, target=0.01), "1"), "kl"),
]


def _trpo(**kw):
  w = jnp.ones((3, 2))
  obs = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
  loss = lambda p: -jnp.mean(obs @ p)  # noqa: E731
  kl = lambda p: jnp.mean(jra.categorical_kl(obs @ w, obs @ p))  # noqa: E731
  args = dict(max_kl=0.01)
  args.update(kw)
  step = args.pop("step", jra.trpo_step)
  return step(loss, kl, w, **args)


TRUST_REGION = [
    ("trpo negative max_kl", lambda: _trpo(max_kl=-0.01), "max_kl"),
    ("trpo string max_kl", lambda: _trpo(max_kl="0.01"), "max_kl"),
    ("trpo cg_iters 0", lambda: _trpo(cg_iters=0), "cg_iters"),
    ("trpo bool cg_iters", lambda: _trpo(cg_iters=True), "cg_iters"),
    ("trpo backtrack_coeff 1", lambda: _trpo(backtrack_coeff=1.0),
     "backtrack_coeff"),
    ("trpo string cg_damping", lambda: _trpo(cg_damping="0.1"),
     "cg_damping"),
    ("npg None max_kl", lambda: _trpo(step=jra.npg_step, max_kl=None),
     "max_kl"),
    ("cg iters 0", lambda: jra.conjugate_gradient(
        lambda v: v, jnp.ones(2), iters=0), "iters"),
    ("cg negative tol", lambda: jra.conjugate_gradient(
        lambda v: v, jnp.ones(2), iters=2, tol=-1.0), "tol"),
    ("fvp string damping", lambda: jra.fisher_vector_product(
        lambda p: jnp.sum(p ** 2), jnp.ones(2), jnp.ones(2), damping="0"),
     "damping"),
]

PREFERENCES = [
    ("bradley_terry empty", lambda: jra.bradley_terry_loss(EMPTY, EMPTY),
     "chosen_reward"),
    ("bradley_terry int rejected", lambda: jra.bradley_terry_loss(
        X8, jnp.zeros(8, jnp.int32)), "rejected_reward"),
    ("bradley_terry float mask", lambda: jra.bradley_terry_loss(
        X8, X8, mask=X8), "mask"),
    ("dpo beta 0", lambda: jra.dpo_loss(X8, X8, X8, X8, beta=0.0), "beta"),
    ("dpo string beta", lambda: jra.dpo_loss(X8, X8, X8, X8, beta="0.1"),
     "beta"),
    ("dpo label_smoothing 0.5", lambda: jra.dpo_loss(
        X8, X8, X8, X8, beta=0.1, label_smoothing=0.5), "label_smoothing"),
    ("dpo empty", lambda: jra.dpo_loss(EMPTY, EMPTY, EMPTY, EMPTY, beta=0.1),
     "log_prob_chosen"),
]

SEQUENCES = [
    ("last_step float mask", lambda: jra.last_step(jnp.full((T, B), 0.5)), "mask"),
    ("last_step T = 0", lambda: jra.last_step(jnp.zeros((0, B), bool)),
     "mask"),
    ("kl_penalized_rewards float mask", lambda: jra.kl_penalized_rewards(
        F[0], F, F, jnp.ones((T, B)), kl_coef=0.1), "mask"),
    ("kl_penalized_rewards string kl_coef", lambda: jra.kl_penalized_rewards(
        F[0], F, F, ~NO, kl_coef="0.1"), "kl_coef"),
    ("kl_penalized_rewards T = 0", lambda: jra.kl_penalized_rewards(
        F[0], F[:0], F[:0], NO[:0], kl_coef=0.1), "log_prob"),
]

CASES = {"advantages": ADVANTAGES, "distributions": DISTRIBUTIONS,
         "losses": LOSSES, "normalization": NORMALIZATION,
         "kl_control": KL_CONTROL, "trust_region": TRUST_REGION,
         "preferences": PREFERENCES, "sequences": SEQUENCES}


def _rows(table):
  return [pytest.param(call, name, id=label) for label, call, name in table]


@pytest.mark.parametrize("call, name", [
    row for table in CASES.values() for row in _rows(table)])
def test_refused_with_the_argument_named(call, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    call()


def test_dtypes_refused_while_tracing():
  """A float action, flag or mask is known to be wrong from its dtype, so
  ``jit`` refuses it when it traces (no value needed)."""
  with pytest.raises(ValueError, match="`action`"):
    jax.jit(jra.categorical_log_prob)(LOGITS, ACTION.astype(float))
  with pytest.raises(ValueError, match="`terminated`"):
    jax.jit(lambda d: _gae(terminated=d))(NO.astype(jnp.float32))
  with pytest.raises(ValueError, match="`mask`"):
    jax.jit(lambda m: jra.masked_mean(X8, m))(X8)
  with pytest.raises(ValueError, match="`gamma`"):
    jax.jit(lambda g: _gae(gamma=g))(jnp.asarray(True))
  with pytest.raises(ValueError, match="`reward`"):
    jax.jit(lambda r: jra.discounted_returns(r, r, r > 0, r > 0, gamma=0.9)
            )(jnp.zeros((0, 2)))


def test_valid_inputs_under_jit_and_vmap_unchanged():
  """Valid calls give the same under ``jit`` and ``vmap`` as eagerly; an
  integer 0/1 flag or mask gives what its bool gives; traced values are
  not checked (an action of -1 under ``jit`` is the caller's: nothing is
  added to the compiled program)."""
  rng = np.random.default_rng(0)
  term = jnp.asarray(rng.random((T, B)) < 0.3)
  cut = jnp.asarray(rng.random((T, B)) < 0.3)
  want = _gae(terminated=term, truncated=cut)
  for d, c in ((term.astype(jnp.int32), cut.astype(jnp.int32)),
               (np.asarray(term, np.int8), np.asarray(cut))):
    got = jax.jit(lambda d, c: _gae(terminated=d, truncated=c))(d, c)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    np.testing.assert_allclose(_gae(terminated=d, truncated=c)[0], want[0],
                               rtol=1e-6)
  swept = jax.jit(jax.vmap(lambda g: _gae(gamma=g)[0]))(jnp.asarray([0.5, 0.9]))
  np.testing.assert_allclose(swept[1], _gae(gamma=0.9)[0], rtol=1e-6)

  logits = jnp.asarray(rng.normal(size=(B, A)), jnp.float32)
  want = jra.categorical_log_prob(logits, ACTION)
  np.testing.assert_allclose(
      jax.jit(jra.categorical_log_prob)(logits, ACTION), want, rtol=1e-6)
  np.testing.assert_allclose(
      jax.vmap(jra.categorical_log_prob)(logits, ACTION), want, rtol=1e-6)
  np.testing.assert_allclose(
      jra.categorical_log_prob(logits, np.asarray(ACTION, np.uint8)), want,
      rtol=1e-6)
  jax.jit(jra.categorical_log_prob)(logits, jnp.asarray([0, -1, 2]))

  mask = MASK8.astype(jnp.int32)
  for fn in (lambda m: jra.masked_mean(X8, m),
             lambda m: jra.ppo_clip_loss(X8, X8 * 0.5, X8, clip_eps=0.2,
                                         mask=m),
             lambda m: jra.whiten(X8, m),
             lambda m: jra.last_step(m)):
    np.testing.assert_allclose(fn(mask), fn(MASK8), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(fn)(mask), fn(MASK8), rtol=1e-6)

  ctrl = ADAPTIVE()
  out = jax.jit(ctrl.update)(ctrl.init(), jnp.float32(8.0), jnp.int32(64))
  assert float(out.coef) > 0.1
