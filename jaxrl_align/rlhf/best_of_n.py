"""Best-of-N sampling from the reference: the baseline of the reward–KL
frontier, with its KL to the reference measured on samples.

Best-of-N draws ``N`` responses to a prompt from ``π_ref`` and keeps the one
the reward model scores highest. When no two responses share a score, the
policy it defines is (Beirami et al. 2024, "Theoretical guarantees on the
best-of-n alignment policy", Lemma 1)

    π_N(y) = F(r(y))^N − (F(r(y)) − π_ref(y))^N,

with ``F(r) = P_{y'~π_ref}(r(y') ≤ r)``, so

    log π_N(y)/π_ref(y) = log[(F^N − (F − p)^N) / p],    p = π_ref(y).

Its KL to the reference, ``E_{y~π_N}[log π_N(y)/π_ref(y)]``, is at most
``log N − (N−1)/N`` — the value often quoted as *the* KL of best-of-N
(Stiennon et al. 2020) — and equals it only in the limit where every
response's probability is negligible. :func:`log_ratio` evaluates the
formula for sampled responses from their exact reference log-probability
and an estimate of ``F`` (:func:`empirical_cdf`, from an independent pool of
reference samples); :func:`curve` averages it over prompts: the KL measured
on samples, beside the bound.
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


def log_ratio(n: int, log_p: Array, cdf: Array) -> Array:
  """``log π_N(y) / π_ref(y)`` of responses with reference log-probability
  ``log_p`` and score CDF ``cdf = F(r(y))`` (elementwise; ``cdf`` is raised
  to at least ``π_ref(y)``, which it cannot be below).

  Computed as ``N log F + log(1 − (1 − x)^N) − log p`` with ``x = p/F``,
  the middle term by ``expm1``/``log1p``, or for ``x < 1e-5`` by its
  expansion ``log N + log x + log1p(−(N − 1) x / 2)``: stable for the
  ``p`` of a language model's responses (``e^-100`` and less), where the
  whole tends to ``log N + (N − 1) log F``.
  """
  log_f = jnp.maximum(jnp.log(cdf), log_p)
  log_x = log_p - log_f  # log(p / F) <= 0
  x = jnp.exp(log_x)
  small = x < 1e-5
  direct = jnp.log(-jnp.expm1(n * jnp.log1p(-jnp.where(small, 0.5, x))))
  series = jnp.log(n) + log_x + jnp.log1p(-(n - 1) * x / 2)
  return n * log_f + jnp.where(small, series, direct) - log_p


def empirical_cdf(values: Array, pool: Array) -> Array:
  """``F̂(v)``: the fraction of ``pool [..., M]`` scores ``≤ v`` for each of
  ``values [..., K]`` (same leading axes: one pool per prompt)."""
  return jnp.mean(pool[..., None, :] <= values[..., :, None], axis=-1)


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
  reference samples per prompt (nested: one set of draws serves every N).

  Args:
    ns: the N's (Python ints, each ≤ M).
    proxy: ``[P, M]`` reward-model scores of the candidates.
    gold: ``[P, M]`` their gold scores.
    log_p: ``[P, M]`` their reference log-probabilities (the whole
      response).
    pool: ``[P, K]`` reward-model scores of other, independent reference
      samples of the same prompts: the estimate of ``F``.

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
    ratio = log_ratio(n, take(log_p), cdf)
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
