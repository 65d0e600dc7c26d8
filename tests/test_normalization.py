"""Running mean/variance against NumPy on the same stream; normalize."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_align as jra


def stream(rng, sizes, sample_shape):
  return [rng.normal(3.0, 2.0, size=(n,) + sample_shape) for n in sizes]


@pytest.mark.parametrize("sample_shape", [(), (3,), (2, 3)])
def test_batched_updates_equal_numpy_float64(sample_shape):
  rng = np.random.default_rng(0)
  batches = stream(rng, [1, 7, 64, 3, 200, 1], sample_shape)
  with jax.enable_x64(True):
    state = jra.running_mean_std_init(sample_shape, jnp.float64)
    update = jax.jit(jra.running_mean_std_update)
    for b in batches:
      state = update(state, jnp.asarray(b))
    data = np.concatenate(batches)
    np.testing.assert_allclose(state.mean, data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(state.var, data.var(0), rtol=1e-12)
    assert float(state.count) == len(data)


def test_float32_stream_with_large_offset():
  # Welford/Chan stays accurate where the naive E[x²] - E[x]² would not.
  rng = np.random.default_rng(1)
  batches = [rng.normal(1e4, 1.0, size=(256, 2)) for _ in range(40)]
  state = jra.running_mean_std_init((2,))
  for b in batches:
    state = jra.running_mean_std_update(state, jnp.asarray(b, jnp.float32))
  data = np.concatenate(batches)
  np.testing.assert_allclose(state.mean, data.mean(0), rtol=1e-6)
  np.testing.assert_allclose(state.var, data.var(0), rtol=1e-2)


def test_one_batch_equals_one_by_one():
  rng = np.random.default_rng(2)
  data = jnp.asarray(rng.normal(size=(50, 4)), jnp.float32)
  batched = jra.running_mean_std_update(jra.running_mean_std_init((4,)), data)

  def one(state, x):
    return jra.running_mean_std_update(state, x[None]), None

  single, _ = jax.lax.scan(one, jra.running_mean_std_init((4,)), data)
  for a, b in zip(batched, single):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mask_selects_samples_and_empty_batch_is_a_no_op():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(6, 5, 2)).astype(np.float32)  # [T, B, obs]
  mask = rng.random((6, 5)) < 0.5
  state = jra.running_mean_std_update(jra.running_mean_std_init((2,)), x,
                                      mask=mask)
  np.testing.assert_allclose(state.mean, x[mask].mean(0), rtol=1e-5)
  np.testing.assert_allclose(state.var, x[mask].var(0), rtol=1e-5)
  same = jra.running_mean_std_update(state, x, mask=np.zeros((6, 5), bool))
  for a, b in zip(state, same):
    np.testing.assert_array_equal(a, b)


def test_normalize_and_clip():
  state = jra.RunningMeanStd(mean=jnp.array([1.0, -2.0]),
                             var=jnp.array([4.0, 0.25]), count=jnp.array(10.0))
  x = jnp.array([[3.0, -2.0], [1.0, 10.0]])
  # (x - μ)/σ = [[1, 0], [0, 24]]; clip 5 turns 24 into 5.
  np.testing.assert_allclose(jra.normalize(state, x, eps=1e-12),
                             [[1.0, 0.0], [0.0, 24.0]], rtol=1e-6)
  np.testing.assert_allclose(jra.normalize(state, x, clip=5.0, eps=1e-12),
                             [[1.0, 0.0], [0.0, 5.0]], rtol=1e-6)
  # Scaling only: x / σ.
  np.testing.assert_allclose(
      jra.normalize(state, x, center=False, eps=1e-12),
      [[1.5, -4.0], [0.5, 20.0]], rtol=1e-6)


def test_vmap_over_independent_streams():
  rng = np.random.default_rng(4)
  data = jnp.asarray(rng.normal(size=(3, 20, 2)), jnp.float32)
  init = jax.vmap(lambda _: jra.running_mean_std_init((2,)))(jnp.arange(3))
  out = jax.jit(jax.vmap(jra.running_mean_std_update))(init, data)
  np.testing.assert_allclose(out.mean, np.asarray(data).mean(1), rtol=1e-5)
  np.testing.assert_allclose(out.var, np.asarray(data).var(1), rtol=1e-5)


def test_normalization_bad_input():
  state = jra.running_mean_std_init((3,))
  with pytest.raises(ValueError, match="x"):
    jra.running_mean_std_update(state, jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="mask"):
    jra.running_mean_std_update(state, jnp.zeros((4, 3)), mask=jnp.ones(3, bool))
  with pytest.raises(ValueError, match="clip"):
    jra.normalize(state, jnp.zeros((4, 3)), clip=0.0)
