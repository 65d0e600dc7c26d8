"""PPO: probe environments, the truncation probe, reproducibility, vmap,
configs and bad input. CartPole learning is in test_learning.py (slow)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jaxrl_align as jra
from jaxrl_align import agents
from jaxrl_align import envs
from jaxrl_align import sgd
from jaxrl_align.agents import on_policy
from jaxrl_align.agents import presets
from jaxrl_align.agents import ppo

PROBE = dict(num_envs=8, num_steps=16, num_minibatches=2, update_epochs=4,
             learning_rate=3e-3, anneal_lr=False, ent_coef=0.0, gamma=0.9,
             gae_lambda=0.95, hidden=(32, 32))


def train_probe(env_id, updates=60, **overrides):
  kwargs = dict(PROBE, **overrides)
  config = ppo.PPOConfig(env_id=env_id, total_timesteps=updates * kwargs[
      "num_envs"] * kwargs["num_steps"], **kwargs)
  state, metrics = jax.jit(ppo.train)(config, jax.random.key(0))
  return config, on_policy.task_policy(config).network, state, metrics


def value(network, state, obs):
  return np.asarray(network.apply(state.params, jnp.asarray(obs, jnp.float32)
                                  .reshape(-1, 1))[1])


def policy_out(network, state, obs):
  return network.apply(state.params, jnp.asarray(obs, jnp.float32)
                       .reshape(-1, 1))[0]


def test_probe_constant_reward_value():
  _, net, state, _ = train_probe("ProbeConstant-v0")
  np.testing.assert_allclose(value(net, state, [0.0]), [1.0], atol=0.05)


def test_probe_observation_dependent_value():
  _, net, state, _ = train_probe("ProbeObsReward-v0")
  np.testing.assert_allclose(value(net, state, [-1.0, 1.0]), [-1.0, 1.0],
                             atol=0.1)


def test_probe_two_step_discounting():
  # V(s0) = γ · 1 = 0.9, V(s1) = 1.
  _, net, state, _ = train_probe("ProbeTwoStep-v0", updates=100)
  np.testing.assert_allclose(value(net, state, [0.0, 1.0]), [0.9, 1.0],
                             atol=0.1)


def test_probe_action_dependent_reward():
  _, net, state, _ = train_probe("ProbeAction-v0")
  probs = jax.nn.softmax(policy_out(net, state, [0.0]))
  assert float(probs[0, 1]) > 0.95
  np.testing.assert_allclose(value(net, state, [0.0]), [1.0], atol=0.15)


def test_probe_action_and_observation_dependent_reward():
  _, net, state, _ = train_probe("ProbeActionObs-v0", updates=100)
  probs = jax.nn.softmax(policy_out(net, state, [-1.0, 1.0]))
  # Right action: 0 for obs -1, 1 for obs +1.
  assert float(probs[0, 0]) > 0.9 and float(probs[1, 1]) > 0.9
  np.testing.assert_allclose(value(net, state, [-1.0, 1.0]), [1.0, 1.0],
                             atol=0.2)


def test_probe_continuous_action():
  _, net, state, _ = train_probe("ProbeActionContinuous-v0", updates=100)
  mean, _ = policy_out(net, state, [0.0])
  np.testing.assert_allclose(mean[:, 0], [0.5], atol=0.1)


def test_probe_continuous_action_and_observation():
  _, net, state, _ = train_probe("ProbeActionObsContinuous-v0", updates=150)
  mean, _ = policy_out(net, state, [-1.0, 1.0])
  np.testing.assert_allclose(mean[:, 0], [-0.5, 0.5], atol=0.15)


def _train_with_done_handling(wrong: bool, updates=150):
  """The truncation probe trained through the public `learn`; `wrong` folds
  truncation into termination, as a single `done` flag does."""
  config = ppo.PPOConfig(env_id="ProbeTimeLimit-v0",
                         total_timesteps=updates * 8 * 64,
                         **dict(PROBE, num_steps=64))
  env, env_params = on_policy.make_env(config)
  policy = on_policy.task_policy(config)

  def step(state, _):
    rollout, traj = envs.rollout(policy.act(state.params), env, env_params,
                                 state.rollout, config.num_steps)
    if wrong:
      traj = traj._replace(terminated=traj.terminated | traj.truncated,
                           truncated=jnp.zeros_like(traj.truncated))
    state, _ = ppo.learn(config, state._replace(rollout=rollout), traj)
    return state, None

  state = ppo.init(config, jax.random.key(0))
  state, _ = jax.jit(lambda s: jax.lax.scan(step, s, None, length=updates))(
      state)
  return value(policy.network, state, [0.0])[0]


def test_truncation_probe_needs_bootstrapping():
  # Reward 1 forever, cut at 50 steps by a time limit only; γ = 0.9.
  # Correct: V = 1/(1-γ) = 10 at every step. Treating the cut as a
  # termination makes the target depend on the unobserved time left:
  # V = mean over k = 1..50 of (1 - γ^k)/(1-γ) ≈ 8.2.
  correct = _train_with_done_handling(wrong=False)
  wrong = _train_with_done_handling(wrong=True)
  assert abs(correct - 10.0) < 0.5, correct
  assert abs(wrong - 10.0) > 1.0, wrong


def test_same_key_same_result_bit_for_bit():
  config = ppo.PPOConfig(env_id="CartPole-v1", total_timesteps=8 * 32 * 3)
  run = jax.jit(ppo.train)
  a, ma = run(config, jax.random.key(5))
  b, mb = run(config, jax.random.key(5))
  for x, y in zip(jax.tree.leaves((a.params, ma)), jax.tree.leaves((b.params, mb))):
    np.testing.assert_array_equal(x, y)


def test_vmapped_seeds_and_configs_equal_single_runs():
  config = ppo.PPOConfig(env_id="CartPole-v1", total_timesteps=8 * 32 * 4)
  keys = jax.random.split(jax.random.key(1), 3)
  batched, _ = jax.jit(jax.vmap(ppo.train, in_axes=(None, 0)))(config, keys)
  for i in range(3):
    single, _ = jax.jit(ppo.train)(config, keys[i])
    for x, y in zip(jax.tree.leaves(single.params),
                    jax.tree.leaves(batched.params)):
      np.testing.assert_allclose(x, y[i], rtol=1e-5, atol=1e-5)
  lrs = jnp.array([1e-3, 3e-4])
  sweep = jax.vmap(lambda lr: config.replace(learning_rate=lr))(lrs)
  swept, _ = jax.jit(jax.vmap(ppo.train, in_axes=(0, None)))(
      sweep, jax.random.key(2))
  for i, lr in enumerate([1e-3, 3e-4]):
    single, _ = jax.jit(ppo.train)(config.replace(learning_rate=lr),
                                   jax.random.key(2))
    for x, y in zip(jax.tree.leaves(single.params),
                    jax.tree.leaves(swept.params)):
      np.testing.assert_allclose(x, y[i], rtol=1e-5, atol=1e-5)


def test_metrics_are_per_update_and_nan_only_where_no_episode_ended():
  config = ppo.PPOConfig(env_id="Pendulum-v1", total_timesteps=4 * 64 * 5,
                         num_envs=4, num_steps=64, num_minibatches=4)
  _, metrics = jax.jit(ppo.train)(config, jax.random.key(0))
  ended = np.asarray(metrics["episodes_finished"]) > 0
  for name in ("episode_return", "episode_length", "policy_loss",
               "value_loss", "entropy", "approx_kl", "clip_fraction",
               "grad_norm", "learning_rate", "env_steps",
               "episodes_finished"):
    assert metrics[name].shape == (5,), name
    finite = np.isfinite(np.asarray(metrics[name]))
    if name.startswith("episode_"):  # no value where no episode ended
      np.testing.assert_array_equal(finite, ended, err_msg=name)
    else:
      assert np.all(finite), name
  # Pendulum episodes last 200 steps: none finishes in the first update.
  assert not ended[0] and ended.any()


def test_target_kl_stops_the_epochs():
  config = ppo.PPOConfig(env_id="CartPole-v1", total_timesteps=8 * 32 * 2,
                         target_kl=1e-6)
  _, metrics = jax.jit(ppo.train)(config, jax.random.key(0))
  # The approx. KL is measured in each step's loss, before its update (as in
  # CleanRL): epoch 1 sees KL 0, epoch 2 sees KL > 1e-6 and ends the update.
  # One minibatch per epoch: 2 of 20 steps run.
  np.testing.assert_array_equal(metrics["minibatch_updates"], [2.0, 2.0])
  _, free = jax.jit(ppo.train)(config.replace(target_kl=float("inf")),
                               jax.random.key(0))
  np.testing.assert_array_equal(free["minibatch_updates"], [20.0, 20.0])
  # The masked epochs leave no trace, in the parameters or in Adam's state
  # (the second update starts from both): stopping after 2 of 20 epochs is
  # the same run as 2 epochs without early stopping. (One minibatch per
  # epoch is not shuffled, so the epoch count does not change the data.)
  stopped, _ = jax.jit(ppo.train)(config, jax.random.key(0))
  two, _ = jax.jit(ppo.train)(
      config.replace(target_kl=float("inf"), update_epochs=2),
      jax.random.key(0))
  for a, b in zip(jax.tree.leaves((stopped.params, stopped.opt_state)),
                  jax.tree.leaves((two.params, two.opt_state))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_minibatch_shuffling():
  key = jax.random.key(3)
  perm = np.asarray(jax.jit(sgd.permutation, static_argnums=1)(key, 2048))
  np.testing.assert_array_equal(np.sort(perm), np.arange(2048))
  np.testing.assert_array_equal(perm, sgd.permutation(key, 2048))
  assert not np.array_equal(perm, sgd.permutation(jax.random.key(4), 2048))
  # Uniform over the 24 orders of 4 items: chi-square over 4,800 draws.
  draws = jax.vmap(sgd.permutation, in_axes=(0, None))(
      jax.random.split(key, 4800), 4)
  codes = np.asarray(draws) @ np.array([64, 16, 4, 1])
  _, counts = np.unique(codes, return_counts=True)
  assert counts.size == 24
  assert scipy.stats.chisquare(counts).pvalue > 1e-3
  # The minibatch order, both ways (indices packed under random bits up to
  # 4,096; `permutation` above): permutations, and the last index lands
  # uniformly over 8 stretches of positions (the indices above the random
  # bits instead of below would fail: identity).
  for n in (1024, 5000):
    draws = np.asarray(jax.vmap(sgd.minibatch_order, in_axes=(0, None))(
        jax.random.split(key, 2000), n))
    np.testing.assert_array_equal(np.sort(draws, axis=1),
                                  np.broadcast_to(np.arange(n), draws.shape))
    where = np.argmax(draws == n - 1, axis=1) * 8 // n
    assert scipy.stats.chisquare(np.bincount(where, minlength=8)).pvalue > 1e-3
  batch = {"x": jnp.arange(12.0), "y": jnp.arange(24).reshape(12, 2)}
  split = sgd.minibatches(key, batch, 3)
  assert split["x"].shape == (3, 4) and split["y"].shape == (3, 4, 2)
  np.testing.assert_array_equal(np.sort(split["x"].ravel()), np.arange(12.0))
  np.testing.assert_array_equal(split["y"][..., 0], 2 * split["x"])
  whole = sgd.minibatches(key, batch, 1)
  np.testing.assert_array_equal(whole["x"], batch["x"][None])


def test_kl_penalty_objective_runs_and_adapts_beta():
  config = ppo.PPOConfig(env_id="CartPole-v1", total_timesteps=8 * 32 * 4,
                         objective="kl_penalty", kl_target=1e-4)
  _, metrics = jax.jit(ppo.train)(config, jax.random.key(0))
  beta = np.asarray(metrics["kl_coef"])
  assert np.all(np.isfinite(beta)) and beta[-1] != 1.0


def test_config_presets_and_bad_input():
  config = ppo.PPOConfig(env_id="Pendulum-v1")
  assert config.num_steps == presets.preset("ppo", "Pendulum-v1")["num_steps"]
  assert ppo.PPOConfig(env_id="Pendulum-v1", num_steps=64).num_steps == 64
  bad = [(dict(env_id="CartPole-v9"), "env_id"),
         (dict(num_minibatches=3), "num_minibatches"),
         (dict(learning_rate=-1.0), "learning_rate"),
         (dict(gamma=1.5), "gamma"),
         (dict(gae_lambda=-0.1), "gae_lambda"),
         (dict(clip_eps=0.0), "clip_eps"),
         (dict(total_timesteps=10), "total_timesteps"),
         (dict(num_envs=0), "num_envs"),
         (dict(objective="trust"), "objective"),
         (dict(hidden=(64, -1)), "hidden"),
         (dict(max_grad_norm=0.0), "max_grad_norm"),
         (dict(vf_clip_form="min"), "vf_clip_form"),
         (dict(adv_norm_ddof=2), "adv_norm_ddof")]
  for kwargs, name in bad:
    with pytest.raises(ValueError, match=name):
      ppo.PPOConfig(**kwargs)
  # Static and leaf fields are split as documented.
  leaves = {f.name for f in dataclasses.fields(ppo.PPOConfig)
            if f.metadata.get("pytree_node", True)}
  assert {"learning_rate", "gamma", "clip_eps", "max_grad_norm"} <= leaves
  assert not {"env_id", "num_envs", "num_steps", "update_epochs"} & leaves


@pytest.mark.parametrize("form,ddof", [("max", 0), ("prediction", 1)])
def test_sb3_convention_options_reach_the_loss(form, ddof):
  # PPO's minibatch loss with each value-clipping form and advantage ddof
  # equals the primitives called with them; the other choice does not (the
  # old values lie far from the predictions, so the forms part).
  config = ppo.PPOConfig(env_id="CartPole-v1", clip_value=True,
                         vf_clip_eps=0.1, vf_clip_form=form,
                         adv_norm_ddof=ddof)
  policy = on_policy.task_policy(config)
  params = policy.init(jax.random.key(0), config.log_std_init)
  rng = np.random.default_rng(0)
  n = 16
  batch = {"obs": jnp.asarray(rng.normal(size=(n, 4)), jnp.float32),
           "action": jnp.asarray(rng.integers(0, 2, n), jnp.int32),
           "log_prob": jnp.asarray(rng.normal(size=n) - 0.7, jnp.float32),
           "value": jnp.asarray(rng.normal(size=n), jnp.float32),
           "advantage": jnp.asarray(rng.normal(size=n) + 0.5, jnp.float32),
           "target": jnp.asarray(rng.normal(size=n), jnp.float32)}
  _, diag = jax.jit(lambda p, b: ppo._loss(config, policy, p, 1.0, b))(
      params, batch)
  out, value = policy.apply(params, batch["obs"])
  log_prob = policy.head.log_prob(out, batch["action"])

  def expected(form, ddof):
    adv = numpy_whiten(batch["advantage"], ddof)
    return (
        jra.ppo_clip_loss(log_prob, batch["log_prob"], adv, clip_eps=0.2),
        jra.clipped_value_loss(value, batch["value"], batch["target"],
                               clip_eps=0.1, form=form))

  other = expected("prediction" if form == "max" else "max", 1 - ddof)
  policy_loss, value_loss = expected(form, ddof)
  np.testing.assert_allclose(diag["policy_loss"], policy_loss, rtol=1e-6)
  np.testing.assert_allclose(diag["value_loss"], value_loss, rtol=1e-6)
  assert abs(float(diag["policy_loss"]) - float(other[0])) > 1e-4
  assert abs(float(diag["value_loss"]) - float(other[1])) > 1e-4


def numpy_whiten(x, ddof):
  """NumPy ``(x - mean) / (std(ddof) + 1e-8)``, the reference whitening."""
  x = np.asarray(x, np.float64)
  return jnp.asarray((x - x.mean()) / (x.std(ddof=ddof) + 1e-8), jnp.float32)


def test_compiler_options_compile_the_same_learner():
  # Level-1 LLVM code on CPU: PPO's training program must give the same
  # result as XLA's defaults (measured bit-identical here; allow rounding).
  assert agents.compiler_options("cpu") == {"xla_backend_optimization_level": 1}
  assert agents.compiler_options("gpu") == {}
  config = ppo.PPOConfig(env_id="CartPole-v1", num_envs=4, num_steps=16,
                         total_timesteps=4 * 16 * 3)
  key = jax.random.key(3)
  plain = jax.jit(ppo.train)(config, key)
  tuned = jax.jit(ppo.train, compiler_options=agents.compiler_options("cpu"))(
      config, key)
  for a, b in zip(jax.tree.leaves(plain[0].params), jax.tree.leaves(tuned[0].params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
