"""Wrappers and rollouts: auto-reset, episode statistics, normalisation,
reward scaling, action clipping, bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

from jaxrl_align import envs
from jaxrl_align.envs import registry


def random_policy(space):
  """An observation-independent random policy (so rollouts of differently
  wrapped envs see the same actions for the same key)."""
  def policy(key, obs):
    n = obs.shape[0]
    if isinstance(space, spaces.Discrete):
      action = jax.random.randint(key, (n,), 0, space.n)
    else:
      action = jax.random.uniform(key, (n,) + tuple(space.shape),
                                  minval=-3.0, maxval=3.0)
    return action, {"noise": jnp.zeros((n,), jnp.float32)}
  return policy


def run(env_id, num_envs=8, num_steps=300, seed=0, **kwargs):
  venv, params = envs.make_vec(env_id, num_envs, **kwargs)
  policy = random_policy(venv.action_space(params))
  state = envs.rollout_init(venv, params, jax.random.key(seed))
  return jax.jit(lambda s: envs.rollout(policy, venv, params, s, num_steps))(
      state)


def test_rollout_shapes_and_dtypes():
  _, tr = run("Pendulum-v1", num_envs=3, num_steps=7)
  assert tr.obs.shape == (7, 3, 3) and tr.next_obs.shape == (7, 3, 3)
  assert tr.action.shape == (7, 3, 1)
  assert tr.reward.shape == (7, 3) and tr.reward.dtype == jnp.float32
  assert tr.terminated.dtype == jnp.bool_ and tr.truncated.dtype == jnp.bool_
  assert tr.extras["noise"].shape == (7, 3)
  assert tr.episode_length.dtype == jnp.int32


@pytest.mark.parametrize("env_id", ["CartPole-v1", "MountainCar-v0"])
def test_auto_reset_never_leaks_the_reset_observation(env_id):
  _, tr = run(env_id, num_steps=400)
  done = np.asarray(tr.terminated | tr.truncated)
  assert done.sum() > 5
  obs, next_obs = np.asarray(tr.obs), np.asarray(tr.next_obs)
  # Inside an episode the successor is the next step's observation.
  np.testing.assert_array_equal(next_obs[:-1][~done[:-1]], obs[1:][~done[:-1]])
  # At an episode's end it is the true successor, recomputed here from the
  # pre-step state with gymnax's own dynamics, never the reset observation.
  gymnax_env, params = envs.make_gymnax(env_id)
  t_idx, e_idx = np.nonzero(done)
  for t, e in zip(t_idx[:20], e_idx[:20]):
    if env_id == "CartPole-v1":
      from gymnax.environments.classic_control.cartpole import EnvState
      s = EnvState(x=obs[t, e, 0], x_dot=obs[t, e, 1], theta=obs[t, e, 2],
                   theta_dot=obs[t, e, 3], time=0)
    else:
      from gymnax.environments.classic_control.mountain_car import EnvState
      s = EnvState(position=obs[t, e, 0], velocity=obs[t, e, 1], time=0)
    with registry.foreign_numerics():
      expected, *_ = gymnax_env.step_env(jax.random.key(0), s,
                                         tr.action[t, e], params)
    np.testing.assert_allclose(next_obs[t, e], expected, rtol=1e-6, atol=1e-7)
    if t + 1 < obs.shape[0]:
      assert not np.array_equal(next_obs[t, e], obs[t + 1, e])


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_episode_statistics_equal_a_python_loop(env_id):
  _, tr = run(env_id, num_envs=4, num_steps=450)
  reward = np.asarray(tr.reward, np.float64)
  done = np.asarray(tr.terminated | tr.truncated)
  for e in range(4):
    total, length, finished = 0.0, 0, []
    for t in range(reward.shape[0]):
      total += reward[t, e]
      length += 1
      if done[t, e]:
        finished.append((t, total, length))
        total, length = 0.0, 0
    assert finished, "no episode finished"
    for t, ret, n in finished:
      np.testing.assert_allclose(tr.episode_return[t, e], ret, rtol=1e-5)
      assert int(tr.episode_length[t, e]) == n
    not_done = ~done[:, e]
    assert np.all(np.asarray(tr.episode_return)[not_done, e] == 0)
  # Terminations and truncations stay apart: Pendulum only truncates.
  if env_id == "Pendulum-v1":
    assert not np.any(tr.terminated) and np.all(
        np.asarray(tr.episode_length)[np.asarray(tr.truncated)] == 200)


def test_observation_normalisation_statistics_equal_numpy():
  env_id, n, steps = "CartPole-v1", 6, 120
  state, tr = run(env_id, n, steps, normalize_obs=True)
  raw_state, raw = run(env_id, n, steps)  # same keys and actions, unwrapped
  # The stream the statistics saw: the reset batch (raw.obs[0]), then every
  # step's returned observations (raw.obs[1:], then the final state's obs).
  stream = np.concatenate([np.asarray(raw.obs), np.asarray(raw_state.obs)[None]])
  stream = stream.reshape(-1, 4).astype(np.float64)
  stats = state.env_state.obs_stats
  np.testing.assert_allclose(stats.mean, stream.mean(0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats.var, stream.var(0), rtol=1e-4, atol=1e-7)
  assert int(stats.count) == stream.shape[0]
  # The policy saw observations normalised by the statistics of that moment;
  # the last ones by the final statistics.
  expected = (np.asarray(raw.obs[-1]) - np.asarray(
      _stats_before_last(env_id, n, steps).mean)) / np.sqrt(
          np.asarray(_stats_before_last(env_id, n, steps).var) + 1e-8)
  np.testing.assert_allclose(tr.obs[-1], np.clip(expected, -10, 10),
                             rtol=1e-4, atol=1e-5)


def _stats_before_last(env_id, n, steps):
  state, _ = run(env_id, n, steps - 1, normalize_obs=True)
  return state.env_state.obs_stats


def test_reward_scaling_uses_the_std_of_the_discounted_return():
  env_id, n, steps, gamma = "Pendulum-v1", 4, 250, 0.9
  state, tr = run(env_id, n, steps, scale_reward=True, gamma=gamma)
  _, raw = run(env_id, n, steps)
  reward = np.asarray(raw.reward, np.float64)
  done = np.asarray(raw.terminated | raw.truncated)
  g = np.zeros(n)
  returns = []
  for t in range(steps):
    g = gamma * g + reward[t]
    returns.append(g.copy())
    g = np.where(done[t], 0.0, g)
  returns = np.array(returns)
  stats = state.env_state.return_stats
  np.testing.assert_allclose(stats.var, returns.var(), rtol=1e-4)
  np.testing.assert_allclose(stats.mean, returns.mean(), rtol=1e-4)
  # The last step's rewards were divided by the final std.
  np.testing.assert_allclose(tr.reward[-1],
                             reward[-1] / np.sqrt(returns.var() + 1e-8),
                             rtol=1e-4)


def test_action_clipping_keeps_the_unclipped_action_for_the_learner():
  env, params = envs.make("Pendulum-v1")
  _, state = env.reset(jax.random.key(0), params)
  big = jnp.array([5.0])
  _, s_big, r_big, *_ = env.step(jax.random.key(1), state, big, params)
  _, s_max, r_max, *_ = env.step(jax.random.key(1), state, jnp.array([2.0]),
                                 params)
  assert float(r_big) == float(r_max)
  np.testing.assert_array_equal(s_big.inner.theta_dot, s_max.inner.theta_dot)
  # The rollout records what the policy chose.
  _, tr = run("Pendulum-v1", num_envs=2, num_steps=5)
  assert float(jnp.abs(tr.action).max()) > 2.0
  # Without clipping, gymnax's own clip still bounds the torque, but the
  # action cost of MountainCarContinuous sees the raw action.
  env_raw, params = envs.make("MountainCarContinuous-v0", clip_action=False)
  env_clip, _ = envs.make("MountainCarContinuous-v0")
  _, st = env_raw.reset(jax.random.key(0), params)
  r_raw = env_raw.step(jax.random.key(1), st, jnp.array([3.0]), params)[2]
  r_clip = env_clip.step(jax.random.key(1), st, jnp.array([3.0]), params)[2]
  np.testing.assert_allclose([r_raw, r_clip], [-0.9, -0.1], rtol=1e-6)


def test_same_key_same_rollout_bit_for_bit():
  a = run("Acrobot-v1", 4, 50, seed=7)[1]
  b = run("Acrobot-v1", 4, 50, seed=7)[1]
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_bad_input():
  with pytest.raises(ValueError, match="CartPole-v1.*Pendulum-v1"):
    envs.make("CartPole-v0")
  env, params = envs.make("CartPole-v1")
  _, state = env.reset(jax.random.key(0), params)
  key = jax.random.key(1)
  with pytest.raises(ValueError, match=r"\[0, 2\)"):
    env.step(key, state, jnp.int32(2), params)
  with pytest.raises(ValueError, match="integer"):
    env.step(key, state, jnp.float32(1.0), params)
  with pytest.raises(ValueError, match="shape"):
    env.step(key, state, jnp.zeros((1,), jnp.int32), params)
  # Inside jit the value is unknown: the step is poisoned, not clamped.
  obs, _, reward, *_, info = jax.jit(env.step)(key, state, jnp.int32(5),
                                               params)
  assert bool(info["invalid_action"])
  assert np.all(np.isnan(info["final_observation"])) and np.isnan(reward)
  penv, pparams = envs.make("Pendulum-v1")
  _, pstate = penv.reset(jax.random.key(0), pparams)
  with pytest.raises(ValueError, match="floating"):
    penv.step(key, pstate, jnp.array([1], jnp.int32), pparams)
  with pytest.raises(ValueError, match=r"\(1,\)"):
    penv.step(key, pstate, jnp.zeros(()), pparams)
  venv, vparams = envs.make_vec("CartPole-v1", 4)
  _, vstate = venv.reset(key, vparams)
  with pytest.raises(ValueError, match=r"\(4,\)"):
    venv.step(key, vstate, jnp.zeros((3,), jnp.int32), vparams)
  with pytest.raises(ValueError, match="num_envs"):
    envs.make_vec("CartPole-v1", 0)
  with pytest.raises(ValueError, match="gamma"):
    envs.make_vec("CartPole-v1", 2, scale_reward=True, gamma=1.5)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1"])
def test_rollouts_vmapped_over_seeds_equal_single_runs(env_id):
  """An outer vmap turns the vector env's reset `cond` into a select: the
  results must not change."""
  venv, params = envs.make_vec(env_id, 3)
  policy = random_policy(venv.action_space(params))

  def one(key):
    state = envs.rollout_init(venv, params, key)
    return envs.rollout(policy, venv, params, state, 60)[1]

  keys = jax.random.split(jax.random.key(11), 4)
  batched = jax.jit(jax.vmap(one))(keys)
  for i in range(4):
    single = jax.jit(one)(keys[i])
    for x, y in zip(jax.tree.leaves(single), jax.tree.leaves(batched)):
      np.testing.assert_array_equal(x, y[i])


def test_single_env_step_matches_the_vector_env_dynamics():
  env, params = envs.make("CartPole-v1")
  venv, _ = envs.make_vec("CartPole-v1", 5)
  obs, vstate = venv.reset(jax.random.key(0), params)
  action = jnp.array([0, 1, 1, 0, 1], jnp.int32)
  vout = venv.step(jax.random.key(1), vstate, action, params)
  for i in range(5):
    state_i = jax.tree.map(lambda x: x[i], vstate)
    out = env.step(jax.random.key(2), state_i, action[i], params)
    # Same transition (the reset draws differ: different keys).
    np.testing.assert_array_equal(out[5]["final_observation"],
                                  vout[5]["final_observation"][i])
    np.testing.assert_array_equal(out[2], vout[2][i])


def test_vector_env_transitions_are_identical_to_raw_gymnax():
  """The faster vector env changes how resets draw random numbers, not the
  transitions: from every pre-step state of a rollout, gymnax's own `step`
  gives the same successor, reward and flags."""
  n, steps = 16, 200
  venv, params = envs.make_vec("CartPole-v1", n)
  policy = random_policy(venv.action_space(params))
  gymnax_env, _ = envs.make_gymnax("CartPole-v1")

  def body(carry, _):
    state, key = carry
    key, k_pol, k_env = jax.random.split(key, 3)
    action, _ = policy(k_pol, jnp.zeros((n, 4)))
    out = venv.step(k_env, state, action, params)
    return (out[1], key), (state.inner, action, out)

  _, state = venv.reset(jax.random.key(0), params)
  _, (inner, action, out) = jax.jit(lambda c: jax.lax.scan(
      body, c, None, length=steps))((state, jax.random.key(1)))
  flat = lambda x: x.reshape((steps * n,) + x.shape[2:])
  with registry.foreign_numerics():
    ref = jax.jit(jax.vmap(gymnax_env.step, in_axes=(0, 0, 0, None)))(
        jax.random.split(jax.random.key(2), steps * n),
        jax.tree.map(flat, inner), flat(action), params)
  _, _, reward, terminated, truncated, info = out
  # Same math, separately compiled: XLA may fuse (and contract to FMA) the
  # two programs differently, so allow a float32 ulp or two, no more.
  np.testing.assert_allclose(flat(info["final_observation"]),
                             ref[5]["final_observation"], rtol=0, atol=3e-7)
  np.testing.assert_array_equal(flat(reward), ref[2])
  np.testing.assert_array_equal(flat(terminated), ref[3])
  np.testing.assert_array_equal(flat(truncated), ref[4])
  assert int(terminated.sum()) > 20


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_wrappers_over_given_host_steps_equal_the_jax_native_wrappers(env_id):
  """A run stepped on the host feeds Gymnasium's raw steps through
  ``Task.host_env`` (the wrappers over :class:`envs.Given`): fed the raw
  transitions of a JAX-native rollout, it gives that rollout's normalised
  observations, final observations and scaled rewards and its
  statistics, to float32 rounding (one program against another: XLA may
  fuse the same arithmetic differently), CartPole's episodes ending inside
  the rollout.
  ``restart`` from the learner's fresh wrapper state is the wrappers'
  ``reset``. Feeding the reset observation as the final one (a next-step
  auto-reset) is caught."""
  from jaxrl_align.agents import ppo
  from jaxrl_align.agents import tasks

  n, steps, gamma = 4, 300, 0.95
  state, tr = run(env_id, n, steps, normalize_obs=True, scale_reward=True,
                  gamma=gamma)
  raw_state, raw = run(env_id, n, steps)
  assert np.asarray(raw.terminated | raw.truncated).any()
  config = ppo.PPOConfig(env_id=env_id, num_envs=n, normalize_obs=True,
                         scale_reward=True, gamma=gamma)
  task = tasks.make(env_id, host=True)
  learner_state = ppo.init(config, jax.random.key(0), task)
  host_env = task.host_env(config)
  after = jnp.concatenate([raw.obs[1:], raw_state.obs[None]])

  @jax.jit
  def feed(env_state, final_obs):
    obs0, env_state = host_env.restart(env_state, raw.obs[0])

    def step(s, x):
      obs, s, reward, _, _, info = host_env.step(None, s, None, envs.HostStep(
          *x))
      return s, (obs, reward, info["final_observation"])

    env_state, out = jax.lax.scan(step, env_state, (
        after, raw.reward, raw.terminated, raw.truncated, final_obs))
    return obs0, env_state, out

  close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
  obs0, env_state, (obs, reward, final) = feed(
      learner_state.rollout.env_state, raw.next_obs)
  close(obs0, tr.obs[0])
  close(obs[:-1], tr.obs[1:])
  close(obs[-1], state.obs)
  close(reward, tr.reward)
  close(final, tr.next_obs)
  theirs = state.env_state
  for a, b in ((env_state.inner.obs_stats, theirs.inner.obs_stats),
               (env_state.return_stats, theirs.return_stats),
               (env_state.discounted_return, theirs.discounted_return)):
    jax.tree.map(close, a, b)
  assert int(env_state.inner.obs_stats.count) == (steps + 1) * n
  # the wrong final observations
  _, _, (_, _, wrong) = feed(learner_state.rollout.env_state, after)
  assert np.abs(np.asarray(wrong) - np.asarray(tr.next_obs)).max() > 0.1
