"""KL-regularised PPO and TRPO on the language model (``jaxrl_align.rlhf.rl``,
``.ppo``, ``.trpo``): the exact optimum of an enumerable toy, a NumPy port
of TRL's post-rollout arithmetic, the ratio and KL invariants, padding,
temperature, ``jit``/``vmap``, the runner. The commands on the small
pipeline are ``test_rlhf_commands.py``'s."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_align.host import runner
from jaxrl_align.rlhf import best_of_n
from jaxrl_align.rlhf import credit
from jaxrl_align.rlhf import generation
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import ppo
from jaxrl_align.rlhf import rl
from jaxrl_align.rlhf import rollout
from jaxrl_align.rlhf import trpo

V, N, STOP, PAD = 5, 3, 4, 0  # vocabulary, response length, special tokens
MODEL = model_lib.TransformerConfig(vocab_size=V, max_len=1 + N,
                                    num_layers=1, num_heads=2, width=32)
# Room for the post-rollout arithmetic's longer responses (no model runs).
LONG = dataclasses.replace(MODEL, max_len=16)


def table_score(table, tokens, mask):
  """The toy's reward model: a table indexed by the (padded) response."""
  del mask
  response = tokens[:, -N:]
  return table[sum(response[:, i] * V ** (N - 1 - i) for i in range(N))]


def toy_data(batch, seed=0):
  ref = model_lib.Transformer(MODEL).init(jax.random.key(seed + 1),
                                          jnp.zeros((1, 2), jnp.int32))
  table = jax.random.uniform(jax.random.key(seed + 2), (V ** N,)) * 2
  prompts = jnp.full((batch, 1), 1, jnp.int32)
  mask = jnp.ones((batch, 1), bool)
  return rl.RLData(prompts, mask, prompts[:8], mask[:8], ref, table, ref,
                   table_score)


def toy_config(algo, beta, **more):
  fields = dict(model=MODEL, stop_token=STOP, pad_token=PAD,
                response_length=N, kl_control="fixed", kl_coef=beta,
                missing_eos_penalty=0.5)
  fields.update(more)
  return (ppo.RLHFPPOConfig if algo == "ppo" else trpo.RLHFTRPOConfig)(**fields)


# ------------------------------------------------- the exact optimum


def responses():
  """Every response the sampler can produce: ``(tokens [R, 1 + N], mask
  [R, 1 + N], stopped [R])`` (after the stop token only padding)."""
  rows, masks, stopped = [], [], []
  for y in itertools.product(range(V), repeat=N):
    k = y.index(STOP) if STOP in y else None
    if k is not None and any(t != PAD for t in y[k + 1:]):
      continue
    rows.append((1,) + y)
    masks.append([True] + [k is None or i <= k for i in range(N)])
    stopped.append(k is not None)
  return jnp.asarray(rows), jnp.asarray(masks), np.asarray(stopped)


def sequence_log_probs(config, params):
  tokens, mask, _ = responses()
  return np.asarray(generation.sequence_log_probs(
      model_lib.Transformer(MODEL).apply, params, tokens, mask, N,
      temperature=config.temperature).sum(1), np.float64)


def exact(config, data, params):
  """``(E[r] - β KL(π || π_ref), KL)`` by enumeration (float64)."""
  tokens, mask, stopped = responses()
  r = np.asarray(table_score(data.reward_params, tokens, mask), np.float64)
  r = r - config.missing_eos_penalty * ~stopped
  log_p = sequence_log_probs(config, params)
  log_ref = sequence_log_probs(config, data.ref_params)
  assert abs(np.exp(log_p).sum() - 1) < 1e-5  # every response enumerated
  kl = float(np.sum(np.exp(log_p) * (log_p - log_ref)))
  return float(np.sum(np.exp(log_p) * r)) - config.kl_coef * kl, kl, r, \
      log_ref


def optimum(config, data):
  """π*(y) ∝ π_ref(y) exp(r(y) / β): objective β log Z and KL(π* || π_ref)."""
  _, _, r, log_ref = exact(config, data, data.ref_params)
  beta = config.kl_coef
  log_z = np.logaddexp.reduce(log_ref + r / beta)
  log_opt = log_ref + r / beta - log_z
  return beta * log_z, float(np.sum(np.exp(log_opt) * (log_opt - log_ref)))


def train(learner, config, data, key=0):
  state = learner.init(config, jax.random.key(key), data)
  body = lambda s, _: (learner.update(config, s, data)[0], None)  # noqa
  return jax.jit(lambda s: jax.lax.scan(body, s, None,
                                        config.iterations)[0])(state)


def last_iterates(learner, config, data, last, key=0):
  """``(params, metrics)`` after each of the last ``last`` iterations
  (leading axis ``last``; ``[-1]`` is the final iterate)."""
  state = learner.init(config, jax.random.key(key), data)
  body = lambda s, _: (learner.update(config, s, data)[0], None)  # noqa

  def step(s, _):
    s, metrics = learner.update(config, s, data)
    return s, (s.params, metrics)

  return jax.jit(lambda s: jax.lax.scan(
      step, jax.lax.scan(body, s, None, config.iterations - last)[0], None,
      last)[1])(state)


def centred(config, data):
  """The toy with its reward table shifted so that the reference's expected
  reward (missing-stop penalty included) is 0: ``J(π_ref) = 0`` and ``J* =
  β log E_ref[exp(r/β)]`` is the gain alone (0.35 at β = 0.2, 0.14 at
  0.5), so 2% of J* is 2% of the gain (uncentred, the reference itself is
  within 16% of J* at β = 0.5). π* and the KL are unchanged."""
  _, _, r, log_ref = exact(config, data, data.ref_params)
  return data.replace(reward_params=data.reward_params
                      - float(np.sum(np.exp(log_ref) * r)))


# Measured (docs/rlhf.md): PPO needs 150 iterations for its annealed
# learning rate to settle inside the bands on every one of the last 10.
OPTIMUM_RUNS = {
    "ppo": dict(iterations=150, learning_rate=1e-3, epochs=4,
                num_minibatches=4),
    "trpo": dict(iterations=100, learning_rate=1e-3, max_kl=0.01)}
# Responses an iteration. PPO at β = 0.2 needs 2,048: on 512, about half
# the random streams stall 2.5-3.3% below J* with a branch of the response
# tree collapsed early (softmax policy gradient's plateau; docs/rlhf.md).
OPTIMUM_BATCH = {("ppo", 0.2): 2048}


def errors_of_last_iterates(algo, beta, last=10, **more):
  """The run of ``OPTIMUM_RUNS[algo]`` (``more`` replaced) on the centred
  toy: ``(J errors, KL errors, metrics)``: each of the last ``last``
  iterates' ``(J - J*) / J*`` and ``(KL - KL*) / KL*``, exactly by
  enumeration, and the update's metrics over them."""
  batch = OPTIMUM_BATCH.get((algo, beta), 512)
  config = toy_config(algo, beta, batch_size=batch,
                      **{**OPTIMUM_RUNS[algo], **more})
  data = centred(config, toy_data(batch))
  best, best_kl = optimum(config, data)
  assert best > 0.1  # J(π_ref) = 0: the gain to find
  learner = ppo.LEARNER if algo == "ppo" else trpo.LEARNER
  params, metrics = last_iterates(learner, config, data, last)
  got = [exact(config, data, jax.tree.map(lambda x: x[i], params))[:2]
         for i in range(last)]
  j = np.asarray([(g - best) / best for g, _ in got])
  kl = np.asarray([(k - best_kl) / best_kl for _, k in got])
  return j, kl, metrics


@pytest.mark.parametrize("beta", [0.2, 0.5])
@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_reaches_the_exact_kl_regularised_optimum(algo, beta):
  """Through the whole token-level pipeline (cached sampling with a stop
  token and padding, the missing-stop penalty, per-token k1 rewards, GAE,
  whitening, the update), on a non-uniform reference and a random reward
  table over whole responses, centred so that J* is the gain over the
  reference: objective within 2% and KL(π || π_ref) within 10% of the
  enumerated optimum's, on each of the last 10 iterates (the final one
  among them). Measured worst over keys 0-7 (PPO at β = 0.2, 2,048
  responses an iteration: J 0.43%, KL 1.6%) and 0-3 (PPO at β = 0.5: J
  1.2%, KL 3.8%); TRPO (keys 0-1) J 1.1%, KL 0.8%. TRPO's steps near π* are a small fraction of its trust
  region (its cap on the step, ``optimum_fraction``)."""
  j, kl, metrics = errors_of_last_iterates(algo, beta)
  assert np.all(np.abs(j) <= 0.02), j
  assert np.all(np.abs(kl) <= 0.10), kl
  if algo == "trpo":
    assert np.mean(metrics["policy/trust_region_kl"]) < 0.2 * 0.01, metrics


def test_mixed_precision_reaches_the_exact_optimum():
  """PPO with every matrix product of the policy, reference and critic on
  bfloat16 operands (``matmul_dtype="bfloat16"``, float32 accumulation and
  parameters) reaches the same optimum within the same bands at β = 0.5,
  on each of the last 10 iterates (evaluated exactly in float32)."""
  j, kl, _ = errors_of_last_iterates("ppo", 0.5, matmul_dtype="bfloat16")
  assert np.all(np.abs(j) <= 0.02), j
  assert np.all(np.abs(kl) <= 0.10), kl


def test_trpo_without_its_step_cap_cycles_about_the_optimum():
  """The wrong variant: TRPO as published (``optimum_fraction=0``: the
  trust region alone) takes every step at the trust region's edge — its
  surrogate, linear in the ratio with fixed advantages, has no maximiser
  short of it — and jumps across π* and back: the last iterates leave the
  bands (measured worst: J 5.0% and KL 14.9% off at key 0, J 10.6% at
  key 1) that the capped step keeps to within 1.1% and 0.7%."""
  j, kl, metrics = errors_of_last_iterates("trpo", 0.5,
                                           optimum_fraction=0.0)
  assert np.max(np.abs(j)) > 0.02 or np.max(np.abs(kl)) > 0.10, (j, kl)
  assert np.all(metrics["policy/trust_region_kl"] > 0.5 * 0.01), metrics


@pytest.mark.parametrize("beta", [0.2, 0.5])
def test_ppo_with_a_constant_learning_rate_hovers_about_the_optimum(beta):
  """PPO lands on π* because its learning rate anneals to 0. With a
  constant one (1e-3) it does not land: Adam's steps stay near the
  learning rate in size when the gradient is only noise, so the iterates
  wander about π*, each below J* (π* is the maximum) — measured over 4
  keys and the last 10 iterates of 150: J 1.4–6.3% of J* below it and KL
  within ±20% at β = 0.2; J 4.8–15.7% below and KL within ±34% at β =
  0.5 (2e-4 does no better). This holds what it does: inside a band of
  30% on J and 50% on KL, outside the 2% band somewhere."""
  j, kl, _ = errors_of_last_iterates("ppo", beta, anneal_lr=False)
  assert np.all(np.abs(j) <= 0.30) and np.all(np.abs(kl) <= 0.50), (j, kl)
  assert np.max(np.abs(j)) > 0.02, j


def test_the_optimum_test_fails_a_wrong_penalty():
  """The same run with the KL penalty's coefficient halved in the reward
  (a plausible bug: β applied twice as ½ and ½) misses the optimum."""
  batch, beta = 512, 0.5
  data = toy_data(batch)
  config = toy_config("ppo", beta, iterations=100, batch_size=batch,
                      learning_rate=1e-3, epochs=4, num_minibatches=4)
  wrong = config.replace(kl_coef=beta / 2)
  _, best_kl = optimum(config, data)
  state = train(ppo.LEARNER, wrong, data)
  _, kl, _, _ = exact(config, data, state.params)
  assert abs(kl - best_kl) > 0.10 * best_kl, (kl, best_kl)


# ------------------------------------------------ best-of-N, exactly


def test_best_of_n_kl_measured_on_samples_matches_enumeration():
  """On the toy, best-of-N's policy ``F^N − (F − p)^N`` and its KL to the
  reference are enumerated exactly; the KL measured on samples (exact
  reference log-probabilities, F from an independent pool) agrees to 0.03
  nats, while the quoted ``log N − (N−1)/N`` — and the same samples read
  with the continuous formula ``log N + (N−1) log F`` — overstate it: the
  toy's responses have large probabilities, where the bound is loose."""
  batch, ns = 2048, (1, 2, 4, 8, 16)
  data = toy_data(batch)
  config = toy_config("ppo", 0.1, batch_size=batch, temperature=0.5)
  tokens, mask, _ = responses()
  r = np.asarray(table_score(data.reward_params, tokens, mask), np.float64)
  assert len(np.unique(r)) == len(r)  # no ties: the formula applies
  p = np.exp(sequence_log_probs(config, data.ref_params))
  order = np.argsort(r)
  cdf = np.empty_like(p)
  cdf[order] = np.cumsum(p[order])
  draw = jax.jit(lambda k: best_of_n.reference_samples(
      config, data, data.prompts, data.prompt_mask, k, max(ns)))
  cand, pool = draw(jax.random.key(1)), draw(jax.random.key(2))
  pool = jnp.broadcast_to(pool["proxy"].reshape(-1), (batch, batch * max(ns)))
  got = best_of_n.curve(ns, cand["proxy"], cand["gold"], cand["log_p"], pool)
  for i, n in enumerate(ns):
    p_n = cdf ** n - (cdf - p) ** n
    assert abs(p_n.sum() - 1) < 1e-6
    kl = float(np.sum(p_n * np.log(p_n / p)))
    assert abs(float(got.kl_sampled[i]) - kl) <= 0.03, (n, got, kl)
    assert abs(float(got.proxy[i]) - np.sum(p_n * r)) <= 0.03, (n, got)
    assert float(got.kl_bound[i]) >= kl - 1e-9
    if n >= 4:
      assert float(got.kl_bound[i]) - kl > 0.09, (n, got, kl)
      best = jnp.argmax(cand["proxy"][:, :n], axis=1)[:, None]
      f = best_of_n.empirical_cdf(
          jnp.take_along_axis(cand["proxy"], best, 1), pool)[:, 0]
      continuous = float(jnp.mean(np.log(n) + (n - 1) * jnp.log(f)))
      assert continuous - kl > 0.09, (n, continuous, kl)


def test_best_of_n_log_ratio_and_bound():
  log_p = jnp.asarray([np.log(0.3), np.log(0.01), -200.0])
  cdf = jnp.asarray([0.5, 0.9, 0.7])
  for n in (1, 3, 64):
    want = [np.log((f ** n - (f - np.exp(lp)) ** n) / np.exp(lp))
            for lp, f in zip(np.asarray(log_p, np.float64)[:2], (0.5, 0.9))]
    want.append(np.log(n) + (n - 1) * np.log(0.7))  # p -> 0: the limit
    np.testing.assert_allclose(best_of_n.log_ratio(n, log_p, cdf), want,
                               rtol=1e-5, atol=1e-5)
  # F cannot be below p: raised to it (the response is then the least
  # rewarded, kept by best-of-N only if all N draws are it).
  np.testing.assert_allclose(
      best_of_n.log_ratio(4, jnp.log(0.3), 0.1), 3 * np.log(0.3), rtol=1e-5)
  np.testing.assert_allclose(best_of_n.kl_bound(jnp.asarray([1, 2, 64])),
                             [0, np.log(2) - 0.5, np.log(64) - 63 / 64],
                             rtol=1e-6)
  assert float(best_of_n.empirical_cdf(jnp.asarray([2.0]),
                                       jnp.asarray([1.0, 2.0, 3.0, 4.0]))[0]
               ) == 0.5
  with pytest.raises(ValueError, match="N = 9"):
    best_of_n.curve([9], *(jnp.zeros((2, 8)),) * 4)


# ---------------------------------------- TRL's arithmetic, in NumPy


def trl_post_rollout(response, logprobs, ref_logprobs, values, scores, *,
                     kl_coef, estimator, whiten_rewards, gamma, lam,
                     missing_eos_penalty, p1):
  """TRL's steps after generation, ported line by line to float64 NumPy
  from ``trl/experimental/ppo/ppo_trainer.py`` (trl 1.12.0, lines
  757–798: missing-EOS penalty, ``padding_mask``/``padding_mask_p1``,
  ``INVALID_LOGPROB``, ``kl = -logr`` or k3, ``non_score_reward``, the score
  at ``actual_end``, ``masked_whiten`` of lines 238–270 with Bessel's
  correction and ``rsqrt(var + 1e-8)``, the ``lastgaelam`` loop) and its
  metrics (lines 880–896). ``p1=True`` is TRL as written; ``p1=False``
  puts the score at the last response token and masks values at padding,
  the convention this library uses (see ``jaxrl_align.rlhf.rl``)."""
  response = np.asarray(response)
  b, n = response.shape
  logprobs, ref_logprobs, values, scores = (
      np.array(x, np.float64) for x in (logprobs, ref_logprobs, values,
                                        scores))
  is_pad = response == PAD
  first_pad = np.where(is_pad.any(1), is_pad.argmax(1), n)
  sequence_lengths = first_pad - 1
  contain_eos = np.any(response == STOP, axis=1)
  scores[~contain_eos] -= missing_eos_penalty
  idx = np.arange(n)[None]
  padding_mask = idx > sequence_lengths[:, None]
  logprobs[padding_mask] = 1.0  # INVALID_LOGPROB
  ref_logprobs[padding_mask] = 1.0
  sequence_lengths_p1 = sequence_lengths + 1
  padding_mask_p1 = idx > sequence_lengths_p1[:, None]
  value_mask = padding_mask_p1 if p1 else padding_mask
  values[value_mask] = 0
  logr = ref_logprobs - logprobs
  kl = -logr if estimator == "k1" else np.expm1(logr) - logr
  non_score_reward = -kl_coef * kl
  rewards = non_score_reward.copy()
  if p1:
    actual_end = np.where(sequence_lengths_p1 < n, sequence_lengths_p1,
                          sequence_lengths)
  else:
    actual_end = sequence_lengths
  rewards[np.arange(b), actual_end] += scores

  def masked_whiten(x, mask, shift_mean=True):
    mean = x[mask].mean()
    var = ((x - mean)[mask] ** 2).mean() * mask.sum() / (mask.sum() - 1)
    white = (x - mean) / np.sqrt(var + 1e-8)
    return white if shift_mean else white + mean

  if whiten_rewards:
    rewards = masked_whiten(rewards, ~value_mask, shift_mean=False)
    rewards[value_mask] = 0
  lastgaelam, reversed_ = 0.0, []
  for t in reversed(range(n)):
    nextvalues = values[:, t + 1] if t < n - 1 else 0.0
    delta = rewards[:, t] + gamma * nextvalues - values[:, t]
    lastgaelam = delta + gamma * lam * lastgaelam
    reversed_.append(lastgaelam)
  advantages = np.stack(reversed_[::-1], axis=1)
  returns = advantages + values
  advantages = masked_whiten(advantages, ~padding_mask)
  advantages[padding_mask] = 0
  metrics = {
      "objective/kl": kl.sum(1).mean(),
      "objective/entropy": ((-logprobs) * ~padding_mask).sum(1).mean(),
      "objective/non_score_reward": non_score_reward.sum(1).mean(),
      "objective/rlhf_reward": non_score_reward.sum(1).mean() + scores.mean(),
      "objective/scores": scores.mean()}
  return dict(kl=kl, rewards=rewards, advantages=advantages, returns=returns,
              scores=scores, mask=~padding_mask, metrics=metrics)


def random_batch(key, b=32, n=6):
  """Responses with a stop token at random places (padding after it), some
  never stopping; no padding token before a stop (TRL reads the first
  padding token as the end)."""
  k = jax.random.split(key, 6)
  body = np.asarray(jax.random.randint(k[0], (b, n), 1, STOP))
  stop_at = np.asarray(jax.random.randint(k[1], (b,), 0, n + 3))  # >= n: none
  response = body.copy()
  for i, s in enumerate(stop_at):
    if s < n:
      response[i, s] = STOP
      response[i, s + 1:] = PAD
  mask = np.arange(n)[None] <= np.where(stop_at < n, stop_at, n)[:, None]
  logprobs = -np.asarray(jax.random.uniform(k[2], (b, n))) * 3
  ref_logprobs = logprobs + np.asarray(jax.random.normal(k[3], (b, n))) * 0.3
  values = np.asarray(jax.random.normal(k[4], (b, n)))
  scores = np.asarray(jax.random.normal(k[5], (b,)))
  return response, mask, logprobs, ref_logprobs, values, scores


def ours(response, mask, logprobs, ref_logprobs, values, scores, config):
  """Our post-rollout arithmetic on the same batch, garbage at padding."""
  garbage = lambda x: jnp.where(mask, x, 7.0)  # noqa: E731
  done = rollout.stopped(config, jnp.asarray(response), jnp.asarray(mask))
  score = jnp.asarray(scores, jnp.float32) - jnp.where(
      done, 0.0, config.missing_eos_penalty)
  kl, reward, adv, ret = credit.gae_advantages(
      config, score, garbage(logprobs), garbage(ref_logprobs),
      garbage(values), jnp.asarray(mask), config.kl_coef)
  exp = rollout.Experience(None, None, jnp.asarray(response), jnp.asarray(mask),
                      garbage(logprobs), None, None, score, done, kl, reward,
                      adv, ret)
  return dict(kl=kl, rewards=reward, advantages=adv, returns=ret,
              scores=score, metrics=rollout.sample_metrics(exp, config.kl_coef))


@pytest.mark.parametrize("estimator", ["k1", "k3"])
@pytest.mark.parametrize("whiten_rewards", [False, True])
def test_post_rollout_arithmetic_matches_trl(estimator, whiten_rewards):
  config = toy_config("ppo", 0.1, model=LONG, response_length=6,
                      kl_estimator=estimator,
                      whiten_rewards=whiten_rewards, missing_eos_penalty=1.5,
                      gamma=0.99, lam=0.9)
  batch = random_batch(jax.random.key(3))
  mask = batch[1]
  got = jax.jit(lambda *a: ours(*a, config))(*batch)
  ref = trl_post_rollout(
      batch[0], *batch[2:], kl_coef=0.1, estimator=estimator,
      whiten_rewards=whiten_rewards, gamma=0.99, lam=0.9,
      missing_eos_penalty=1.5, p1=False)
  assert np.array_equal(ref["mask"], mask)
  for name in ("kl", "rewards", "advantages", "returns"):
    np.testing.assert_allclose(np.where(mask, got[name], 0),
                               np.where(mask, ref[name], 0), atol=1e-6,
                               rtol=1e-6, err_msg=name)
  np.testing.assert_allclose(got["scores"], ref["scores"], atol=1e-6)
  for name, value in ref["metrics"].items():
    np.testing.assert_allclose(got["metrics"][name], value, rtol=1e-6,
                               atol=1e-6, err_msg=name)
  # TRL's own placement (score one step after the stop token, bootstrapped
  # through) gives other advantages: the port tells the two apart.
  trl = trl_post_rollout(
      batch[0], *batch[2:], kl_coef=0.1, estimator=estimator,
      whiten_rewards=whiten_rewards, gamma=0.99, lam=0.9,
      missing_eos_penalty=1.5, p1=True)
  assert not np.allclose(np.where(mask, got["advantages"], 0),
                         np.where(mask, trl["advantages"], 0), atol=1e-3)


# ---------------------------------------------- invariants of a step


def one_rollout(config, data, key=3):
  state = ppo.LEARNER.init(config, jax.random.key(0), data)
  exp = jax.jit(lambda s: rollout.rollout(config, s, data, data.prompts,
                                     data.prompt_mask,
                                     jax.random.key(key)))(state)
  return state, exp


def test_first_minibatch_ratio_is_one_and_zero_learning_rate_moves_nothing():
  data = toy_data(16)
  config = toy_config("ppo", 0.1, batch_size=16, num_minibatches=2,
                      iterations=2)
  state, exp = one_rollout(config, data)
  assert 0 < int(exp.response_mask.sum()) < exp.response_mask.size
  # The first minibatch of the first epoch: ratio 1 to float32 rounding
  # (the rollout's forward pass covers the whole batch, the update's a
  # minibatch inside the gradient: XLA compiles them as different
  # programs, which agree to a few units in the last place).
  first = jax.tree.map(lambda x: x[:8], exp)
  _, aux = jax.jit(lambda: ppo.minibatch_loss(
      config, (state.params, state.critic), first))()
  assert abs(float(aux["policy/ratio_max"]) - 1) < 1e-6
  assert float(aux["policy/approxkl_avg"]) < 1e-12
  assert float(aux["policy/clipfrac_avg"]) == 0
  # A wrong temperature in the old log-probabilities is caught.
  hot = jax.tree.map(lambda x: x[:8], one_rollout(
      config.replace(temperature=1.5), data)[1])
  _, aux = jax.jit(lambda: ppo.minibatch_loss(
      config, (state.params, state.critic), hot))()
  assert float(aux["policy/approxkl_avg"]) > 1e-3
  # Learning rate 0: nothing moves, the approximate KL stays 0.
  frozen = config.replace(learning_rate=0.0)
  new, metrics = jax.jit(lambda s: ppo.LEARNER.update(frozen, s, data))(
      state)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, new.params,
                                   state.params))
  assert jax.tree.all(jax.tree.map(jnp.array_equal, new.critic,
                                   state.critic))
  assert float(metrics["policy/approxkl_avg"]) < 1e-12
  assert float(metrics["policy/epochs_run"]) == config.epochs
  trpo_frozen = toy_config("trpo", 0.1, batch_size=16, iterations=2,
                           learning_rate=0.0)
  state = trpo.LEARNER.init(trpo_frozen, jax.random.key(0), data)
  _, tr_metrics = jax.jit(lambda s: trpo.LEARNER.update(trpo_frozen, s,
                                                        data))(state)
  assert float(tr_metrics["policy/trust_region_kl"]) <= 0.01 * (1 + 1e-5)


def test_padding_changes_no_metric():
  """Values at padding positions (any garbage) and extra padding columns
  change no reward, advantage, loss or metric."""
  config = toy_config("ppo", 0.1, model=LONG, response_length=6,
                      num_minibatches=1, batch_size=32)
  response, mask, lp, ref_lp, values, scores = random_batch(jax.random.key(5))
  first = ours(response, mask, lp, ref_lp, values, scores, config)
  wide = config.replace(response_length=9)
  pad = lambda x, v: np.concatenate(  # noqa: E731
      [x, np.full((x.shape[0], 3), v, x.dtype)], 1)
  second = ours(pad(response, PAD), pad(mask, False), pad(lp, -9.0),
                pad(ref_lp, 3.0), pad(values, 5.0), scores, wide)
  for name in ("kl", "rewards", "advantages", "returns"):
    np.testing.assert_allclose(second[name][:, :6], first[name], rtol=1e-6,
                               atol=1e-6, err_msg=name)
    assert not np.any(second[name][:, 6:])
  for name, value in first["metrics"].items():
    np.testing.assert_allclose(second["metrics"][name], value, rtol=1e-6,
                               err_msg=name)
  # The PPO loss and its diagnostics ignore whatever sits at padding.
  data = toy_data(16)
  config = toy_config("ppo", 0.1, batch_size=16, iterations=2)
  state, exp = one_rollout(config, data)
  junk = ~exp.response_mask
  noisy = exp._replace(log_probs=jnp.where(junk, 3.0, exp.log_probs),
                       values=jnp.where(junk, -4.0, exp.values),
                       returns=jnp.where(junk, 9.0, exp.returns),
                       advantages=jnp.where(junk, 5.0, exp.advantages))
  loss_fn = jax.jit(lambda e: ppo.minibatch_loss(
      config, (state.params, state.critic), e))
  (a, aux_a), (b, aux_b) = loss_fn(exp), loss_fn(noisy)
  assert float(a) == float(b)
  for name in aux_a:
    if name != "policy/ratio_max":
      assert float(aux_a[name]) == float(aux_b[name]), name


def test_temperature_is_applied_in_sampling_and_every_log_prob():
  """At temperature 0.7 the mean k1 estimate of the sequence KL agrees with
  the exact per-token KL (both ≥ 0) within sampling error; a sampler that
  forgot the temperature would not."""
  data = toy_data(2048)
  leaves, tree = jax.tree.flatten(data.ref_params)
  keys = jax.random.split(jax.random.key(9), len(leaves))
  policy = jax.tree.unflatten(tree, [
      x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  config = toy_config("ppo", 0.1, batch_size=2048, temperature=0.7)
  state = ppo.LEARNER.init(config, jax.random.key(0), data)._replace(
      params=policy)
  exp = jax.jit(lambda s: rollout.rollout(config, s, data, data.prompts,
                                     data.prompt_mask,
                                     jax.random.key(1)))(state)
  k1 = np.asarray(jnp.sum(exp.kl, axis=1), np.float64)
  exact_kl = np.asarray(rollout.exact_kl(config, policy, data.ref_params,
                                    exp.tokens, exp.mask,
                                    exp.response_mask), np.float64)
  assert np.all(exact_kl >= -1e-6)
  se = k1.std() / np.sqrt(k1.size)
  assert exact_kl.mean() > 0.05
  assert k1.mean() > -3 * se
  assert abs(k1.mean() - exact_kl.mean()) < 4 * se, (k1.mean(),
                                                     exact_kl.mean(), se)
  # Sampled at temperature 1, scored at 0.7: the estimate is off.
  cold = jax.jit(lambda s: rollout.rollout(config.replace(temperature=1.0), s,
                                      data, data.prompts, data.prompt_mask,
                                      jax.random.key(1)))(state)
  lp = rollout.token_log_probs(rollout.response_outputs(config, policy, cold.tokens,
                                              cold.mask)[0], cold.response,
                          cold.response_mask)
  ref = rollout.token_log_probs(rollout.response_outputs(
      config, data.ref_params, cold.tokens, cold.mask)[0], cold.response,
      cold.response_mask)
  wrong = np.asarray(jnp.sum(lp - ref, axis=1), np.float64)
  assert abs(wrong.mean() - exact_kl.mean()) > 4 * se


@pytest.mark.parametrize("top_k, top_p", [(2, 1.0), (0, 0.6), (3, 0.5)])
def test_top_k_top_p_log_probs_are_those_of_the_truncated_distribution(
    top_k, top_p):
  data = toy_data(64)
  config = toy_config("ppo", 0.1, batch_size=64, top_k=top_k, top_p=top_p,
                      temperature=0.8)
  state, exp = one_rollout(config, data)
  logits, _, _ = model_lib.Transformer(MODEL).apply(state.params, exp.tokens,
                                                    exp.mask)
  # float64 NumPy: temperature, then the k largest, then the most likely
  # tokens until their probability reaches top_p (Hugging Face's order).
  x = np.asarray(logits[:, -N - 1:-1], np.float64) / 0.8
  kept = np.ones(x.shape, bool)
  if top_k:
    kept = x >= np.sort(x, -1)[..., -top_k:][..., :1]
  p = np.where(kept, np.exp(x - x.max(-1, keepdims=True)), 0.0)
  p /= p.sum(-1, keepdims=True)
  desc = -np.sort(-p, -1)
  before = np.cumsum(desc, -1) - desc
  smallest = np.where(before < top_p, desc, np.inf).min(-1, keepdims=True)
  kept &= p >= smallest
  log_z = np.log(np.where(kept, np.exp(x), 0.0).sum(-1))
  chosen = np.take_along_axis(x, np.asarray(exp.response)[..., None],
                              -1)[..., 0]
  inside = np.take_along_axis(kept, np.asarray(exp.response)[..., None],
                              -1)[..., 0]
  live = np.asarray(exp.response_mask)
  assert np.all(inside[live])  # every sampled token inside the truncation
  assert np.any(~kept[live])  # and the truncation removed something
  np.testing.assert_allclose(np.asarray(exp.log_probs)[live],
                             (chosen - log_z)[live], atol=1e-5)


def test_distinct_n_counts_distinct_ngrams_of_real_tokens():
  tokens = jnp.asarray([[1, 2, 1, 2], [1, 2, 3, 0]])
  mask = jnp.asarray([[True] * 4, [True, True, True, False]])
  # unigrams: 1 2 1 2 1 2 3 -> {1, 2, 3}: 3 / 7
  assert float(rollout.distinct_n(tokens, mask, 1, 4)) == pytest.approx(3 / 7)
  # bigrams: 12 21 12 | 12 23 -> {12, 21, 23}: 3 / 5
  assert float(rollout.distinct_n(tokens, mask, 2, 4)) == pytest.approx(3 / 5)
  assert np.isnan(float(rollout.distinct_n(tokens, mask & False, 1, 4)))


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_iterations_are_seeded_and_vmap_over_seeds_equals_one_by_one(algo):
  """PPO's parameters agree to float32 rounding; TRPO's agree in every
  rollout metric and decision, while its parameters differ by more: ten CG
  iterations on this tiny transformer's ill-conditioned Fisher (residual
  0.1–0.6) amplify the rounding differences between the batched and the
  single programs. The same key gives the same bits."""
  data = toy_data(16)
  learner = ppo.LEARNER if algo == "ppo" else trpo.LEARNER
  config = toy_config(algo, 0.1, batch_size=16, iterations=2)
  step = lambda s: learner.update(config, s, data)  # noqa: E731
  keys = jax.random.split(jax.random.key(0), 2)
  states = jax.vmap(lambda k: learner.init(config, k, data))(keys)
  # one jitted object per program: a fresh `jax.jit(jax.vmap(step))` would
  # trace and compile the batched program a second time for `again`
  batched_step, single_step = jax.jit(jax.vmap(step)), jax.jit(step)
  batched, metrics = batched_step(states)
  for i in range(2):
    single, m = single_step(learner.init(config, keys[i], data))
    for name in ("objective/scores", "objective/kl", "objective/entropy"):
      # atol: the first iteration's KL (policy = reference) is ~0: measured
      # 0 in one program, 5.6e-8 in the other; rtol alone is rounding luck
      np.testing.assert_allclose(metrics[name][i], m[name], rtol=1e-6,
                                 atol=1e-6, err_msg=name)
    if algo == "trpo":
      for name in ("policy/step_fraction", "policy/accepted"):
        assert float(metrics[name][i]) == float(m[name])
      np.testing.assert_allclose(metrics["policy/trust_region_kl"][i],
                                 m["policy/trust_region_kl"], rtol=0.05)
      continue
    for a, b in zip(jax.tree.leaves(single.params),
                    jax.tree.leaves(jax.tree.map(lambda x: x[i],
                                                 batched.params))):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  again, _ = batched_step(states)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, again.params,
                                   batched.params))


@pytest.mark.parametrize("learner", [ppo.LEARNER, trpo.LEARNER],
                         ids=lambda l: l.name)
def test_runs_through_the_runner_and_resumes_bit_exactly(tmp_path, learner):
  data = toy_data(16)
  algo = "ppo" if learner is ppo.LEARNER else "trpo"
  config = toy_config(algo, 0.1, batch_size=16, iterations=4, eval_every=2,
                      kl_control="adaptive", kl_target=0.5, kl_horizon=100.0,
                      value_model="policy" if algo == "trpo" else "critic")
  settings = runner.RunnerSettings(chunk=1, checkpoint_every=1, seeds=2)
  whole = runner.run(learner, config, str(tmp_path / "a"), settings,
                     data=data, progress=False)
  runner.run(learner, config, str(tmp_path / "b"), settings, data=data,
             progress=False, stop_after=2)
  resumed = runner.run(learner, config, str(tmp_path / "b"), data=data,
                       progress=False, resume=True)
  assert jax.tree.all(jax.tree.map(np.array_equal, whole.states.params,
                                   resumed.states.params))
  rows = [r for r in runner.read_metrics(str(tmp_path / "a"))]
  assert rows[-1]["eval/scores"] is not None and rows[0]["eval/scores"] is None
  assert rows[0]["objective/gold"] is None  # no gold annotator: no value
  assert [r["episodes"] for r in rows if r["seed"] == 0] == [16, 32, 48, 64]
  coefs = [r["objective/kl_coef"] for r in rows if r["seed"] == 0]
  assert coefs[0] == pytest.approx(0.1) and len(set(coefs)) > 1
  per_seed = whole.summary["per_seed"]
  assert per_seed[0]["reference_scores"] is not None
