"""The RL step on the language model is pluggable at its credit stage
(``jaxrl_align.rlhf.credit``): G responses per prompt, no value model, a
group baseline against a NumPy reference, and a critic-free algorithm made
from the recipe (a credit stage, PPO's update, one ``make_learner`` line).
The recipe's algorithm is ``rlhf.rloo`` with ``ratio="token"``, whose run
to the exact optimum is in ``test_rlhf_grpo.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_align import advantages
from jaxrl_align import rlhf
from jaxrl_align.host import options
from jaxrl_align.host.rlhf import rl_stages as host_rl
from jaxrl_align.rlhf import credit
from jaxrl_align.rlhf import ppo
from jaxrl_align.rlhf import rl
from jaxrl_align.rlhf import rollout
from jaxrl_align.rlhf import trpo

from test_rlhf_rl import toy_config
from test_rlhf_rl import toy_data

# The recipe of docs/architecture.md: a critic-free RL step is a credit
# stage and an update (here PPO's, clipping the token ratio), one learner.
RLOO = rl.Algorithm(init_opt=ppo.init_opt, learn=ppo.learn,
                    credit=credit.group_baseline(advantages.rloo_advantages))
RLOO_LEARNER = rl.make_learner("rlhf-rloo", ppo.RLHFPPOConfig, RLOO,
                               ("loss/policy_avg",))


def _experience(key, b=12, n=5, g=4):
  k = jax.random.split(key, 5)
  mask = jnp.arange(n)[None] < jax.random.randint(k[0], (b, 1), 1, n + 1)
  log_probs = jnp.where(mask, -jax.random.uniform(k[1], (b, n)) * 2, 0.0)
  ref = jnp.where(mask, -jax.random.uniform(k[2], (b, n)) * 2, 0.0)
  scores = jax.random.normal(k[3], (b,))
  zeros = jnp.zeros((b, n))
  exp = rollout.Experience(
      None, None, None, mask, log_probs, ref, zeros, scores,
      jnp.ones((b,), bool), None, None, None, None)
  config = ppo.RLHFPPOConfig(batch_size=b, group_size=g, value_model="none")
  return config, exp


def _numpy_rloo(scores, log_probs, ref, mask, beta, g):
  """float64 loop: sequence reward score - β Σ (log π - log π_ref) (k1),
  each response's minus the mean of the others of its group."""
  scores, log_probs, ref, mask = (np.asarray(x, np.float64) for x in
                                  (scores, log_probs, ref, mask))
  total = scores - beta * ((log_probs - ref) * mask).sum(1)
  adv = np.zeros_like(total)
  for start in range(0, len(total), g):
    for i in range(start, start + g):
      others = [total[j] for j in range(start, start + g) if j != i]
      adv[i] = total[i] - np.mean(others)
  return adv[:, None] * mask


@pytest.mark.parametrize("wrong", [False, True])
def test_group_baseline_matches_a_numpy_loop_under_jit_and_vmap(wrong):
  """Leave-one-out over the G consecutive rows of each prompt, the KL in
  the sequence reward, every response token carrying its response's
  advantage; grouping by stride instead (rows i, i + P, ...: a plausible
  reshape bug) fails the same comparison."""
  config, exp = _experience(jax.random.key(0))
  beta = 0.3
  right = credit.group_baseline(advantages.rloo_advantages)

  def strided(config, exp, kl_coef):
    g = config.group_size
    perm = jnp.arange(exp.scores.shape[0]).reshape(g, -1).T.reshape(-1)
    moved = jax.tree.map(lambda x: x[perm], exp)
    return jax.tree.map(lambda x: x[jnp.argsort(perm)],
                        right(config, moved, kl_coef))

  stage = strided if wrong else right
  want = _numpy_rloo(exp.scores, exp.log_probs, exp.ref_log_probs,
                     exp.response_mask, beta, config.group_size)
  out = jax.jit(lambda e: stage(config, e, beta))(exp)
  close = np.allclose(out.advantages, want, atol=1e-5)
  assert close != wrong
  if wrong:
    return
  np.testing.assert_array_equal(out.returns, 0.0)
  # The same per-token rewards and KL as the GAE stage's.
  kl, reward, _, _ = credit.gae_advantages(
      config, exp.scores, exp.log_probs, exp.ref_log_probs, exp.values,
      exp.response_mask, beta)
  np.testing.assert_allclose(out.rewards, reward, atol=1e-6)
  np.testing.assert_allclose(out.kl, kl, atol=1e-6)
  # Each group's advantages sum to zero over responses.
  per_response = np.where(np.asarray(exp.response_mask).any(1),
                          np.asarray(out.advantages)[:, 0], 0.0)
  np.testing.assert_allclose(per_response.reshape(-1, 4).sum(1), 0.0,
                             atol=1e-5)
  # vmap over two batches equals one by one.
  configs_exps = [_experience(jax.random.key(i)) for i in (1, 2)]
  stacked = jax.tree.map(lambda *x: jnp.stack(x),
                         *[e for _, e in configs_exps])
  both = jax.jit(jax.vmap(lambda e: stage(config, e, beta)))(stacked)
  for i, (_, e) in enumerate(configs_exps):
    np.testing.assert_allclose(both.advantages[i],
                               stage(config, e, beta).advantages, atol=1e-6)


def test_iterate_answers_each_prompt_group_size_times():
  """``batch_size / group_size`` prompts, each in ``group_size`` consecutive
  rows, sampled independently; no value pass and no value metric with
  ``value_model="none"``."""
  b, g = 16, 4
  data = toy_data(64)
  prompts = jnp.arange(64, dtype=jnp.int32)[:, None] % 3 + 1
  data = data.replace(prompts=prompts)
  config = toy_config("ppo", 0.5, batch_size=b, group_size=g,
                      value_model="none", iterations=2, epochs=1)
  state = RLOO_LEARNER.init(config, jax.random.key(0), data)
  assert state.critic == {}
  seen = {}

  def spy(config, exp, kl_coef):
    seen["exp"] = exp
    return RLOO.credit(config, exp, kl_coef)

  spied = rl.Algorithm(RLOO.init_opt, RLOO.learn, spy)
  _, metrics = rl.iterate(spied, config, state, data)
  exp = seen["exp"]
  first = np.asarray(exp.tokens[:, 0]).reshape(b // g, g)
  assert (first == first[:, :1]).all()  # one prompt per group
  np.testing.assert_array_equal(exp.values, 0.0)
  responses = np.asarray(exp.response).reshape(b // g, g, -1)
  assert any(len({tuple(r) for r in group}) > 1 for group in responses)
  assert "loss/value_avg" not in metrics and "loss/policy_avg" in metrics
  with pytest.raises(ValueError, match="group_size"):
    toy_config("ppo", 0.5, batch_size=6, group_size=4)


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_no_value_model_trains_without_a_critic(algo):
  """PPO and TRPO with ``value_model="none"``: GAE on zero values, no
  critic in the state, no value metric, and the policy moves."""
  data = toy_data(32)
  config = toy_config(algo, 0.5, batch_size=32, value_model="none",
                      iterations=2)
  learner = ppo.LEARNER if algo == "ppo" else trpo.LEARNER
  state = learner.init(config, jax.random.key(0), data)
  new, metrics = jax.jit(lambda s: learner.update(config, s, data))(state)
  assert new.critic == {} and "val/clipfrac_avg" not in metrics
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                       new.params, state.params)
  assert max(jax.tree.leaves(moved)) > 0


def test_rl_commands_derive_from_the_learner_registry():
  """Every RL learner ``rlhf-NAME`` of ``rlhf.LEARNERS`` is the command
  ``rlhf NAME`` with its config's options; one more learner in the
  registry is one more command."""
  registry = {k: v for k, v in rlhf.LEARNERS.items()
              if k not in ("rlhf-rloo", "rlhf-grpo")}
  assert set(host_rl.commands(registry)) == {"ppo", "trpo"}
  more = host_rl.commands({**registry, RLOO_LEARNER.name: RLOO_LEARNER})
  assert set(more) == {"ppo", "trpo", "rloo"}
  assert set(host_rl.commands(rlhf.LEARNERS)) == {"ppo", "trpo", "rloo",
                                                  "grpo"}
  command = more["rloo"]
  assert command.learner == "rlhf-rloo"
  assert command.groups[0] == ("rloo", ppo.RLHFPPOConfig, None)
  assert "critic" in host_rl.COMMANDS["ppo"].description


@pytest.mark.parametrize("algo", ["ppo", "trpo", "rloo", "grpo"])
def test_critic_free_commands_offer_no_critic_options(algo):
  """A learner whose config allows only ``value_model="none"`` (RLOO,
  GRPO) offers none of the fields only a value model reads (``--gamma``
  would be accepted and ignored); PPO and TRPO (whose value model may be
  ``none``, REINFORCE++) offer every field."""
  _, config_type, names = host_rl.COMMANDS[algo].groups[0]
  offered = {f.name for f in options.option_fields(config_type, names)}
  critic_free = algo in ("rloo", "grpo")
  assert config_type().value_model == ("none" if critic_free else "critic")
  for name in rl.CRITIC_FIELDS:
    assert (name in offered) != critic_free, name
  assert {"kl_coef", "learning_rate", "group_size"} <= offered


@pytest.mark.parametrize("value_model", ["critic", "none"])
@pytest.mark.parametrize("learner", [ppo.LEARNER, trpo.LEARNER],
                         ids=lambda l: l.name)
def test_the_finite_metrics_are_those_the_update_reports(learner,
                                                         value_model):
  """The runner checks a learner's finite metrics where its update reports
  them: every one is reported with a value model, all but the value's
  without one (read from the update's shapes, nothing run)."""
  data = toy_data(16)
  config = toy_config("ppo" if learner is ppo.LEARNER else "trpo", 0.5,
                      batch_size=16, value_model=value_model)
  state = learner.init(config, jax.random.key(0), data)
  metrics = jax.eval_shape(lambda s: learner.update(config, s, data)[1],
                           state)
  expected = set(learner.finite_metrics) - (
      {"loss/value_avg"} if value_model == "none" else set())
  assert expected <= set(metrics), expected - set(metrics)
  assert ("loss/value_avg" in metrics) == (value_model != "none")
