"""gSDE (generalized state-dependent exploration): the distribution against a
float64 NumPy reference and Monte Carlo, the exploration matrices held
between draws, and the learners' gSDE option (reproducible, vmappable).
MountainCarContinuous learning with gSDE: benchmarks/presets_report.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxrl_align as jra
from jaxrl_align import envs
from jaxrl_align import heads
from jaxrl_align.agents import on_policy
from jaxrl_align.agents import ppo
from jaxrl_align.agents import trpo


def np_gsde_std(features, log_std, eps=1e-6):
  # Σ_j = Σ_i f_i² σ_ij² + eps (Raffin et al. 2022, eq. 4), in float64.
  f = np.asarray(features, np.float64)
  sigma = np.exp(np.asarray(log_std, np.float64))
  return np.sqrt((f ** 2) @ (sigma ** 2) + eps)


def wrong_gsde_std(features, log_std, eps=1e-6):
  # A plausible mistake: features not squared.
  f = np.asarray(features, np.float64)
  sigma = np.exp(np.asarray(log_std, np.float64))
  return np.sqrt(np.abs(f @ sigma ** 2) + eps)


def _inputs(seed=0, b=6, f=5, d=2):
  rng = np.random.default_rng(seed)
  features = rng.uniform(-1, 1, size=(b, f)).astype(np.float32)
  log_std = (rng.normal(size=(f, d)) * 0.5 - 1.0).astype(np.float32)
  mean = rng.normal(size=(b, d)).astype(np.float32)
  action = (mean + rng.normal(size=(b, d)) * 0.3).astype(np.float32)
  return mean, log_std, features, action


def test_log_prob_entropy_kl_against_float64_reference():
  mean, log_std, features, action = _inputs()
  head = heads.GSDEGaussian(action_dim=2, latent_dim=5)
  out = (mean, log_std, features)
  std = np_gsde_std(features, log_std)
  expected_lp = stats.norm.logpdf(action, mean, std).sum(-1)
  expected_h = stats.norm.entropy(0, std).sum(-1)
  np.testing.assert_allclose(jax.jit(head.log_prob)(out, action),
                             expected_lp, rtol=1e-5)
  np.testing.assert_allclose(jax.jit(head.entropy)(out), expected_h,
                             rtol=1e-5)
  np.testing.assert_allclose(
      jax.jit(jra.gsde_log_std)(features, log_std), np.log(std), rtol=1e-5,
      atol=1e-6)
  # KL(old || new) with a new log-std: the diagonal Gaussians' closed form.
  new_log_std = log_std + 0.3
  std_q = np_gsde_std(features, new_log_std)
  expected_kl = (np.log(std_q / std) + (std ** 2) / (2 * std_q ** 2)
                 - 0.5).sum(-1)
  np.testing.assert_allclose(
      jax.jit(head.kl)(out, (mean, new_log_std, features)), expected_kl,
      rtol=1e-4)
  # The reference can fail: variance without squared features differs.
  wrong = stats.norm.logpdf(action, mean,
                            wrong_gsde_std(features, log_std)).sum(-1)
  assert not np.allclose(head.log_prob(out, action), wrong, rtol=1e-3)


def test_float64_and_vmap():
  mean, log_std, features, action = _inputs(seed=1)
  with jax.enable_x64(True):
    lp = jax.vmap(lambda m, f, a: jra.gaussian_log_prob(
        m, jra.gsde_log_std(f, jnp.asarray(log_std, jnp.float64)), a))(
            jnp.asarray(mean, jnp.float64), jnp.asarray(features, jnp.float64),
            jnp.asarray(action, jnp.float64))
    assert lp.dtype == jnp.float64
    expected = stats.norm.logpdf(np.float64(action), np.float64(mean),
                                 np_gsde_std(features, log_std)).sum(-1)
    np.testing.assert_allclose(lp, expected, rtol=1e-10)


def test_noise_of_fresh_matrices_has_the_scored_variance():
  # θ ~ N(0, σ²) element-wise, ε = θᵀf: Var ε_j = Σ_i f_i² σ_ij², which is
  # what log_prob scores (Monte Carlo over 200,000 matrices).
  _, log_std, features, _ = _inputs(seed=2, b=3)
  n = 200_000
  theta = jra.gsde_exploration_matrix(jax.random.key(0), jnp.asarray(log_std),
                                      (n,))
  assert theta.shape == (n, 5, 2)
  eps = jax.vmap(lambda m: jra.gsde_noise(jnp.asarray(features), m))(theta)
  np.testing.assert_allclose(np.asarray(eps).std(0),
                             np_gsde_std(features, log_std, eps=0.0),
                             rtol=1e-2)
  np.testing.assert_allclose(np.asarray(eps).mean(0), 0.0, atol=5e-3)
  # One matrix per sample and a shared one agree.
  per_sample = jra.gsde_noise(jnp.asarray(features),
                              jnp.broadcast_to(theta[0], (3, 5, 2)))
  np.testing.assert_allclose(per_sample, features @ np.asarray(theta[0]),
                             rtol=1e-5, atol=1e-6)


def test_bad_input():
  with pytest.raises(ValueError, match="log_std"):
    jra.gsde_log_std(jnp.zeros((4, 3)), jnp.zeros((2, 1)))
  with pytest.raises(ValueError, match="matrix"):
    jra.gsde_noise(jnp.zeros((4, 3)), jnp.zeros((4, 2, 1)))
  with pytest.raises(ValueError, match="gSDE"):
    env, env_params = envs.make("CartPole-v1")
    heads.for_space(env.action_space(env_params), 64)


def test_rollout_resampled_holds_the_key_between_draws():
  env, env_params = envs.make_vec("Pendulum-v1", 2)
  state = envs.rollout_init(env, env_params, jax.random.key(0))

  def make_policy_fn(key):
    noise = jax.random.normal(key, (2, 1))
    return lambda _, obs: (jnp.clip(noise, -2, 2), {"noise": noise[:, 0]})

  run = jax.jit(lambda s: envs.rollout_resampled(
      make_policy_fn, env, env_params, s, num_steps=12, every=4))
  _, traj = run(state)
  noise = np.asarray(traj.extras["noise"])  # [12, 2]
  assert traj.obs.shape == (12, 2, 3)
  for start in (0, 4, 8):
    np.testing.assert_array_equal(noise[start:start + 4],
                                  np.broadcast_to(noise[start], (4, 2)))
  assert np.all(noise[0] != noise[4]) and np.all(noise[4] != noise[8])
  with pytest.raises(ValueError, match="divide"):
    envs.rollout_resampled(make_policy_fn, env, env_params, state, 12, 5)


def _lstsq_residual(features, noise):
  theta, *_ = np.linalg.lstsq(features, noise, rcond=None)
  return np.abs(features @ theta - noise).max(), theta


@pytest.mark.parametrize("freq", [4, -1])
def test_agent_noise_is_one_matrix_per_interval(freq):
  # hidden (3,): 3 features per state, so 4+ steps pin θ down. Within an
  # interval the noise a - μ(s) is f(s)ᵀθ for one θ (zero residual); a
  # window across a draw is not.
  config = ppo.PPOConfig(env_id="Pendulum-v1", total_timesteps=16,
                         num_envs=1, num_steps=16, num_minibatches=1, hidden=(3,),
                         use_sde=True,
                         sde_sample_freq=freq, log_std_init=0.0)
  state = ppo.init(config, jax.random.key(3))
  env, env_params = on_policy.make_env(config)
  policy = on_policy.task_policy(config)
  every = 16 if freq == -1 else freq
  _, traj = jax.jit(lambda s: envs.rollout_resampled(
      lambda k: policy.explore(state.params, k, 1), env, env_params, s, 16,
      every))(state.rollout)
  (mean, _, features), _ = policy.apply(state.params, traj.obs[:, 0])
  noise = np.asarray(traj.action[:, 0] - mean, np.float64)
  features = np.asarray(features, np.float64)
  thetas = []
  for start in range(0, 16, every):
    residual, theta = _lstsq_residual(features[start:start + every],
                                      noise[start:start + every])
    assert residual < 1e-5, residual
    thetas.append(theta)
  if freq == 4:
    assert not np.allclose(thetas[0], thetas[1])
    assert _lstsq_residual(features[2:8], noise[2:8])[0] > 1e-3
  # The recorded log-prob is N(μ, Σ(s))'s.
  np.testing.assert_allclose(
      traj.extras["log_prob"][:, 0],
      stats.norm.logpdf(traj.action[:, 0], mean, np_gsde_std(
          features, state.params["params"]["log_std"])).sum(-1), rtol=1e-4)


def _leaves(tree):
  return [np.asarray(jax.random.key_data(x)
                     if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
          for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("module,config_type", [(ppo, ppo.PPOConfig),
                                                (trpo, trpo.TRPOConfig)])
def test_learners_with_gsde_are_pure_and_vmappable(module, config_type):
  config = config_type(env_id="MountainCarContinuous-v0", num_envs=2,
                       num_steps=8, num_minibatches=2, update_epochs=2,
                       total_timesteps=2 * 8 * 4, use_sde=True,
                       sde_sample_freq=2, log_std_init=-1.0, hidden=(16,))
  keys = jax.random.split(jax.random.key(0), 2)
  train = jax.jit(jax.vmap(module.train, in_axes=(None, 0)))
  batched, metrics = train(config, keys)
  assert batched.params["params"]["log_std"].shape == (2, 16, 1)
  assert np.all(np.isfinite(metrics["entropy"]))
  again, _ = train(config, keys)
  for x, y in zip(_leaves(batched), _leaves(again)):
    np.testing.assert_array_equal(x, y)  # bit for bit
  # Resuming from a saved state: one seed, update by update, equals its
  # run in the vmapped batch (separately compiled programs fuse
  # differently: float32 rounding).
  update = jax.jit(module.update)
  state = module.init(config, keys[1])
  for _ in range(4):
    state, _ = update(config, state)
  for x, y in zip(_leaves(state),
                  _leaves(jax.tree.map(lambda b: b[1], batched))):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_config_checks():
  with pytest.raises(ValueError, match="sde_sample_freq"):
    ppo.PPOConfig(env_id="Pendulum-v1", num_steps=16, sde_sample_freq=5)
  with pytest.raises(ValueError, match="sde_sample_freq"):
    trpo.TRPOConfig(env_id="Pendulum-v1", sde_sample_freq=0)
  with pytest.raises(ValueError, match="gSDE: Box only"):
    ppo.PPOConfig(env_id="CartPole-v1", use_sde=True)
  with pytest.raises(ValueError, match="use_sde"):
    ppo.PPOConfig(env_id="InvertedPendulum-v5", use_sde=True)
  assert ppo.PPOConfig(env_id="Pendulum-v1").use_sde is False
