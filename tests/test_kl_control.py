"""KL controllers: hand-derived updates, jit, vmap and scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_align as jra


def test_fixed_controller_never_moves():
  ctrl = jra.fixed_kl_controller(0.05)
  state = ctrl.init()
  for kl in (0.0, 1.0, 100.0):
    state = ctrl.update(state, kl, 64)
  np.testing.assert_allclose(state.coef, 0.05)


@pytest.mark.parametrize("kl, expected", [
    # e = clip(12/6 - 1, ±0.2) = 0.2;   β = 0.1 (1 + 0.2 · 256/10000)
    (12.0, 0.1 * (1 + 0.2 * 0.0256)),
    # e = clip(3/6 - 1, ±0.2) = -0.2;   β = 0.1 (1 - 0.2 · 0.0256)
    (3.0, 0.1 * (1 - 0.2 * 0.0256)),
    # e = 6.6/6 - 1 = 0.1 (inside the clip)
    (6.6, 0.1 * (1 + 0.1 * 0.0256)),
    (6.0, 0.1),
])
def test_adaptive_controller_hand_values(kl, expected):
  ctrl = jra.adaptive_kl_controller(0.1, target=6.0, horizon=10_000)
  state = jax.jit(ctrl.update)(ctrl.init(), kl, 256)
  np.testing.assert_allclose(state.coef, expected, rtol=1e-6)


def test_adaptive_controller_scan_equals_python_loop():
  kls = np.array([1.0, 8.0, 20.0, 6.0, 0.5, 7.0], np.float32)
  ctrl = jra.adaptive_kl_controller(0.2, target=6.0, horizon=100)

  def body(state, kl):
    state = ctrl.update(state, kl, 10)
    return state, state.coef

  _, coefs = jax.jit(lambda k: jax.lax.scan(body, ctrl.init(), k))(kls)
  beta, expected = 0.2, []
  for kl in kls:
    beta *= 1 + np.clip(kl / 6.0 - 1, -0.2, 0.2) * 10 / 100
    expected.append(beta)
  np.testing.assert_allclose(coefs, expected, rtol=1e-5)


def test_ppo_controller_halves_doubles_or_keeps():
  ctrl = jra.ppo_kl_controller(1.0, target=0.01)
  update = jax.jit(ctrl.update)
  # Below 0.01/1.5 = 0.00667: halve.  Above 0.015: double.  Between: keep.
  np.testing.assert_allclose(update(ctrl.init(), 0.005).coef, 0.5)
  np.testing.assert_allclose(update(ctrl.init(), 0.02).coef, 2.0)
  np.testing.assert_allclose(update(ctrl.init(), 0.01).coef, 1.0)
  np.testing.assert_allclose(update(ctrl.init(), 0.0149).coef, 1.0)
  np.testing.assert_allclose(update(ctrl.init(), 0.0067).coef, 1.0)


def test_controllers_vmap_over_target():
  targets = jnp.array([1.0, 6.0, 20.0])

  def run(target):
    ctrl = jra.adaptive_kl_controller(0.1, target=target, horizon=100)
    return ctrl.update(ctrl.init(), 6.0, 50).coef

  coefs = jax.jit(jax.vmap(run))(targets)
  # 6/1 - 1 = 5 -> 0.2; 6/6 - 1 = 0; 6/20 - 1 = -0.7 -> -0.2; gain 0.5.
  np.testing.assert_allclose(coefs, [0.11, 0.1, 0.09], rtol=1e-6)


def test_controller_bad_input():
  with pytest.raises(ValueError, match="coef"):
    jra.fixed_kl_controller(-1.0)
  with pytest.raises(ValueError, match="target"):
    jra.adaptive_kl_controller(0.1, target=0.0, horizon=10)
  with pytest.raises(ValueError, match="horizon"):
    jra.adaptive_kl_controller(0.1, target=1.0, horizon=-5)
  with pytest.raises(ValueError, match="factor"):
    jra.ppo_kl_controller(1.0, target=0.01, factor=1.0)
  with pytest.raises(ValueError, match="tolerance"):
    jra.ppo_kl_controller(1.0, target=0.01, tolerance=0.5)
