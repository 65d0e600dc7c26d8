"""Best-of-N sampling from the reference: the baseline of the reward–KL
frontier, with its KL to the reference measured on samples.

Best-of-N draws ``N`` responses to a prompt from ``π_ref`` and keeps the one
the reward model scores highest. Its policy (Beirami et al. 2024,
"Theoretical guarantees on the best-of-n alignment policy", Lemma 1, there
for distinct scores; here for the tied levels of a score) is

    π_N(y) = (F^N − F⁻^N) · π_ref(y) / (F − F⁻),

with ``F = P_{y'~π_ref}(r(y') ≤ r(y))`` and ``F⁻ = P_{y'~π_ref}(r(y') <
r(y))``: ``F^N − F⁻^N`` is the probability that the best of the ``N``
draws lies on ``y``'s score level, a level of mass ``q = F − F⁻``, and
within the level the kept response is drawn in proportion to ``π_ref``.

Ties. The sampler (:func:`curve`) keeps the first of the tied best draws
(``argmax``). That is the proportional rule above: the ``N`` draws are
independent, so which positions land on the best level is independent of
which of the level's responses each of them holds, and any rule that picks a
position from the scores alone keeps a draw of ``π_ref`` restricted to the
level. When no two responses share a score, ``q = π_ref(y)`` and the formula
is Lemma 1's ``F^N − (F − π_ref(y))^N``; applied to tied scores, that
formula counts the level's mass once per response (its ``π_N`` sums to more
than 1) and overstates the KL. Hence

    log π_N(y)/π_ref(y) = log[(F^N − (F − q)^N) / q],

which depends on ``y`` only through its level. Its KL to the reference,
``E_{y~π_N}[log π_N(y)/π_ref(y)]``, is at most ``log N − (N−1)/N`` — the
value often quoted as *the* KL of best-of-N (Stiennon et al. 2020) — and
equals it only in the limit where every level's mass is negligible.
:func:`log_ratio` evaluates the formula for sampled responses from their
exact reference log-probability and estimates of ``F`` and ``F⁻``
(:func:`empirical_cdf`, from an independent pool of reference samples);
:func:`curve` averages it over prompts: the KL measured on samples, beside
the bound. :func:`exact_log_ratio` gives it for every response of an
enumerable reference.

References:
  Beirami et al. 2024, https://arxiv.org/abs/2401.01879.
  Stiennon et al. 2020, https://arxiv.org/abs/2009.01325.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align.rlhf import rollout

Array = jax.Array


def kl_bound(n: int | Array) -> Array:
  """``log N − (N − 1)/N``: the upper bound on ``KL(π_N || π_ref)``."""
  n = jnp.asarray(n, jnp.float32)
  return jnp.log(n) - (n - 1.0) / n


def _log_ratio(n: int, log_q: Array, log_f: Array) -> Array:
  """``log[(F^N − (F − q)^N) / q]`` from ``log q`` and ``log F`` (``F`` is
  raised to at least ``q``).

  Computed as ``N log F + log(1 − (1 − x)^N) − log q`` with ``x = q/F``,
  the middle term by ``expm1``/``log1p``, or for ``x < 1e-5`` by its
  expansion ``log N + log x + log1p(−(N − 1) x / 2)``: stable for the
  ``q`` of a language model's responses (``e^-100`` and less), where the
  whole tends to ``log N + (N − 1) log F``.
  """
  log_f = jnp.maximum(log_f, log_q)
  log_x = log_q - log_f  # log(q / F) <= 0
  x = jnp.exp(log_x)
  small = x < 1e-5
  direct = jnp.log(-jnp.expm1(n * jnp.log1p(-jnp.where(small, 0.5, x))))
  series = jnp.log(n) + log_x + jnp.log1p(-(n - 1) * x / 2)
  return n * log_f + jnp.where(small, series, direct) - log_q


def log_ratio(n: int, log_p: Array, cdf: Array,
              cdf_below: Array | None = None) -> Array:
  """``log π_N(y) / π_ref(y)`` of responses with reference log-probability
  ``log_p``, score CDF ``cdf = F(r(y))`` and ``cdf_below = F⁻(r(y))``, the
  mass strictly below their score (elementwise).

  The level's mass ``q = F − F⁻`` is raised to at least ``π_ref(y)`` (the
  level holds ``y``), and ``F`` to at least ``q``. With ``cdf_below=None``
  the scores are taken to be distinct, ``q = π_ref(y)``: Lemma 1 of
  Beirami et al. 2024, exact only without ties.

  Args:
    n: ``N``, the number of draws.
    log_p: ``[...]`` ``log π_ref(y)`` of the whole response.
    cdf: ``[...]`` ``F``, the reference's mass at scores ``≤ r(y)``.
    cdf_below: ``[...]`` ``F⁻``, its mass at scores ``< r(y)``, or None.

  Returns:
    ``[...]`` ``log[(F^N − F⁻^N) / (F − F⁻)]``.
  """
  log_q = log_p
  if cdf_below is not None:
    level = jnp.maximum(jnp.asarray(cdf) - cdf_below, 0.0)
    log_q = jnp.maximum(log_p, jnp.log(level))
  return _log_ratio(n, log_q, jnp.log(cdf))


def exact_log_ratio(n: int, log_p: Array, score: Array) -> Array:
  """``log π_N(y) / π_ref(y)`` for every response ``y`` of an enumerable
  reference, ties included: ``π_N = π_ref · exp(·)`` sums to 1 and
  ``KL(π_N || π_ref) = Σ π_N · (·)``.

  Args:
    n: ``N``.
    log_p: ``[R]`` ``log π_ref`` of each response (summing to 1).
    score: ``[R]`` each response's score.

  Returns:
    ``[R]`` the log-ratios.
  """
  below_or_at = score[None, :] <= score[:, None]
  level = score[None, :] == score[:, None]
  masked = lambda m: jnp.where(m, log_p[None, :], -jnp.inf)  # noqa: E731
  log_f = jax.nn.logsumexp(masked(below_or_at), axis=1)
  log_q = jax.nn.logsumexp(masked(level), axis=1)
  return _log_ratio(n, log_q, log_f)


def empirical_cdf(values: Array, pool: Array, *, strict: bool = False
                  ) -> Array:
  """``F̂(v)``: the fraction of ``pool [..., M]`` scores ``≤ v`` (with
  ``strict``, ``< v``: ``F̂⁻(v)``) for each of ``values [..., K]`` (same
  leading axes: one pool per prompt)."""
  below = jnp.less if strict else jnp.less_equal
  return jnp.mean(below(pool[..., None, :], values[..., :, None]), axis=-1)


class Curve(NamedTuple):
  """Best-of-N, one entry per ``N``, means over prompts.

  Attributes:
    n: ``[K]`` the N's.
    proxy: ``[K]`` the chosen response's reward-model score.
    gold: ``[K]`` its gold score.
    kl_sampled: ``[K]`` ``KL(π_N || π_ref)`` measured on the samples
      (:func:`log_ratio` at the chosen responses).
    kl_sampled_se: ``[K]`` its standard error over prompts (the spread of
      the log-ratios; the estimate of ``F`` adds more).
    kl_bound: ``[K]`` ``log N − (N − 1)/N``.
  """
  n: Array
  proxy: Array
  gold: Array
  kl_sampled: Array
  kl_sampled_se: Array
  kl_bound: Array


def curve(ns: Sequence[int], proxy: Array, gold: Array, log_p: Array,
          pool: Array) -> Curve:
  """Best-of-N for each ``N`` in ``ns`` from the first ``N`` of ``M``
  reference samples per prompt (nested: one set of draws serves every N);
  among tied best scores the first draw is kept (see the module docstring
  for why that is the policy :func:`log_ratio` describes).

  Args:
    ns: the N's (Python ints, each ≤ M).
    proxy: ``[P, M]`` reward-model scores of the candidates.
    gold: ``[P, M]`` their gold scores.
    log_p: ``[P, M]`` their reference log-probabilities (the whole
      response).
    pool: ``[P, K]`` reward-model scores of other, independent reference
      samples of the same prompts: the estimates of ``F`` and ``F⁻``.

  Returns:
    A :class:`Curve`.
  """
  rows = []
  for n in ns:
    if not 1 <= n <= proxy.shape[1]:
      raise ValueError(f"N = {n} is outside 1..{proxy.shape[1]} candidates.")
    best = jnp.argmax(proxy[:, :n], axis=1)[:, None]
    take = lambda x: jnp.take_along_axis(x[:, :n], best, 1)[:, 0]  # noqa
    chosen = take(proxy)
    cdf = empirical_cdf(chosen[:, None], pool)[:, 0]
    below = empirical_cdf(chosen[:, None], pool, strict=True)[:, 0]
    ratio = log_ratio(n, take(log_p), cdf, below)
    rows.append((jnp.mean(chosen), jnp.mean(take(gold)), jnp.mean(ratio),
                 jnp.std(ratio, ddof=1) / np.sqrt(ratio.shape[0]),
                 kl_bound(n)))
  return Curve(jnp.asarray(np.asarray(ns)),
               *(jnp.stack(c) for c in zip(*rows)))


def reference_samples(config, data, prompts: Array, prompt_mask: Array,
                      key: Array, m: int) -> dict[str, Array]:
  """``m`` responses from the reference to each prompt, one batch at a time
  (``lax.map``): ``{"proxy", "gold", "log_p"}``, each ``[P, m]`` — the
  reward model's score (no missing-stop penalty: best-of-N chooses by the
  reward model), the gold score (NaN without ``data.gold_fn``) and the
  response's log-probability under the reference's sampling distribution.
  """
  def one(k):
    gen = rollout.sample(config, data.ref_params, prompts, prompt_mask, k)
    _, proxy, _ = rollout.scores(config, data, gen.tokens, gen.mask,
                                 gen.response, gen.response_mask)
    gold = (jnp.full(proxy.shape, jnp.nan) if data.gold_fn is None else
            data.gold_fn(gen.tokens, gen.mask))
    log_p = jnp.sum(jnp.where(gen.response_mask, gen.log_probs, 0.0), 1)
    return {"proxy": proxy, "gold": gold.astype(jnp.float32),
            "log_p": log_p}

  out = jax.lax.map(one, jax.random.split(key, m))
  return jax.tree.map(lambda x: x.T, out)
