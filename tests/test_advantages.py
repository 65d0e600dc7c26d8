"""GAE, λ-returns and discounted returns against float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxrl_align as jra


def np_gae(reward, value, next_value, terminated, truncated, gamma, lam):
  """Forward-sum reference: A_t = sum_k (γλ)^k δ_{t+k} up to the episode end.

  Written as an explicit sum over each step's own episode segment (not the
  backward recursion the library uses), in float64.
  """
  r, v, nv = (np.asarray(x, np.float64) for x in (reward, value, next_value))
  d, c = np.asarray(terminated, bool), np.asarray(truncated, bool)
  shape = r.shape
  T = shape[0]
  r, v, nv, d, c = (x.reshape(T, -1) for x in (r, v, nv, d, c))
  adv = np.zeros_like(r)
  for b in range(r.shape[1]):
    delta = [r[t, b] + (0.0 if d[t, b] else gamma * nv[t, b]) - v[t, b]
             for t in range(T)]
    for t in range(T):
      total, weight = 0.0, 1.0
      for k in range(t, T):
        total += weight * delta[k]
        if d[k, b] or c[k, b]:
          break
        weight *= gamma * lam
      adv[t, b] = total
  return adv.reshape(shape)


def np_discounted_return(reward, next_value, terminated, truncated, gamma):
  """G_t = sum_k γ^k r_{t+k} to the episode end, + γ^K V(s_end) if not terminal."""
  r, nv = np.asarray(reward, np.float64), np.asarray(next_value, np.float64)
  d, c = np.asarray(terminated, bool), np.asarray(truncated, bool)
  T = r.shape[0]
  out = np.zeros_like(r)
  for t in range(T):
    total, weight = 0.0, 1.0
    for k in range(t, T):
      total += weight * r[k]
      weight *= gamma
      if d[k]:
        break
      if c[k] or k == T - 1:
        total += weight * nv[k]
        break
    out[t] = total
  return out


def random_rollout(rng, shape, p_term=0.1, p_trunc=0.1, both_at_end=True):
  reward = rng.normal(size=shape).astype(np.float32)
  value = rng.normal(size=shape).astype(np.float32)
  next_value = rng.normal(size=shape).astype(np.float32)
  terminated = rng.random(shape) < p_term
  truncated = rng.random(shape) < p_trunc
  if both_at_end:
    terminated[-1] = True
    truncated[-1] = True
  return reward, value, next_value, terminated, truncated


@pytest.mark.parametrize("shape", [(37,), (25, 3), (19, 2, 4)])
def test_gae_matches_numpy_reference(shape):
  rng = np.random.default_rng(0)
  batch = random_rollout(rng, shape)
  # Both flags somewhere in the middle too.
  batch[3][5] = True
  batch[4][5] = True
  adv, ret = jax.jit(jra.gae, static_argnames=())(
      *batch, gamma=0.97, lam=0.9)
  expected = np_gae(*batch, 0.97, 0.9)
  assert adv.shape == shape and adv.dtype == jnp.float32
  np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ret, expected + batch[1], rtol=1e-5, atol=1e-5)


def test_gae_float64_exact_to_1e12():
  rng = np.random.default_rng(1)
  shape = (50, 6)
  with jax.enable_x64(True):
    r, v, nv, d, c = random_rollout(rng, shape)
    r, v, nv = (x.astype(np.float64) for x in (r, v, nv))
    adv, _ = jra.gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv), d, c,
                     gamma=0.99, lam=0.95)
    assert adv.dtype == jnp.float64
    np.testing.assert_allclose(adv, np_gae(r, v, nv, d, c, 0.99, 0.95),
                               rtol=1e-12, atol=1e-12)


def test_lambda_one_is_discounted_return_minus_value():
  # One episode per column, consistent values: next_value[t] == value[t+1].
  rng = np.random.default_rng(2)
  T, gamma = 30, 0.9
  value_seq = rng.normal(size=T + 1)
  reward = rng.normal(size=T)
  value, next_value = value_seq[:-1], value_seq[1:]
  no = np.zeros(T, bool)
  for terminated_at_end in (True, False):
    term = no.copy()
    term[-1] = terminated_at_end
    with jax.enable_x64(True):
      adv, _ = jra.gae(jnp.asarray(reward), jnp.asarray(value),
                       jnp.asarray(next_value), term, no, gamma=gamma, lam=1.0)
    # G_t = sum_{k>=t} γ^{k-t} r_k (+ γ^{T-t} V(s_T) when the rollout is cut).
    discounts = gamma ** np.arange(T)
    g = np.array([np.sum(discounts[:T - t] * reward[t:]) for t in range(T)])
    if not terminated_at_end:
      g += gamma ** (T - np.arange(T)) * value_seq[-1]
    np.testing.assert_allclose(adv, g - value, rtol=1e-12, atol=1e-12)


def test_lambda_zero_is_td_error():
  rng = np.random.default_rng(3)
  r, v, nv, d, c = random_rollout(rng, (40, 3))
  adv, _ = jra.gae(r, v, nv, d, c, gamma=0.95, lam=0.0)
  td = r + 0.95 * np.where(d, 0.0, nv) - v
  np.testing.assert_allclose(adv, td, rtol=1e-6, atol=1e-6)


def test_truncation_bootstraps_and_termination_does_not():
  # Single step, reward 1, V(s)=0.5, V(s')=10, γ=0.9:
  #   truncated:  A = 1 + 0.9 * 10 - 0.5 = 9.5
  #   terminated: A = 1 - 0.5 = 0.5
  args = (jnp.array([1.0]), jnp.array([0.5]), jnp.array([10.0]))
  yes, no = jnp.array([True]), jnp.array([False])
  adv_cut, _ = jra.gae(*args, no, yes, gamma=0.9, lam=0.95)
  adv_end, _ = jra.gae(*args, yes, no, gamma=0.9, lam=0.95)
  np.testing.assert_allclose(adv_cut, [9.5], rtol=1e-6)
  np.testing.assert_allclose(adv_end, [0.5], rtol=1e-6)


def test_trace_does_not_cross_a_truncation():
  # Step 0 is truncated; step 1 belongs to the next episode with δ_1 = 100.
  # A_0 = δ_0 = 1 + 0.5 * 2 - 0 = 2, regardless of δ_1.
  reward = jnp.array([1.0, 100.0])
  value = jnp.zeros(2)
  next_value = jnp.array([2.0, 0.0])
  terminated = jnp.array([False, True])
  truncated = jnp.array([True, False])
  adv, _ = jra.gae(reward, value, next_value, terminated, truncated,
                   gamma=0.5, lam=1.0)
  np.testing.assert_allclose(adv, [2.0, 100.0], rtol=1e-6)


def test_lambda_returns_equal_gae_returns_with_consistent_values():
  rng = np.random.default_rng(4)
  T, B = 45, 5
  reward, value, _, terminated, truncated = random_rollout(rng, (T, B))
  # Inside an episode the successor's value is the next step's value; across
  # an episode boundary it is the final observation's own value.
  next_value = np.concatenate([value[1:], rng.normal(size=(1, B))]).astype(
      np.float32)
  boundary = terminated | truncated
  next_value = np.where(boundary, rng.normal(size=(T, B)).astype(np.float32),
                        next_value)
  _, ret = jra.gae(reward, value, next_value, terminated, truncated,
                   gamma=0.99, lam=0.8)
  lam_ret = jra.lambda_returns(reward, next_value, terminated, truncated,
                               gamma=0.99, lam=0.8)
  np.testing.assert_allclose(lam_ret, ret, rtol=1e-5, atol=1e-5)


def test_discounted_returns_match_numpy():
  rng = np.random.default_rng(5)
  reward, _, next_value, terminated, truncated = random_rollout(
      rng, (60,), both_at_end=False)
  out = jax.jit(jra.discounted_returns)(reward, next_value, terminated,
                                       truncated, gamma=0.9)
  expected = np_discounted_return(reward, next_value, terminated, truncated,
                                  0.9)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_vmap_over_gamma_and_lam_matches_loop():
  rng = np.random.default_rng(6)
  batch = random_rollout(rng, (20, 3))
  gammas = jnp.array([0.0, 0.5, 0.99, 1.0])
  lams = jnp.array([1.0, 0.9, 0.0, 0.5])
  fn = lambda g, l: jra.gae(*batch, gamma=g, lam=l)[0]
  swept = jax.jit(jax.vmap(fn))(gammas, lams)
  for i in range(4):
    np.testing.assert_allclose(
        swept[i], np_gae(*batch, float(gammas[i]), float(lams[i])),
        rtol=1e-5, atol=1e-5)


def test_vmap_over_a_leading_batch_axis():
  rng = np.random.default_rng(7)
  batch = random_rollout(rng, (4, 15, 2))  # [seeds, T, B]
  out = jax.vmap(lambda *a: jra.gae(*a, gamma=0.9, lam=0.7)[0])(*batch)
  for s in range(4):
    np.testing.assert_allclose(
        out[s], np_gae(*(x[s] for x in batch), 0.9, 0.7), rtol=1e-5,
        atol=1e-5)


@given(
    T=st.integers(1, 12),
    batch_shape=st.lists(st.integers(1, 3), max_size=2).map(tuple),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
    p_term=st.floats(0.0, 1.0),
    p_trunc=st.floats(0.0, 1.0),
)
def test_gae_property_matches_reference(T, batch_shape, gamma, lam, seed,
                                        p_term, p_trunc):
  rng = np.random.default_rng(seed)
  batch = random_rollout(rng, (T,) + batch_shape, p_term, p_trunc,
                         both_at_end=False)
  with jax.enable_x64(True):
    batch64 = [x.astype(np.float64) if x.dtype == np.float32 else x
               for x in batch]
    adv, ret = jra.gae(*batch64, gamma=gamma, lam=lam)
    np.testing.assert_allclose(adv, np_gae(*batch64, gamma, lam), rtol=1e-9,
                               atol=1e-9)
    np.testing.assert_allclose(ret - batch64[1], adv, rtol=1e-12, atol=1e-12)


def test_bad_input_raises_value_error_naming_the_argument():
  r = jnp.zeros(5)
  b = jnp.zeros(5, bool)
  with pytest.raises(ValueError, match="value"):
    jra.gae(r, jnp.zeros(4), r, b, b, gamma=0.9, lam=0.9)
  with pytest.raises(ValueError, match="truncated"):
    jra.gae(r, r, r, b, jnp.zeros((5, 1), bool), gamma=0.9, lam=0.9)
  with pytest.raises(ValueError, match="gamma"):
    jra.gae(r, r, r, b, b, gamma=1.5, lam=0.9)
  with pytest.raises(ValueError, match="lam"):
    jra.gae(r, r, r, b, b, gamma=0.9, lam=-0.1)
  with pytest.raises(ValueError, match="gamma"):
    jra.lambda_returns(r, r, b, b, gamma=float("nan"), lam=0.5)
  with pytest.raises(ValueError, match="reward"):
    jra.gae(jnp.zeros(()), jnp.zeros(()), jnp.zeros(()), jnp.zeros((), bool),
            jnp.zeros((), bool), gamma=0.9, lam=0.9)
  with pytest.raises(ValueError, match="gamma"):
    jra.discounted_returns(r, r, b, b, gamma=jnp.ones(2))
