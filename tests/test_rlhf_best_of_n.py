"""Best-of-N's policy and its KL to the reference with tied and distinct
scores (``jaxrl_align.rlhf.best_of_n``), against enumeration: of the
responses (the exact KL) and of every ``N``-tuple of draws (the policy the
sampler's ``argmax`` actually keeps)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_align.rlhf import best_of_n


def counting_toy():
  """Issue 28's toy: every length-3 response over 4 tokens, uniform
  reference, score = number of token-0 positions (levels of 27, 27, 9 and 1
  responses)."""
  seqs = np.asarray(list(itertools.product(range(4), repeat=3)))
  score = np.sum(seqs == 0, axis=1).astype(np.float32)
  return np.full(len(seqs), np.log(1 / 64)), score


def levels(p, score, n):
  """NumPy, float64: ``π_N`` from the levels' masses, ties included."""
  f = np.array([p[score <= s].sum() for s in score])
  f_below = np.array([p[score < s].sum() for s in score])
  return (f ** n - f_below ** n) * p / (f - f_below)


def sampler_policy(p, score, n):
  """The distribution of the response :func:`best_of_n.curve` keeps
  (``argmax``: the first of tied best draws), summed over every ``N``-tuple
  of draws."""
  tuples = np.asarray(list(itertools.product(range(len(p)), repeat=n)))
  kept = np.take_along_axis(
      tuples, np.asarray(jnp.argmax(score[tuples], axis=1))[:, None], 1)[:, 0]
  weight = np.prod(p[tuples], axis=1)
  return np.bincount(kept, weights=weight, minlength=len(p))


def kl(pi, p):
  return float(np.sum(pi * np.log(pi / p)))


def test_exact_kl_with_ties_matches_enumeration_under_jit():
  """Issue 28's numbers: 0.5428 / 1.6224 / 2.7005 nats for N = 4/16/64;
  the tie-blind Lemma 1 (``cdf_below=None``, what the module computed
  before) sums to 1.69-2.74 and overstates the KL."""
  log_p, score = counting_toy()
  p = np.exp(log_p)
  f = np.array([p[score <= s].sum() for s in score])
  for n, want in ((4, 0.5428046), (16, 1.6223745), (64, 2.7004656)):
    ratio = np.asarray(jax.jit(best_of_n.exact_log_ratio, static_argnums=0)(
        n, log_p, score), np.float64)
    pi = p * np.exp(ratio)
    assert abs(pi.sum() - 1) < 1e-5, (n, pi.sum())
    np.testing.assert_allclose(pi, levels(p, score, n), rtol=1e-4)
    assert abs(float(np.sum(pi * ratio)) - want) < 1e-4, n
    assert abs(kl(levels(p, score, n), p) - want) < 1e-6
    assert float(np.sum(pi * ratio)) <= float(best_of_n.kl_bound(n))
    # the same from F and F⁻ given to log_ratio
    f_below = np.array([p[score < s].sum() for s in score])
    given = jax.jit(best_of_n.log_ratio, static_argnums=0)(
        n, jnp.asarray(log_p, jnp.float32), jnp.asarray(f, jnp.float32),
        jnp.asarray(f_below, jnp.float32))
    np.testing.assert_allclose(given, ratio, rtol=1e-4, atol=1e-4)
    blind = p * np.exp(np.asarray(best_of_n.log_ratio(n, log_p, f)))
    assert blind.sum() > 1.6, (n, blind.sum())


@pytest.mark.parametrize("tied", [True, False])
def test_policy_is_what_the_sampler_keeps(tied):
  """Every ``N``-tuple of draws from a non-uniform reference, the kept
  response chosen as :func:`best_of_n.curve` chooses it: its distribution
  is :func:`best_of_n.exact_log_ratio`'s ``π_N``, with ties (the first of
  the tied best draws is a draw of ``π_ref`` restricted to the level) and
  without (where it is Lemma 1's ``F^N − (F − p)^N``)."""
  rng = np.random.default_rng(0)
  p = rng.dirichlet(np.ones(7))
  score = (np.asarray([2.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0]) if tied else
           rng.normal(size=7)).astype(np.float32)
  for n in (1, 2, 3, 5):
    want = sampler_policy(p, score, n)
    pi = p * np.exp(np.asarray(best_of_n.exact_log_ratio(
        n, jnp.asarray(np.log(p), jnp.float32), score), np.float64))
    np.testing.assert_allclose(pi, want, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(levels(p, score, n), want, rtol=1e-9)
    if not tied:
      f = np.array([p[score <= s].sum() for s in score])
      np.testing.assert_allclose(f ** n - (f - p) ** n, want, rtol=1e-9)
      np.testing.assert_allclose(
          p * np.exp(np.asarray(best_of_n.log_ratio(n, np.log(p), f))),
          want, rtol=1e-4)
    elif n > 1:
      f = np.array([p[score <= s].sum() for s in score])
      blind = f ** n - (f - p) ** n
      assert abs(blind.sum() - 1) > 0.05, (n, blind.sum())


@pytest.mark.parametrize("tied", [True, False])
def test_kl_measured_on_samples_matches_enumeration(tied):
  """:func:`best_of_n.curve` on draws of the counting toy (tied) and of a
  toy with distinct scores: the KL measured on the samples, with ``F`` and
  ``F⁻`` estimated from an independent pool, is the enumerated KL within
  four standard errors (under ``jit``)."""
  log_p, score = counting_toy()
  if not tied:
    rng = np.random.default_rng(1)
    log_p = np.log(rng.dirichlet(np.ones(64)))
    score = (rng.permutation(64) / 21).astype(np.float32)  # 0 to 3
  p = np.exp(log_p)
  ns, prompts, m, pool_size = (1, 4, 16, 64), 2048, 64, 20_000
  k1, k2 = jax.random.split(jax.random.key(0))
  cand = jax.random.choice(k1, 64, (prompts, m), p=jnp.asarray(p))
  pool = jnp.asarray(score)[jax.random.choice(k2, 64, (pool_size,),
                                              p=jnp.asarray(p))]
  pool = jnp.broadcast_to(pool, (prompts, pool_size))
  proxy = jnp.asarray(score)[cand]
  lp = jnp.asarray(log_p, jnp.float32)[cand]
  run = jax.jit(best_of_n.curve, static_argnums=0)
  got = run(ns, proxy, proxy, lp, pool)
  for i, n in enumerate(ns):
    want = kl(levels(p, score, n), p)
    err = abs(float(got.kl_sampled[i]) - want)
    assert err <= 4 * float(got.kl_sampled_se[i]) + 0.01, (n, got, want)
    assert abs(float(got.proxy[i]) - np.sum(levels(p, score, n) * score)
               ) <= 0.05, (n, got)


def test_empirical_cdf_below_and_at():
  pool = jnp.asarray([[1.0, 2.0, 2.0, 3.0]])
  values = jnp.asarray([[2.0, 0.5, 3.0]])
  np.testing.assert_array_equal(best_of_n.empirical_cdf(values, pool),
                                [[0.75, 0.0, 1.0]])
  np.testing.assert_array_equal(
      best_of_n.empirical_cdf(values, pool, strict=True), [[0.25, 0.0, 0.75]])
  # a level the pool misses (F = F⁻) falls back on the response's own
  # probability: Lemma 1 for a response with no tie
  np.testing.assert_allclose(
      best_of_n.log_ratio(4, jnp.log(0.1), 0.5, 0.5),
      best_of_n.log_ratio(4, jnp.log(0.1), 0.5), rtol=1e-6)
