"""Advantage and return estimators that keep termination and truncation apart.

All arrays are time-major, ``[T, *B]``: ``T`` steps of a rollout followed by
any batch shape (empty for a single stream). Element ``t`` describes the
transition ``s_t --a_t--> s_{t+1}``:

* ``reward[t]``: reward for ``a_t``;
* ``value[t] = V(s_t)``;
* ``next_value[t] = V(s_{t+1})`` where ``s_{t+1}`` is the true successor, i.e.
  the final observation when the episode ended at ``t`` (never the
  observation an auto-reset put in its place);
* ``terminated[t]``: ``s_{t+1}`` is terminal, its value is zero;
* ``truncated[t]``: the episode was cut after ``t`` (a time limit), so we
  bootstrap from ``next_value[t]``, but no trace crosses into the next episode.

The last step of a rollout is always treated as a cut: estimators bootstrap
from ``next_value[T-1]`` there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import _checks

Array = jax.Array


def _prepare(reward, value, next_value, terminated, truncated):
  """Validates shapes and dtypes; returns float arrays and the dtype."""
  arrays = dict(reward=reward, next_value=next_value, terminated=terminated,
                truncated=truncated)
  if value is not None:
    arrays["value"] = value
  _checks.check_same_shape(**arrays)
  _checks.check_min_rank("reward", reward, 1)
  _checks.check_non_empty("reward", reward, axis=0)
  for name in ("reward", "next_value") + (("value",) if value is not None else ()):
    _checks.check_floating(name, arrays[name])
  _checks.check_flags("terminated", terminated)
  _checks.check_flags("truncated", truncated)
  dtype = jnp.result_type(*(arrays[n] for n in ("reward", "next_value")))
  cast = lambda x: jnp.asarray(x).astype(dtype)
  return (cast(reward), None if value is None else cast(value),
          cast(next_value), cast(terminated), cast(truncated), dtype)


def _check_gamma_lam(gamma, lam):
  _checks.check_scalar_in_range("gamma", gamma, 0.0, 1.0)
  if lam is not None:
    _checks.check_scalar_in_range("lam", lam, 0.0, 1.0)


def gae(
    reward: Array,
    value: Array,
    next_value: Array,
    terminated: Array,
    truncated: Array,
    *,
    gamma: float | Array,
    lam: float | Array,
) -> tuple[Array, Array]:
  r"""Generalised advantage estimation with separate termination and truncation.

  .. math::

    \delta_t = r_t + \gamma (1 - d_t) V(s_{t+1}) - V(s_t)

    A_t = \delta_t + \gamma \lambda (1 - d_t)(1 - c_t) A_{t+1},
    \qquad A_T = 0

  with ``d = terminated`` and ``c = truncated``. A truncated step still
  bootstraps from ``next_value`` (the value of the true final observation);
  only a terminated one does not.

  Args:
    reward: ``[T, *B]`` float rewards.
    value: ``[T, *B]`` float, ``V(s_t)``.
    next_value: ``[T, *B]`` float, ``V(s_{t+1})`` of the true successor.
    terminated: ``[T, *B]`` bool (or 0/1), the successor is terminal.
    truncated: ``[T, *B]`` bool (or 0/1), the episode was cut after ``t``.
    gamma: scalar discount in ``[0, 1]`` (may be traced, e.g. under ``vmap``).
    lam: scalar λ in ``[0, 1]`` (may be traced).

  Returns:
    ``(advantages, returns)``, both ``[T, *B]`` in the dtype of ``reward``,
    with ``returns = advantages + value``.

  Raises:
    ValueError: shapes differ; ``reward`` has no time axis or ``T = 0``;
      ``terminated``/``truncated`` are not bool or integer 0/1 (a float
      flag is refused at trace time too, a concrete 2 before it is used);
      ``gamma``/``lam`` is not a real number, or a concrete one is outside
      ``[0, 1]``.

  References:
    Schulman et al., 2016, "High-Dimensional Continuous Control Using
    Generalized Advantage Estimation", https://arxiv.org/abs/1506.02438.
    Pardo et al., 2018, "Time Limits in Reinforcement Learning",
    https://arxiv.org/abs/1712.00378.

  Examples:
    >>> import jax.numpy as jnp
    >>> adv, ret = gae(jnp.ones(3), jnp.zeros(3), jnp.zeros(3),
    ...                jnp.array([False, False, True]), jnp.zeros(3, bool),
    ...                gamma=0.5, lam=1.0)
    >>> adv.tolist()
    [1.75, 1.5, 1.0]
  """
  reward, value, next_value, terminated, truncated, dtype = _prepare(
      reward, value, next_value, terminated, truncated)
  _check_gamma_lam(gamma, lam)
  gamma = jnp.asarray(gamma, dtype)
  lam = jnp.asarray(lam, dtype)

  not_terminal = 1 - terminated
  delta = reward + gamma * not_terminal * next_value - value
  trace = gamma * lam * not_terminal * (1 - truncated)

  def _backward(next_advantage, inputs):
    delta_t, trace_t = inputs
    advantage = delta_t + trace_t * next_advantage
    return advantage, advantage

  _, advantages = jax.lax.scan(
      _backward, jnp.zeros_like(delta[0]), (delta, trace), reverse=True)
  return advantages, advantages + value


def lambda_returns(
    reward: Array,
    next_value: Array,
    terminated: Array,
    truncated: Array,
    *,
    gamma: float | Array,
    lam: float | Array,
) -> Array:
  r"""TD(λ) returns, bootstrapping at truncations and at the rollout's end.

  .. math::

    G_t = r_t + \gamma (1 - d_t)\big[(1-\lambda) V(s_{t+1})
          + \lambda\, \tilde G_{t+1}\big],
    \qquad \tilde G_{t+1} = \begin{cases} V(s_{t+1}) & c_t \text{ or } t = T-1
    \\ G_{t+1} & \text{otherwise.}\end{cases}

  When ``next_value[t] == value[t+1]`` inside every episode, this equals the
  ``returns`` of :func:`gae`.

  Args:
    reward: ``[T, *B]`` float rewards.
    next_value: ``[T, *B]`` float, ``V(s_{t+1})`` of the true successor.
    terminated: ``[T, *B]`` bool (or 0/1), the successor is terminal.
    truncated: ``[T, *B]`` bool (or 0/1), the episode was cut after ``t``.
    gamma: scalar discount in ``[0, 1]``.
    lam: scalar λ in ``[0, 1]``.

  Returns:
    ``[T, *B]`` λ-returns in the dtype of ``reward``.

  References:
    Sutton & Barto, 2018, "Reinforcement Learning: An Introduction", ch. 12.
  """
  reward, _, next_value, terminated, truncated, dtype = _prepare(
      reward, None, next_value, terminated, truncated)
  _check_gamma_lam(gamma, lam)
  gamma = jnp.asarray(gamma, dtype)
  lam = jnp.asarray(lam, dtype)
  discount = gamma * (1 - terminated)

  def _backward(next_return, inputs):
    r_t, discount_t, next_value_t, truncated_t = inputs
    tail = jnp.where(truncated_t > 0, next_value_t, next_return)
    ret = r_t + discount_t * ((1 - lam) * next_value_t + lam * tail)
    return ret, ret

  _, returns = jax.lax.scan(
      _backward, next_value[-1], (reward, discount, next_value, truncated),
      reverse=True)
  return returns


def discounted_returns(
    reward: Array,
    next_value: Array,
    terminated: Array,
    truncated: Array,
    *,
    gamma: float | Array,
) -> Array:
  r"""Discounted returns, bootstrapping at truncations and the rollout's end.

  .. math::

    G_t = r_t + \gamma (1 - d_t)\,\begin{cases} V(s_{t+1}) & c_t
    \text{ or } t = T-1 \\ G_{t+1} & \text{otherwise.}\end{cases}

  Pass ``next_value = zeros`` for pure Monte-Carlo returns. This is
  :func:`lambda_returns` with ``lam = 1``.

  Args:
    reward: ``[T, *B]`` float rewards.
    next_value: ``[T, *B]`` float, ``V(s_{t+1})`` of the true successor.
    terminated: ``[T, *B]`` bool (or 0/1), the successor is terminal.
    truncated: ``[T, *B]`` bool (or 0/1), the episode was cut after ``t``.
    gamma: scalar discount in ``[0, 1]``.

  Returns:
    ``[T, *B]`` returns in the dtype of ``reward``.
  """
  return lambda_returns(reward, next_value, terminated, truncated,
                        gamma=gamma, lam=1.0)


def _check_group(reward):
  _checks.check_min_rank("reward", reward, 1)
  _checks.check_floating("reward", reward)
  if jnp.shape(reward)[0] < 2:
    raise ValueError(f"`reward` needs at least 2 samples per group on its "
                     f"first axis, got shape {jnp.shape(reward)}.")


def rloo_advantages(reward: Array) -> Array:
  r"""REINFORCE leave-one-out: each sample's reward minus the mean of the
  other samples of its group.

  .. math::

    A_i = r_i - \frac{1}{G - 1} \sum_{j \ne i} r_j
        = \frac{G}{G - 1} (r_i - \bar r)

  The baseline of sample ``i`` does not depend on ``r_i``, so the policy
  gradient stays unbiased.

  Args:
    reward: ``[G, *B]``: ``G ≥ 2`` sampled responses (axis 0, like the time
      axis of the other estimators) for each of ``*B`` prompts.

  Returns:
    ``[G, *B]`` advantages; each group sums to zero.

  References:
    Kool et al., 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!";
    Ahmadian et al., 2024, https://arxiv.org/abs/2402.14740; TRL's
    ``trl/trainer/rloo_trainer.py`` (rewards reshaped ``[rloo_k, -1]``,
    ``baseline = (sum - r) / (rloo_k - 1)``).

  Examples:
    >>> import jax.numpy as jnp
    >>> rloo_advantages(jnp.array([1.0, 2.0, 6.0])).tolist()
    [-3.0, -1.5, 4.5]
  """
  _check_group(reward)
  g = reward.shape[0]
  baseline = (jnp.sum(reward, axis=0, keepdims=True) - reward) / (g - 1)
  return reward - baseline


GRPO_SCALES = ("group", "batch", "none")


def grpo_advantages(reward: Array, *, scale: bool | str = True,
                    eps: float = 1e-4) -> Array:
  r"""Group-relative advantages of GRPO: rewards standardised within each
  group of samples of the same prompt.

  .. math::

    A_i = \frac{r_i - \operatorname{mean}(r)}{\operatorname{std}(r) + \epsilon}

  with the unbiased standard deviation (``ddof = 1``, as PyTorch's default
  that TRL uses) of the group (``scale="group"`` or ``True``), or of every
  reward of the batch (``"batch"``, Hu et al. 2025's REINFORCE++-baseline
  and TRL's ``scale_rewards="batch"``); ``scale="none"`` (or ``False``)
  keeps only the group mean's subtraction (Dr. GRPO, TRL's
  ``scale_rewards="none"``).

  Args:
    reward: ``[G, *B]``, ``G ≥ 2`` samples per prompt on axis 0.
    scale: ``"group"``, ``"batch"`` or ``"none"`` (``True``: group,
      ``False``: none; static).
    eps: added to the standard deviation, ≥ 0.

  Returns:
    ``[G, *B]`` advantages.

  References:
    Shao et al., 2024, "DeepSeekMath", https://arxiv.org/abs/2402.03300
    (section 4.1); TRL's ``trl/trainer/grpo_trainer.py``
    (``(rewards - mean_grouped) / (std_grouped + 1e-4)``); Liu et al., 2025,
    "Understanding R1-Zero-Like Training", https://arxiv.org/abs/2503.20783.

  Examples:
    >>> import jax.numpy as jnp
    >>> grpo_advantages(jnp.array([0.0, 2.0]), eps=0.0).tolist()
    [-0.7071067690849304, 0.7071067690849304]
  """
  _check_group(reward)
  _checks.check_scalar_in_range("eps", eps, 0.0, float("inf"))
  if isinstance(scale, (bool, np.bool_)):
    scale = "group" if scale else "none"
  if scale not in GRPO_SCALES:
    raise ValueError(f"`scale` must be one of {', '.join(GRPO_SCALES)} (or "
                     f"a bool), got {scale!r}.")
  centred = reward - jnp.mean(reward, axis=0, keepdims=True)
  if scale == "none":
    return centred
  std = (jnp.std(reward, axis=0, ddof=1, keepdims=True) if scale == "group"
         else jnp.std(reward, ddof=1))
  return centred / (std + jnp.asarray(eps, reward.dtype))
