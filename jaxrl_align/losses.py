"""Policy-gradient objectives, value losses and their diagnostics.

Every loss is a scalar to *minimise*. Inputs share one shape ``[*N]`` (any
batch of samples: ``[T, B]``, a flat minibatch, tokens...) with at least one
entry. An optional boolean (or integer 0/1) ``mask`` of the same shape
selects the entries that count (padding tokens, for instance); the mean is
over selected entries, and is 0 when none is. A float mask is refused: it
would weigh entries instead of selecting them.

KL estimators follow Schulman (2020), "Approximating KL Divergence",
http://joschu.net/blog/kl-approx.html. With samples ``x ~ old`` and
``log r = log_prob - old_log_prob``, each estimates ``KL(old || new)``:
``k1 = -log r`` (unbiased, high variance, can be negative),
``k2 = (log r)^2 / 2`` (biased, low variance),
``k3 = (r - 1) - log r`` (unbiased, non-negative, low variance).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_align import _checks

Array = jax.Array


def _check_mask(mask, shape):
  if mask is None:
    return
  if jnp.shape(mask) != tuple(shape):
    raise ValueError(f"`mask` must have shape {tuple(shape)}, got "
                     f"{jnp.shape(mask)}.")
  _checks.check_flags("mask", mask)


def masked_mean(x: Array, mask: Array | None = None) -> Array:
  """Mean of ``x`` over the entries where ``mask`` is true (all when None).

  Args:
    x: ``[*N]`` float.
    mask: ``[*N]`` bool, or None.

  Returns:
    Scalar in the dtype of ``x``; 0 when the mask selects nothing.

  Raises:
    ValueError: ``x`` has no entries (its mean is undefined), or ``mask``
      has another shape or is not bool (or integer 0/1).
  """
  _checks.check_non_empty("x", x)
  if mask is None:
    return jnp.mean(x)
  _check_mask(mask, jnp.shape(x))
  mask = jnp.asarray(mask).astype(jnp.result_type(x))
  count = jnp.sum(mask)
  return jnp.sum(x * mask) / jnp.maximum(count, 1)


def _log_ratio(log_prob, old_log_prob, mask, **others):
  _checks.check_same_shape(log_prob=log_prob, old_log_prob=old_log_prob,
                           **others)
  _checks.check_floating("log_prob", log_prob)
  _check_mask(mask, jnp.shape(log_prob))
  return log_prob - old_log_prob


def _check_batch(name, x, mask):
  """A loss's first input: floating, with entries (a loss over none is
  undefined), and its mask."""
  _checks.check_floating(name, x)
  _checks.check_non_empty(name, x)
  _check_mask(mask, jnp.shape(x))


def ppo_clip_loss(
    log_prob: Array,
    old_log_prob: Array,
    advantage: Array,
    *,
    clip_eps: float | Array,
    mask: Array | None = None,
) -> Array:
  r"""PPO's clipped surrogate objective, negated.

  .. math::

    L = -\operatorname{mean}\big[\min(\rho A,\
        \operatorname{clip}(\rho, 1-\epsilon, 1+\epsilon) A)\big],
    \qquad \rho = \exp(\log\pi - \log\pi_{old})

  Args:
    log_prob: ``[*N]`` log-probabilities under the current policy.
    old_log_prob: ``[*N]`` log-probabilities under the behaviour policy.
    advantage: ``[*N]`` advantage estimates (normalise them beforehand if
      wanted; this function does not).
    clip_eps: ε > 0 (may be traced).
    mask: optional ``[*N]`` bool of the entries to average over.

  Returns:
    Scalar loss.

  References:
    Schulman et al., 2017, "Proximal Policy Optimization Algorithms",
    https://arxiv.org/abs/1707.06347, eq. (7).
  """
  log_ratio = _log_ratio(log_prob, old_log_prob, mask, advantage=advantage)
  _checks.check_non_empty("log_prob", log_prob)
  _checks.check_scalar_in_range("clip_eps", clip_eps, 0.0, float("inf"),
                                low_inclusive=False)
  eps = jnp.asarray(clip_eps, log_ratio.dtype)
  ratio = jnp.exp(log_ratio)
  surrogate = jnp.minimum(ratio * advantage,
                          jnp.clip(ratio, 1 - eps, 1 + eps) * advantage)
  return -masked_mean(surrogate, mask)


def clipped_surrogate(
    log_ratio: Array,
    advantage: Array,
    *,
    clip_low: float | Array,
    clip_high: float | Array | None = None,
    dual_clip: float | Array = 0.0,
) -> Array:
  r"""Each sample's negated clipped surrogate, with an asymmetric clip range
  and a dual clip: the per-sample terms of :func:`ppo_clip_loss`, for a
  caller that aggregates them itself (over tokens, sequences or a batch).

  .. math::

    \ell = -\min\big(\min(\rho, c)\,A,\
        \operatorname{clip}(\rho, 1-\epsilon_{low}, 1+\epsilon_{high})\,A
        \big), \qquad \rho = \exp(\text{log\_ratio})

  With ``dual_clip`` ``c > 1 + ε_high`` the loss of a sample with ``A < 0``
  stops growing once ``ρ > c`` (Ye et al. 2020's dual clip; TRL's GRPO
  ``delta``, INTELLECT-2's two-sided clip); ``c = 0`` (the default) is no
  cap. For ``A > 0`` the cap never binds.

  Args:
    log_ratio: ``[*N]`` ``log π - log π_old`` (per token, or per sequence).
    advantage: ``[*N]``.
    clip_low: ``ε_low > 0``.
    clip_high: ``ε_high > 0`` (None: ``ε_low``; DAPO's "clip-higher" uses
      0.28 with ``ε_low`` 0.2).
    dual_clip: ``c``: 0 (no cap) or ``> 1 + ε_high`` (checked when
      untraced).

  Returns:
    ``[*N]`` per-sample losses.

  References:
    Schulman et al., 2017, eq. (7); Yu et al., 2025, "DAPO",
    https://arxiv.org/abs/2503.14476 (clip-higher); Ye et al., 2020,
    "Mastering Complex Control in MOBA Games with Deep RL",
    https://arxiv.org/abs/1912.09729 (dual clip); TRL 1.16.0's
    ``trl/trainer/grpo_trainer.py``, ``_compute_loss`` (``coef_2 =
    clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)``, ``coef_1 =
    clamp(coef_1, max=delta)``).

  Examples:
    >>> import jax.numpy as jnp
    >>> clipped_surrogate(jnp.log(jnp.array([1.5, 3.0])),
    ...                   jnp.array([1.0, -1.0]), clip_low=0.2,
    ...                   dual_clip=2.0).tolist()
    [-1.2000000476837158, 2.0]
  """
  _checks.check_same_shape(log_ratio=log_ratio, advantage=advantage)
  _check_batch("log_ratio", log_ratio, None)
  clip_high = clip_low if clip_high is None else clip_high
  for name, eps in (("clip_low", clip_low), ("clip_high", clip_high)):
    _checks.check_scalar_in_range(name, eps, 0.0, float("inf"),
                                  low_inclusive=False)
  _checks.check_scalar_in_range("dual_clip", dual_clip, 0.0, float("inf"))
  if _checks.is_concrete(dual_clip) and _checks.is_concrete(clip_high) and (
      0 < float(dual_clip) <= 1 + float(clip_high)):
    raise ValueError(f"`dual_clip` must be 0 or > 1 + clip_high "
                     f"({1 + float(clip_high)}), got {float(dual_clip)}.")
  dtype = log_ratio.dtype
  ratio = jnp.exp(log_ratio)
  c = jnp.asarray(dual_clip, dtype)
  capped = jnp.where(c > 0, jnp.minimum(ratio, c), ratio)
  clipped = jnp.clip(ratio, 1 - jnp.asarray(clip_low, dtype),
                     1 + jnp.asarray(clip_high, dtype))
  return -jnp.minimum(capped * advantage, clipped * advantage)


AGGREGATIONS = ("grpo", "bnpo", "dr_grpo", "dapo")


def aggregate_tokens(loss: Array, mask: Array, how: str, *,
                     max_length: int | None = None,
                     tokens: Array | None = None) -> Array:
  r"""One scalar from per-token losses of ``B`` sequences, as GRPO's
  variants aggregate them (TRL's ``loss_type``).

  - ``"grpo"``: each sequence's mean over its tokens, then the mean over
    sequences (Shao et al. 2024; longer sequences weigh less per token);
  - ``"bnpo"``: the mean over every token of the batch;
  - ``"dr_grpo"``: the sum over tokens divided by ``B · max_length``
    (Liu et al. 2025, Dr. GRPO: a constant);
  - ``"dapo"``: the sum over tokens divided by ``tokens``, the count of
    tokens the whole batch holds per minibatch (Yu et al. 2025, DAPO:
    token-level, the same normaliser for every minibatch of a batch).

  Args:
    loss: ``[B, N]`` per-token losses.
    mask: ``[B, N]`` bool, response tokens.
    how: one of :data:`AGGREGATIONS` (static).
    max_length: ``"dr_grpo"``'s length (static, ≥ 1; the response length).
    tokens: ``"dapo"``'s normaliser (> 0; may be traced).

  Returns:
    Scalar.

  References:
    TRL 1.16.0's ``trl/trainer/grpo_trainer.py``, ``_compute_loss``: the
    branches on ``self.loss_type`` after ``per_token_loss`` is formed.
  """
  if how not in AGGREGATIONS:
    raise ValueError(f"`how` must be one of {', '.join(AGGREGATIONS)}, got "
                     f"{how!r}.")
  _checks.check_same_shape(loss=loss, mask=mask)
  _checks.check_min_rank("loss", loss, 2)
  _check_batch("loss", loss, mask)
  live = jnp.asarray(mask).astype(loss.dtype)
  total = jnp.sum(loss * live)
  if how == "grpo":
    per_seq = jnp.sum(loss * live, axis=-1) / jnp.maximum(
        jnp.sum(live, axis=-1), 1)
    return jnp.mean(per_seq)
  if how == "bnpo":
    return total / jnp.maximum(jnp.sum(live), 1)
  if how == "dr_grpo":
    if max_length is None:
      raise ValueError("`max_length` is needed with how='dr_grpo'.")
    _checks.check_positive_int("max_length", max_length)
    return total / (loss.shape[0] * max_length)
  if tokens is None:
    raise ValueError("`tokens` is needed with how='dapo'.")
  _checks.check_scalar_in_range("tokens", tokens, 0.0, float("inf"),
                                low_inclusive=False)
  return total / jnp.asarray(tokens, loss.dtype)


def clip_fraction(
    log_prob: Array,
    old_log_prob: Array,
    *,
    clip_eps: float | Array,
    mask: Array | None = None,
) -> Array:
  r"""Fraction of samples whose ratio left ``[1-ε, 1+ε]``: ``mean(|ρ-1| > ε)``.

  Args:
    log_prob: ``[*N]`` current log-probabilities.
    old_log_prob: ``[*N]`` behaviour log-probabilities.
    clip_eps: ε > 0.
    mask: optional ``[*N]`` bool.

  Returns:
    Scalar in ``[0, 1]``.
  """
  log_ratio = _log_ratio(log_prob, old_log_prob, mask)
  _checks.check_non_empty("log_prob", log_prob)
  _checks.check_scalar_in_range("clip_eps", clip_eps, 0.0, float("inf"),
                                low_inclusive=False)
  clipped = jnp.abs(jnp.exp(log_ratio) - 1) > jnp.asarray(clip_eps,
                                                           log_ratio.dtype)
  return masked_mean(clipped.astype(log_ratio.dtype), mask)


def kl_k1(log_prob: Array, old_log_prob: Array) -> Array:
  r"""Per-sample ``k1 = log π_old(x) - log π(x)``, estimating ``KL(old || new)``.

  Unbiased for samples ``x ~ π_old``. For RLHF's penalty ``KL(π || π_ref)``
  on samples from ``π``, pass ``log_prob = log π_ref``, ``old_log_prob =
  log π``.

  Args:
    log_prob: ``[*N]`` log-probabilities under the new (or reference) policy.
    old_log_prob: ``[*N]`` log-probabilities under the sampling policy.

  Returns:
    ``[*N]`` estimates.
  """
  return -_log_ratio(log_prob, old_log_prob, None)


def kl_k2(log_prob: Array, old_log_prob: Array) -> Array:
  r"""Per-sample ``k2 = ½ (log π(x) - log π_old(x))²`` (see :func:`kl_k1`).

  Args:
    log_prob: ``[*N]``.
    old_log_prob: ``[*N]``, the sampling policy.

  Returns:
    ``[*N]`` non-negative estimates, biased but low-variance.
  """
  log_ratio = _log_ratio(log_prob, old_log_prob, None)
  return 0.5 * log_ratio * log_ratio


def kl_k3(log_prob: Array, old_log_prob: Array) -> Array:
  r"""Per-sample ``k3 = (ρ - 1) - log ρ``, ``ρ = π(x)/π_old(x)`` (see :func:`kl_k1`).

  Args:
    log_prob: ``[*N]``.
    old_log_prob: ``[*N]``, the sampling policy.

  Returns:
    ``[*N]`` non-negative, unbiased estimates of ``KL(old || new)``.
  """
  log_ratio = _log_ratio(log_prob, old_log_prob, None)
  return jnp.expm1(log_ratio) - log_ratio


def approx_kl(log_prob: Array, old_log_prob: Array, *,
              mask: Array | None = None) -> Array:
  """Mean ``k3`` estimate of ``KL(old || new)``: PPO's usual diagnostic.

  Args:
    log_prob: ``[*N]`` current log-probabilities.
    old_log_prob: ``[*N]`` behaviour log-probabilities (the samples' policy).
    mask: optional ``[*N]`` bool.

  Returns:
    Scalar.
  """
  _check_batch("log_prob", log_prob, mask)
  return masked_mean(kl_k3(log_prob, old_log_prob), mask)


def ppo_kl_penalty_loss(
    log_prob: Array,
    old_log_prob: Array,
    advantage: Array,
    kl: Array,
    *,
    beta: float | Array,
    mask: Array | None = None,
) -> Array:
  r"""PPO's KL-penalised surrogate objective, negated.

  .. math::

    L = -\operatorname{mean}\big[\rho A - \beta\,
        \mathrm{KL}(\pi_{old}(\cdot|s) \,\|\, \pi(\cdot|s))\big]

  Adapt ``beta`` between updates with :func:`jaxrl_align.ppo_kl_controller`
  (halve it when the measured KL is below ``d_targ / 1.5``, double it above
  ``1.5 d_targ``).

  Args:
    log_prob: ``[*N]`` current log-probabilities.
    old_log_prob: ``[*N]`` behaviour log-probabilities.
    advantage: ``[*N]`` advantages.
    kl: ``[*N]`` per-state ``KL(old || new)``: analytic (e.g.
      :func:`categorical_kl` of old and new logits) or an estimate such as
      :func:`kl_k3`.
    beta: penalty coefficient ≥ 0 (may be traced).
    mask: optional ``[*N]`` bool.

  Returns:
    Scalar loss.

  References:
    Schulman et al., 2017, "Proximal Policy Optimization Algorithms",
    https://arxiv.org/abs/1707.06347, section 4, eq. (8).
  """
  log_ratio = _log_ratio(log_prob, old_log_prob, mask, advantage=advantage,
                         kl=kl)
  _checks.check_non_empty("log_prob", log_prob)
  _checks.check_scalar_in_range("beta", beta, 0.0, float("inf"))
  beta = jnp.asarray(beta, log_ratio.dtype)
  return -masked_mean(jnp.exp(log_ratio) * advantage - beta * kl, mask)


def value_loss(value: Array, target: Array, *,
               mask: Array | None = None) -> Array:
  r"""Squared error ``½ mean[(V - R)²]``.

  The ½ is CleanRL's and PPO2's convention; Stable-Baselines3's value loss
  is ``mean[(V - R)²]`` without it, so a ``vf_coef`` of ``c`` there weighs
  as ``2c`` here (``docs/agents.md``, "Conventions against
  Stable-Baselines3").

  Args:
    value: ``[*N]`` predicted values.
    target: ``[*N]`` regression targets (e.g. GAE returns).
    mask: optional ``[*N]`` bool.

  Returns:
    Scalar loss.
  """
  _checks.check_same_shape(value=value, target=target)
  _check_batch("value", value, mask)
  error = value - target
  return 0.5 * masked_mean(error * error, mask)


def clipped_value_loss(
    value: Array,
    old_value: Array,
    target: Array,
    *,
    clip_eps: float | Array,
    mask: Array | None = None,
    form: str = "max",
) -> Array:
  r"""Clipped value loss, PPO2's pessimistic form or SB3's clipped prediction.

  .. math::

    V_{clip} = V_{old} + \operatorname{clip}(V - V_{old}, -\epsilon, \epsilon)

    L_{max} = \tfrac12 \operatorname{mean}\big[\max\big((V - R)^2,\
        (V_{clip} - R)^2\big)\big],
    \qquad
    L_{prediction} = \tfrac12 \operatorname{mean}\big[(V_{clip} - R)^2\big]

  ``"max"`` is PPO2's and CleanRL's form; ``"prediction"`` is
  Stable-Baselines3's ``clip_range_vf`` (``PPO.train``), whose loss is
  twice this one (no ½, see :func:`value_loss`).

  Args:
    value: ``[*N]`` predicted values.
    old_value: ``[*N]`` values predicted when the data was collected.
    target: ``[*N]`` regression targets.
    clip_eps: ε > 0, in the units of the value (may be traced).
    mask: optional ``[*N]`` bool.
    form: ``"max"`` or ``"prediction"`` (static).

  Returns:
    Scalar loss.

  Raises:
    ValueError: an unknown ``form``.

  References:
    Huang et al., 2022, "The 37 Implementation Details of Proximal Policy
    Optimization", ICLR Blog Track, detail 9; Stable-Baselines3,
    ``stable_baselines3/ppo/ppo.py``, ``PPO.train``.
  """
  if form not in ("max", "prediction"):
    raise ValueError(f"`form` must be 'max' or 'prediction', got {form!r}.")
  _checks.check_same_shape(value=value, old_value=old_value, target=target)
  _check_batch("value", value, mask)
  _checks.check_scalar_in_range("clip_eps", clip_eps, 0.0, float("inf"),
                                low_inclusive=False)
  eps = jnp.asarray(clip_eps, jnp.result_type(value))
  clipped = old_value + jnp.clip(value - old_value, -eps, eps)
  error = (clipped - target) ** 2
  if form == "max":
    error = jnp.maximum((value - target) ** 2, error)
  return 0.5 * masked_mean(error, mask)


def entropy_loss(entropy: Array, *, mask: Array | None = None) -> Array:
  """Entropy bonus as a loss to minimise: ``-mean(entropy)``.

  Add ``ent_coef * entropy_loss(...)`` to the objective.

  Args:
    entropy: ``[*N]`` per-state entropies (e.g. :func:`categorical_entropy`).
    mask: optional ``[*N]`` bool.

  Returns:
    Scalar.
  """
  _check_batch("entropy", entropy, mask)
  return -masked_mean(entropy, mask)
