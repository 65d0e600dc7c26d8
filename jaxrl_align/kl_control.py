"""KL-coefficient controllers as ``(init, update)`` pairs over a NamedTuple.

A controller holds the coefficient ``β`` of a KL penalty and adapts it from
the KL measured after each update. Build one from numbers (inside a jitted
or vmapped function if the numbers are traced), then thread its state::

    controller = adaptive_kl_controller(0.1, target=6.0, horizon=10_000)
    state = controller.init()
    ...
    state = controller.update(state, measured_kl, num_steps)
    penalty = state.coef * kl

``num_steps`` is the number of samples (e.g. episodes or sequences) the KL
was measured on; only :func:`adaptive_kl_controller` uses it.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_align import _checks

Array = jax.Array


class KLControllerState(NamedTuple):
  """State of a KL controller.

  Attributes:
    coef: scalar ``β``, the current penalty coefficient.
  """
  coef: Array


class KLController(NamedTuple):
  """A pair of pure functions.

  Attributes:
    init: ``() -> KLControllerState``.
    update: ``(state, kl, num_steps=1) -> KLControllerState``; ``kl`` is the
      scalar KL measured under the current coefficient.
  """
  init: Callable[[], KLControllerState]
  update: Callable[..., KLControllerState]


def _coef(value) -> Array:
  return jnp.asarray(value, dtype=float)


def _check_measured(kl, num_steps) -> None:
  """``update``'s inputs: a real scalar KL (any value: an estimate may be
  negative) and ``num_steps ≥ 0``."""
  _checks.check_real_number("kl", kl)
  if jnp.ndim(kl) != 0:
    raise ValueError(f"`kl` must be a scalar, got shape {jnp.shape(kl)}.")
  _checks.check_scalar_in_range("num_steps", num_steps, 0.0, float("inf"))


def fixed_kl_controller(coef: float | Array) -> KLController:
  """A constant coefficient: ``update`` returns its state unchanged.

  Args:
    coef: ``β ≥ 0``.

  Returns:
    A :class:`KLController`.
  """
  _checks.check_scalar_in_range("coef", coef, 0.0, float("inf"))

  def init():
    return KLControllerState(coef=_coef(coef))

  def update(state, kl, num_steps=1):
    del kl, num_steps
    return state

  return KLController(init, update)


def adaptive_kl_controller(
    init_coef: float | Array,
    *,
    target: float | Array,
    horizon: float | Array,
) -> KLController:
  r"""Proportional controller of Ziegler et al. (2019).

  .. math::

    e = \operatorname{clip}\Big(\frac{\mathrm{KL}}{\mathrm{KL}_{target}} - 1,
        -0.2, 0.2\Big), \qquad
    \beta \leftarrow \beta \Big(1 + e \cdot \frac{n}{\text{horizon}}\Big)

  with ``n = num_steps``.

  Args:
    init_coef: initial ``β ≥ 0``.
    target: target KL, > 0.
    horizon: > 0; the larger, the slower β adapts.

  Returns:
    A :class:`KLController`.

  References:
    Ziegler et al., 2019, "Fine-Tuning Language Models from Human
    Preferences", https://arxiv.org/abs/1909.08593, section 2.2.
  """
  _checks.check_scalar_in_range("init_coef", init_coef, 0.0, float("inf"))
  _checks.check_scalar_in_range("target", target, 0.0, float("inf"),
                                low_inclusive=False)
  _checks.check_scalar_in_range("horizon", horizon, 0.0, float("inf"),
                                low_inclusive=False)

  def init():
    return KLControllerState(coef=_coef(init_coef))

  def update(state, kl, num_steps=1):
    _check_measured(kl, num_steps)
    dtype = state.coef.dtype
    kl = jnp.asarray(kl, dtype)
    error = jnp.clip(kl / jnp.asarray(target, dtype) - 1, -0.2, 0.2)
    gain = jnp.asarray(num_steps, dtype) / jnp.asarray(horizon, dtype)
    return KLControllerState(coef=state.coef * (1 + error * gain))

  return KLController(init, update)


def ppo_kl_controller(
    init_coef: float | Array,
    *,
    target: float | Array,
    tolerance: float | Array = 1.5,
    factor: float | Array = 2.0,
) -> KLController:
  r"""Adaptive ``β`` of the PPO paper's KL-penalty objective.

  .. math::

    \beta \leftarrow \begin{cases}
      \beta / \text{factor} & \mathrm{KL} < d_{targ} / \text{tolerance} \\
      \beta \cdot \text{factor} & \mathrm{KL} > d_{targ} \cdot \text{tolerance}\\
      \beta & \text{otherwise}
    \end{cases}

  The paper uses ``tolerance = 1.5`` and ``factor = 2``.

  Args:
    init_coef: initial ``β ≥ 0``.
    target: ``d_targ > 0``.
    tolerance: > 1.
    factor: > 1.

  Returns:
    A :class:`KLController`.

  References:
    Schulman et al., 2017, "Proximal Policy Optimization Algorithms",
    https://arxiv.org/abs/1707.06347, section 4.
  """
  _checks.check_scalar_in_range("init_coef", init_coef, 0.0, float("inf"))
  _checks.check_scalar_in_range("target", target, 0.0, float("inf"),
                                low_inclusive=False)
  _checks.check_scalar_in_range("tolerance", tolerance, 1.0, float("inf"),
                                low_inclusive=False)
  _checks.check_scalar_in_range("factor", factor, 1.0, float("inf"),
                                low_inclusive=False)

  def init():
    return KLControllerState(coef=_coef(init_coef))

  def update(state, kl, num_steps=1):
    _check_measured(kl, num_steps)
    del num_steps
    dtype = state.coef.dtype
    kl = jnp.asarray(kl, dtype)
    target_ = jnp.asarray(target, dtype)
    tol = jnp.asarray(tolerance, dtype)
    fac = jnp.asarray(factor, dtype)
    coef = jnp.where(kl < target_ / tol, state.coef / fac, state.coef)
    coef = jnp.where(kl > target_ * tol, state.coef * fac, coef)
    return KLControllerState(coef=coef)

  return KLController(init, update)
