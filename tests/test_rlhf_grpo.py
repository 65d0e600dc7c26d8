"""GRPO and RLOO on the language model (``jaxrl_align.rlhf.grpo``,
``.rloo``): their losses and gradients equal TRL's own loss code, their
advantages a NumPy port of TRL's, every placement of the KL and every
estimator's exact fixed point on the enumerable toy of ``test_rlhf_rl.py``
(``exact_updates.py``), and the learners reaching the fixed point of their
settings on the final iterate and each of the last ones."""

import collections
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_align import advantages
from jaxrl_align.rlhf import credit
from jaxrl_align.rlhf import grpo
from jaxrl_align.rlhf import ppo
from jaxrl_align.rlhf import rl
from jaxrl_align.rlhf import rloo
from jaxrl_align.rlhf import rollout

from exact_updates import Method
from exact_updates import Toy
from test_rlhf_rl import centred
from test_rlhf_rl import exact
from test_rlhf_rl import LONG
from test_rlhf_rl import MODEL
from test_rlhf_rl import N
from test_rlhf_rl import PAD
from test_rlhf_rl import responses
from test_rlhf_rl import STOP
from test_rlhf_rl import toy_data

torch = pytest.importorskip("torch")
trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")
trl_rloo = pytest.importorskip("trl.trainer.rloo_trainer")


def config_of(module, beta, **more):
  fields = dict(model=MODEL, stop_token=STOP, pad_token=PAD,
                response_length=N, kl_control="fixed", kl_coef=beta,
                missing_eos_penalty=0.5)
  fields.update(more)
  return module.LEARNER.config_type(**fields)


# ------------------------------------------------ TRL's own loss code


class _Accelerator:
  num_processes = 1
  sync_gradients = True

  def gather(self, x):
    return x

  gather_for_metrics = gather

  def reduce(self, x, reduction="sum"):
    del reduction
    return x


def _trl(cls, log_probs, inputs, **attrs):
  """TRL's ``_compute_loss`` of ``cls`` on given per-token log-probabilities
  (a stand-in for the model's forward pass): ``(loss, d loss / d log-probs,
  metrics)``, float64."""
  trainer = cls.__new__(cls)
  lp = torch.tensor(np.asarray(log_probs, np.float64), requires_grad=True)
  trainer._get_per_token_logps_and_entropies = (
      lambda *a, **k: (lp, torch.zeros_like(lp), None))
  model = types.SimpleNamespace(training=True)
  trainer.__dict__.update(
      model=model, accelerator=_Accelerator(), aux_loss_enabled=False,
      _metrics={"train": collections.defaultdict(list)},
      top_entropy_quantile=1.0, off_policy_mask_threshold=None,
      use_vllm=False, current_gradient_accumulation_steps=1,
      _entropy_bonus_enabled=False, **attrs)
  tensors = {k: torch.tensor(np.asarray(v)) for k, v in inputs.items()}
  loss = trainer._compute_loss(model, tensors)
  loss.backward()
  return float(loss.detach()), lp.grad.numpy(), trainer._metrics["train"]


def _batch(key, b=8, n=N + 2):
  k = jax.random.split(key, 5)
  live = jnp.arange(n)[None] < jax.random.randint(k[0], (b, 1), 1, n + 1)
  old = jnp.where(live, -jax.random.uniform(k[1], (b, n)) * 2 - 0.1, 0.0)
  ref = jnp.where(live, -jax.random.uniform(k[2], (b, n)) * 2 - 0.1, 0.0)
  # Ratios from 0.5 to 2: every clip, and the dual clip, binds somewhere.
  new = jnp.where(live, old + jax.random.uniform(k[3], (b, n), minval=-0.7,
                                                 maxval=0.7), 0.0)
  adv = jax.random.normal(k[4], (b,))
  exp = rollout.Experience(
      None, None, jnp.zeros((b, n), jnp.int32), live, old, ref, None, None,
      None, None, None, jnp.where(live, adv[:, None], 0.0), None)
  return exp, new


GRPO_CASES = [dict(loss_type=t) for t in ("grpo", "bnpo", "dr_grpo", "dapo")]
GRPO_CASES += [dict(loss_type="dapo", clip_eps_high=0.28, dual_clip=1.5),
               dict(loss_type="grpo", ratio="sequence"),
               dict(loss_type="bnpo", kl_coef=0.0)]


@pytest.mark.parametrize("case", GRPO_CASES, ids=lambda c: "-".join(
    f"{k}={v}" for k, v in c.items()))
def test_grpo_loss_and_gradient_equal_trls(case):
  """``grpo.policy_loss`` against TRL 1.16.0's ``GRPOTrainer._compute_loss``
  (``trl/trainer/grpo_trainer.py``) on the same log-probabilities: the loss,
  its gradient with respect to every token's log-probability (what the
  model's gradient is made of) and the clip fractions, to 1e-5, for every
  ``loss_type``, clip-higher with a dual clip, GSPO's sequence ratio and
  β = 0; the same loss with the KL's sign flipped fails."""
  exp, new = _batch(jax.random.key(len(str(case))))
  b, n = new.shape
  beta = case.get("kl_coef", 0.1)
  more = {k: v for k, v in case.items() if k != "kl_coef"}
  config = config_of(grpo, beta, batch_size=b, num_minibatches=2,
                     response_length=n, model=LONG,
                     **more)
  total = float(jnp.sum(exp.response_mask))
  ours = lambda lp, sign=1.0: grpo.policy_loss(  # noqa: E731
      config, sign * beta, jnp.asarray(total / 2), lp, exp)
  loss, aux = jax.jit(ours)(new)
  grad = jax.grad(lambda lp: ours(lp)[0])(new)
  mask = np.asarray(exp.response_mask)
  want, want_grad, metrics = _trl(
      trl_grpo.GRPOTrainer, new,
      {"prompt_ids": np.zeros((b, 1), np.int64),
       "prompt_mask": np.ones((b, 1), np.int64),
       "completion_ids": np.zeros((b, n), np.int64),
       "completion_mask": mask.astype(np.int64),
       "advantages": np.asarray(exp.advantages[:, 0], np.float64),
       "old_per_token_logps": np.asarray(exp.log_probs, np.float64),
       "ref_per_token_logps": np.asarray(exp.ref_log_probs, np.float64),
       "num_items_in_batch": np.asarray(total)},
      loss_type=config.loss_type, epsilon_low=config.clip_eps,
      epsilon_high=config.clip_eps_high, beta=beta,
      importance_sampling_level=config.ratio, max_completion_length=n,
      args=types.SimpleNamespace(
          delta=config.dual_clip or None, use_bias_correction_kl=False,
          steps_per_generation=2))
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.where(mask, grad, 0.0), want_grad,
                             rtol=1e-5, atol=1e-6)
  for name in ("clip_ratio/low_mean", "clip_ratio/high_mean",
               "clip_ratio/region_mean"):
    np.testing.assert_allclose(float(aux[name]), metrics[name][0], atol=1e-6)
  if beta:
    np.testing.assert_allclose(float(aux["kl"]), metrics["kl"][0], rtol=1e-5)
    wrong = float(ours(new, -1.0)[0])
    assert abs(wrong - want) > 1e-3, (wrong, want)


@pytest.mark.parametrize("ratio", ["sequence", "token"])
def test_rloo_loss_and_gradient_equal_trls(ratio):
  """``rloo.policy_loss`` against TRL 1.16.0's ``RLOOTrainer._compute_loss``
  (``trl/trainer/rloo_trainer.py``: the ratio of whole sequences, clipped,
  the mean over sequences) to 1e-5 with an asymmetric clip; the token ratio
  (PPO's) is another loss, and differs from it."""
  exp, new = _batch(jax.random.key(7))
  b, n = new.shape
  config = config_of(rloo, 0.1, batch_size=b, response_length=n,
                     model=LONG, clip_eps=0.2,
                     clip_eps_high=0.28, ratio=ratio)
  loss, aux = jax.jit(lambda lp: rloo.policy_loss(config, lp, exp))(new)
  grad = jax.grad(lambda lp: rloo.policy_loss(config, lp, exp)[0])(new)
  mask = np.asarray(exp.response_mask)
  want, want_grad, metrics = _trl(
      trl_rloo.RLOOTrainer, new,
      {"prompt_ids": np.zeros((b, 1), np.int64),
       "prompt_mask": np.ones((b, 1), np.int64),
       "completion_ids": np.zeros((b, n), np.int64),
       "completion_mask": mask.astype(np.int64),
       "advantages": np.asarray(exp.advantages[:, 0], np.float64),
       "old_logps": np.asarray(exp.log_probs.sum(1), np.float64)},
      epsilon_low=0.2, epsilon_high=0.28)
  same = (np.isclose(float(loss), want, rtol=1e-5, atol=1e-6) and np.allclose(
      np.where(mask, grad, 0.0), want_grad, rtol=1e-5, atol=1e-6))
  assert same == (ratio == "sequence"), (float(loss), want)
  if ratio == "sequence":
    np.testing.assert_allclose(float(aux["clip_ratio/region_mean"]),
                               metrics["clip_ratio/region_mean"][0])


def _trl_grpo_advantages(rewards, g, scale):
  """A float64 port of TRL 1.16.0's ``_generate_and_score_completions``
  (``trl/trainer/grpo_trainer.py``, the ``sum_then_normalize`` branch):
  group means repeated, the group's or the batch's ``nanstd`` (ddof 1),
  ``(r - mean) / (std + 1e-4)`` unless ``scale_rewards == "none"``."""
  grouped = rewards.reshape(-1, g)
  mean = np.repeat(grouped.mean(1), g)
  std = (np.repeat(grouped.std(1, ddof=1), g) if scale in ("group", "none")
         else np.full_like(rewards, rewards.std(ddof=1)))
  adv = rewards - mean
  return adv if scale == "none" else adv / (std + 1e-4)


@pytest.mark.parametrize("kl_in", ["loss", "reward"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_advantages_equal_a_port_of_trls(scale, kl_in):
  """The credit stage's advantages, per response, under jit: TRL's with the
  KL in the loss (the reward is the score); with the KL in the reward, the
  same of ``score - β Σ_t k1_t`` (TRL's RLOO reward); every token of a
  response carries its advantage."""
  b, n, g, beta = 12, 5, 4, 0.3
  k = jax.random.split(jax.random.key(3), 4)
  live = jnp.arange(n)[None] < jax.random.randint(k[0], (b, 1), 1, n + 1)
  lp = jnp.where(live, -jax.random.uniform(k[1], (b, n)), 0.0)
  ref = jnp.where(live, -jax.random.uniform(k[2], (b, n)), 0.0)
  scores = jax.random.normal(k[3], (b,))
  exp = rollout.Experience(None, None, None, live, lp, ref, None, scores,
                           None, None, None, None, None)
  config = config_of(grpo, beta, batch_size=b, group_size=g,
                     scale_rewards=scale, kl_in=kl_in, kl_estimator="k1")
  out = jax.jit(lambda e: grpo.credit_stage(config, e, beta))(exp)
  reward = np.asarray(scores, np.float64)
  if kl_in == "reward":
    reward = reward - beta * np.asarray((lp - ref).sum(1), np.float64)
  want = _trl_grpo_advantages(reward, g, scale)
  np.testing.assert_allclose(out.advantages, np.where(live, want[:, None],
                                                      0.0), atol=1e-5)


def test_rloo_normalized_advantages_equal_a_port_of_trls():
  """``normalize_advantages``: TRL's ``(A - mean) / (nanstd + 1e-4)`` over
  the batch's leave-one-out advantages."""
  b, g, beta = 12, 3, 0.2
  k = jax.random.split(jax.random.key(4), 3)
  live = jnp.ones((b, 2), bool)
  lp = -jax.random.uniform(k[0], (b, 2))
  ref = -jax.random.uniform(k[1], (b, 2))
  scores = jax.random.normal(k[2], (b,))
  exp = rollout.Experience(None, None, None, live, lp, ref, None, scores,
                           None, None, None, None, None)
  config = config_of(rloo, beta, batch_size=b, group_size=g,
                     normalize_advantages=True)
  out = rloo.credit_stage(config, exp, beta)
  reward = np.asarray(scores - beta * (lp - ref).sum(1), np.float64)
  grouped = reward.reshape(-1, g)
  base = (grouped.sum(1, keepdims=True) - grouped) / (g - 1)
  adv = (grouped - base).reshape(-1)
  want = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-4)
  np.testing.assert_allclose(out.advantages[:, 0], want, atol=1e-5)


def _verl_reinforce_pp(token_rewards, mask):
  """A float64 port of verl's ``compute_reinforce_plus_plus_outcome_advantage``
  (``verl/trainer/ppo/core_algos.py``): returns to go of the per-token
  rewards (γ = 1, reset after the last token), ``masked_whiten`` over the
  batch's response tokens (unbiased variance, ``rsqrt(var + 1e-8)``)."""
  returns = np.zeros_like(token_rewards)
  running = np.zeros(token_rewards.shape[0])
  for t in reversed(range(token_rewards.shape[1])):
    running = token_rewards[:, t] + running
    returns[:, t] = running
    running = running * mask[:, t]
  live = mask.astype(bool)
  mean = returns[live].mean()
  var = returns[live].var(ddof=1)
  return (returns - mean) / np.sqrt(var + 1e-8) * mask


def test_reinforce_pp_is_ppos_credit_stage_without_a_critic_and_lambda_one():
  """REINFORCE++ (Hu et al. 2025): PPO's credit stage with
  ``value_model="none"`` and ``lam=1`` gives verl's REINFORCE++ advantages
  (token-level k1 KL in the reward, returns to go, whitened over the
  batch); with the default λ = 0.95 it does not."""
  b, n, beta = 10, 5, 0.2
  k = jax.random.split(jax.random.key(5), 4)
  live = jnp.arange(n)[None] < jax.random.randint(k[0], (b, 1), 1, n + 1)
  lp = jnp.where(live, -jax.random.uniform(k[1], (b, n)), 0.0)
  ref = jnp.where(live, -jax.random.uniform(k[2], (b, n)), 0.0)
  scores = jax.random.normal(k[3], (b,))
  mask = np.asarray(live, np.float64)
  last = np.asarray(jax.vmap(lambda m: jnp.arange(n) == jnp.sum(m) - 1)(live))
  token_rewards = (np.asarray(scores, np.float64)[:, None] * last
                   - beta * np.asarray(lp - ref, np.float64) * mask)
  want = _verl_reinforce_pp(token_rewards, mask)
  for lam, same in ((1.0, True), (0.95, False)):
    config = ppo.RLHFPPOConfig(value_model="none", lam=lam, batch_size=b)
    _, _, adv, _ = credit.gae_advantages(config, scores, lp, ref,
                                         jnp.zeros((b, n)), live, beta)
    assert np.allclose(adv, want, atol=1e-5) == same, lam


# ------------------------------------------ exact expected updates


def centred_data(batch):
  """The toy with the reference's expected reward 0 (``test_rlhf_rl.py``'s
  ``centred``): J* is the gain over the reference, so 2% of J* is 2% of
  the gain."""
  return centred(config_of(rloo, 0.5), toy_data(batch))


@pytest.fixture(scope="module")
def toy():
  data = centred_data(8)
  _, _, r, _ = exact(config_of(rloo, 0.5), data, data.ref_params)
  return Toy(responses(), MODEL, data.ref_params, r)


# Which settings have π* as their fixed point (the expected update vanishes
# there), measured by enumeration; docs/rlhf.md, "Where the KL goes".
AT_OPTIMUM = {
    "RLOO, k1 in the reward": (Method(), True),
    "GRPO mean baseline, k1 in the reward": (Method(baseline="mean"), True),
    "GRPO 1/|y| aggregation, k1 in the reward": (Method(aggregate="grpo"),
                                                True),
    "k3 in the reward": (Method(estimator="k3"), False),
    "k1 in the loss": (Method(kl_in="loss", estimator="k1"), False),
    "k2 in the loss": (Method(kl_in="loss", estimator="k2"), False),
    "k3 in the loss (TRL's GRPO)": (Method(kl_in="loss", estimator="k3"),
                                   False),
}


@pytest.mark.parametrize("beta", [0.3, 0.5])
def test_which_kl_placements_have_the_optimum_as_fixed_point(toy, beta):
  """By exact expected updates at π* ∝ π_ref exp(r/β): the KL in the reward
  with ``k1`` vanishes there whatever the baseline or the aggregation (the
  regularised reward is constant under π*, so every advantage is 0); ``k3``
  in the reward, and every estimator as a loss term, do not (``k1`` in the
  loss has zero expected gradient: no regulariser at all; ``k2`` and
  ``k3`` regularise each token's distribution, not the sequence's)."""
  star = toy.optimum(beta)
  for name, (method, vanishes) in AT_OPTIMUM.items():
    g = np.abs(toy.expected_update(star, beta, method)).max()
    assert (g < 1e-12) == vanishes, (name, g)


# The fixed points of the settings tested below (measured, docs/rlhf.md).
FIXED = {
    "k1 reward": Method(),
    "k3 loss": Method(kl_in="loss", estimator="k3", baseline="mean"),
}


@pytest.mark.parametrize("beta", [0.3, 0.5])
def test_fixed_points_of_the_kl_in_the_loss_differ_from_the_optimum(toy,
                                                                    beta):
  """The exact fixed point of ``k3`` in the loss (GRPO's mean baseline over
  4, no scaling) is not π*: its KL is off by more than 10%; the fixed point
  of ``k1`` in the reward, found by the same iteration, is π* (objective
  and KL to 1e-3; at β = 0.5 only: the solver's check)."""
  best, best_kl = toy.objective(toy.optimum(beta), beta)
  for name, method in FIXED.items():
    if name == "k1 reward" and beta != 0.5:
      continue
    log_pi, residual = toy.fixed_point(beta, method)
    assert residual < 1e-4, (name, residual)
    j, kl = toy.objective(log_pi, beta)
    at_optimum = abs(kl - best_kl) < 1e-3 * best_kl + 1e-3
    assert at_optimum == (name == "k1 reward"), (name, j, kl, best, best_kl)
    if name == "k1 reward":
      assert abs(j - best) < 1e-3 * abs(best)


# ------------------------------------------------- learners, exactly


def sweep_last_iterates(learner, config, betas, data, last, key=0):
  """One program: the learner at each β (a vmap over the config's β), the
  policy after each of the last ``last`` iterations: leaves ``[β, last,
  ...]``."""

  def run(beta):
    cfg = config.replace(kl_coef=beta)
    state = learner.init(cfg, jax.random.key(key), data)
    body = lambda s, _: (learner.update(cfg, s, data)[0], None)  # noqa

    def step(s, _):
      s = learner.update(cfg, s, data)[0]
      return s, s.params
    state = jax.lax.scan(body, state, None, cfg.iterations - last)[0]
    return jax.lax.scan(step, state, None, last)[1]

  return jax.jit(jax.vmap(run))(jnp.asarray(betas, jnp.float32))


def _errors(toy, learner, config, data, betas, target, last=5):
  """Per β, the last iterates' ``(J - J°)/J°`` and ``(KL - KL°)/KL°``
  against ``target(β) -> (J°, KL°)``, J exactly by enumeration."""
  params = sweep_last_iterates(learner, config, betas, data, last)
  out = []
  for i, beta in enumerate(betas):
    want_j, want_kl = target(beta)
    for t in range(last):
      got, kl, _, _ = exact(config.replace(kl_coef=beta), data,
                            jax.tree.map(lambda x: x[i, t], params))
      out.append((beta, t, (got - want_j) / abs(want_j),
                  (kl - want_kl) / want_kl))
  return out


# Measured (docs/rlhf.md): at 150 iterations the last iterates of some keys
# still sit 2-3% below J* at β = 0.2; at 200 (250 with the KL in the loss)
# keys 0 and 1 land inside the bands at β = 0.3 and 0.5.
BETAS = (0.3, 0.5)
RUN = dict(iterations=200, batch_size=512, learning_rate=1e-3, epochs=4,
           num_minibatches=4)


@pytest.mark.slow
@pytest.mark.parametrize("module,more", [
    (rloo, {}),
    (rloo, dict(ratio="token")),
    (grpo, dict(kl_in="reward", kl_estimator="k1", scale_rewards="none")),
], ids=["rloo", "rloo-token-ratio", "grpo-kl-in-reward"])
def test_learners_with_k1_in_the_reward_reach_the_optimum(toy, module, more):
  """RLOO (TRL's sequence ratio, and PPO's token ratio: the recipe of
  docs/architecture.md) and GRPO with ``k1`` in the reward and no scaling
  reach π* ∝ π_ref exp(r/β) at β = 0.3 and 0.5 (one vmapped
  program): objective within 2% and KL within 10%, on the final iterate and
  each of the last 5."""
  data = centred_data(RUN["batch_size"])
  config = config_of(module, BETAS[0], **RUN, **more)
  errors = _errors(toy, module.LEARNER, config, data, BETAS,
                   lambda b: toy.objective(toy.optimum(b), b))
  print(module.__name__, [(b, t, round(j, 4), round(kl, 4))
                          for b, t, j, kl in errors])
  for beta, t, j, kl in errors:
    assert abs(j) <= 0.02 and abs(kl) <= 0.10, (beta, t, j, kl)


@pytest.mark.slow
def test_grpo_with_k3_in_the_loss_reaches_its_own_fixed_point_not_the_optimum(
    toy):
  """GRPO with TRL's KL placement (``k3`` in the loss, group mean, no
  scaling) reaches the exact fixed point of its expected update (objective
  within 2%, KL within 10%, each of the last 5 iterates, β = 0.3 and 0.5),
  which is not π* (its KL is 15% below π*'s at β = 0.5)."""
  data = centred_data(RUN["batch_size"])
  config = config_of(grpo, BETAS[0], **{**RUN, "iterations": 250},
                     kl_in="loss", kl_estimator="k3", scale_rewards="none")
  fixed = {b: toy.objective(toy.fixed_point(b, FIXED["k3 loss"])[0], b)
           for b in BETAS}
  errors = _errors(toy, grpo.LEARNER, config, data, BETAS, fixed.get)
  print("k3 loss", [(b, t, round(j, 4), round(kl, 4))
                    for b, t, j, kl in errors])
  for beta, t, j, kl in errors:
    assert abs(j) <= 0.02 and abs(kl) <= 0.10, (beta, t, j, kl)
  # Not π*: at β = 0.5 the fixed point's KL is 15% below KL* (8.8% at 0.3).
  _, star_kl = toy.objective(toy.optimum(0.5), 0.5)
  assert fixed[0.5][1] < 0.9 * star_kl, (fixed[0.5], star_kl)


# ------------------------------------------------------- the learners


@pytest.mark.parametrize("module", [grpo, rloo], ids=["grpo", "rloo"])
def test_seeds_vmap_equals_one_by_one_and_no_critic(module):
  """Two seeds in one vmapped program equal each run alone to float32
  rounding (as PPO's, ``test_rlhf_rl.py``), and the same keys give the same
  bits; no critic in the state, no value metric."""
  data = toy_data(16)
  config = config_of(module, 0.3, batch_size=16, iterations=2)
  learner = module.LEARNER

  def run(key):
    state = learner.init(config, key, data)
    return learner.update(config, state, data)

  keys = jax.random.split(jax.random.key(1), 2)
  both, metrics = jax.jit(jax.vmap(run))(keys)
  assert both.critic == {} and "loss/value_avg" not in metrics
  for i in range(2):
    one, _ = jax.jit(run)(keys[i])
    for a, b in zip(jax.tree.leaves(one.params),
                    jax.tree.leaves(both.params)):
      np.testing.assert_allclose(a, b[i], rtol=1e-4, atol=1e-6)
  again, _ = jax.jit(jax.vmap(run))(keys)
  assert jax.tree.all(jax.tree.map(jnp.array_equal, again.params,
                                   both.params))


def test_beta_zero_runs_no_reference_pass():
  """With β a concrete 0 under the fixed controller (TRL's GRPO default),
  an iteration never reads the reference: with NaN reference parameters
  every metric and parameter stays finite, and no KL is reported (it was
  not measured); at β = 0.1 the same NaN reaches the metrics."""
  data = toy_data(16)
  data = data.replace(ref_params=jax.tree.map(
      lambda x: jnp.full_like(x, jnp.nan), data.ref_params))
  for beta, reads in ((0.0, False), (0.1, True)):
    config = config_of(grpo, beta, batch_size=16, iterations=2)
    # The policy starts from the reference: start it from a finite one.
    state = grpo.LEARNER.init(config, jax.random.key(0),
                              toy_data(16))
    new, metrics = jax.jit(lambda s: grpo.LEARNER.update(config, s, data))(
        state)
    # (no gold annotator here: the gold score is NaN by design)
    finite = all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(
        (new.params, {k: v for k, v in metrics.items()
                      if k not in ("objective/gold", "distinct_2")})))
    assert finite != reads, beta
    assert ("objective/kl" in metrics) == reads
    assert ("kl" in metrics) == reads


@pytest.mark.parametrize("bad,match", [
    (dict(group_size=1), "group_size"),
    (dict(value_model="critic"), "value_model"),
    (dict(loss_type="sum"), "loss_type"),
    (dict(scale_rewards="std"), "scale_rewards"),
    (dict(kl_in="both"), "kl_in"),
    (dict(clip_eps_high=0.0), "clip_eps_high"),
    (dict(dual_clip=1.1), "dual_clip"),
    (dict(ratio="geometric"), "ratio"),
])
def test_grpo_config_refuses_bad_values(bad, match):
  with pytest.raises(ValueError, match=match):
    config_of(grpo, 0.1, **bad)


def test_an_rl_learner_registry_line_is_a_command():
  """GRPO and RLOO are commands because they are in ``rlhf.LEARNERS``."""
  from jaxrl_align import rlhf
  from jaxrl_align.host.rlhf import rl_stages
  assert {"grpo", "rloo"} <= set(rl_stages.commands(rlhf.LEARNERS))
  assert rl.Algorithm is type(grpo.ALGORITHM)
  assert advantages.GRPO_SCALES == ("group", "batch", "none")
