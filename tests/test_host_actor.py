"""Acting on the host without a program per step: the NumPy actor against
the JAX policy and wrappers it mirrors, the replay against a JAX-native
rollout, and a host rollout's actions against the policy at the
observations the learner trains on."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_align import envs
from jaxrl_align import heads
from jaxrl_align import networks
from jaxrl_align import normalization
from jaxrl_align.agents import host_actor
from jaxrl_align.agents import ppo
from jaxrl_align.agents import tasks

S, N, T = 2, 3, 5  # seeds, envs, steps


def _policy_and_params(env_id, activation, ortho_init=True):
  config = ppo.PPOConfig(env_id=env_id, hidden=(16, 8),
                         activation=activation, ortho_init=ortho_init,
                         use_sde=False)
  policy = tasks.make(env_id).policy(config)
  keys = jax.random.split(jax.random.key(1), S)
  params = jax.vmap(lambda k: policy.init(k, -0.5))(keys)
  # a log-std that differs per dimension and seed, a bias that is not zero
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(
      jax.random.key(2), x.shape), params)
  return policy, params


def _arrays(policy, params, noise, stats=None):
  layers, extra = jax.vmap(policy.network.actor_arrays)(params)
  return jax.device_get(host_actor.ActorArrays(layers, extra, stats, noise))


@pytest.mark.parametrize("env_id,activation", [
    ("CartPole-v1", "tanh"), ("CartPole-v1", "relu"),
    ("Pendulum-v1", "tanh"), ("MountainCarContinuous-v0", "relu")])
def test_numpy_actor_samples_what_the_policy_samples(env_id, activation):
  """For the same noise, the NumPy actor's actions are the JAX head's
  samples (``head.sample`` with the key the noise was drawn with):
  categorical exactly, Gaussian to float32 rounding, per seed, for either
  activation. An actor with the other activation is caught."""
  policy, params = _policy_and_params(env_id, activation)
  obs = jax.random.normal(jax.random.key(3), (S, N) + policy.obs_shape) * 2
  key = jax.random.key(4)
  noise = jax.vmap(lambda k: policy.head.noise(k, (T, N)))(
      jax.random.split(key, S))
  actor = host_actor.HostActor(policy.head, activation, None)
  actor.load(_arrays(policy, params, noise))
  other = "relu" if activation == "tanh" else "tanh"
  wrong = host_actor.HostActor(policy.head, other, None)
  wrong.load(_arrays(policy, params, noise))
  caught = False
  for t in range(T):
    ours = actor.act(np.asarray(obs), t)
    theirs = jax.vmap(lambda p, o, e: policy.head.sample_with(
        policy.apply(p, o)[0], e))(params, obs, noise[:, t])
    if isinstance(policy.head, heads.Categorical):
      np.testing.assert_array_equal(ours, theirs)
      assert ours.dtype == np.int32
    else:
      np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    caught |= not np.allclose(wrong.act(np.asarray(obs), t), ours,
                              atol=1e-3)
  assert caught


@pytest.mark.parametrize("head", [heads.Categorical(5), heads.DiagGaussian(3)])
def test_noise_drawn_beforehand_is_the_heads_own_sampling(head):
  """``sample_with(out, noise(key, shape))`` is ``sample(key, out)``, bit
  for bit, under ``jit``: drawing a rollout's noise beforehand changes
  nothing about the distribution sampled."""
  out = jax.random.normal(jax.random.key(0), (7, 4, head.out_dim))
  if isinstance(head, heads.DiagGaussian):
    out = (out, jnp.array([0.3, -1.0, 0.0]))
  key = jax.random.key(9)
  drawn = jax.jit(lambda k, o: head.sample_with(o, head.noise(k, (7, 4))))(
      key, out)
  np.testing.assert_array_equal(drawn, jax.jit(head.sample)(key, out))
  assert not np.array_equal(drawn, head.sample(jax.random.key(10), out))


@pytest.mark.parametrize("n", [1, N])
def test_numpy_observation_statistics_follow_the_wrapper(n):
  """The actor's ``observe`` over a stream of batches gives, per seed, the
  observations and statistics of :class:`envs.NormalizeObservation` over
  :class:`envs.Given` (its ``restart`` then ``step``) to float32
  rounding, and the statistics of all samples so far in float64 NumPy,
  with one env per seed (a batch variance of 0) or several.
  Normalising before merging the batch is caught."""
  rng = np.random.default_rng(0)
  # far from zero mean and unit variance, different per seed and dimension
  stream = (rng.normal(size=(12, S, n, 4)) * [1.0, 10.0, 0.1, 3.0]
            + [[[5.0]], [[-2.0]]]).astype(np.float32)
  wrapper = envs.NormalizeObservation(envs.Given(), clip=10.0)
  init = jax.vmap(lambda o: wrapper.reset(None, o)[1])(
      jnp.zeros((S, n, 4)))
  fresh = init._replace(obs_stats=jax.tree.map(
      jnp.zeros_like, init.obs_stats)._replace(var=jnp.ones((S, 4))))

  def jax_stream(state):
    obs0, state = jax.vmap(wrapper.restart)(state, stream[0])

    def step(s, x):
      zeros = jnp.zeros(x.shape[:2])
      host = envs.HostStep(x, zeros, zeros > 0, zeros > 0, x)
      obs, s, *_ = jax.vmap(lambda s, h: wrapper.step(None, s, None, h))(
          s, host)
      return s, obs
    state, obs = jax.lax.scan(step, state, jnp.asarray(stream[1:]))
    return jnp.concatenate([obs0[None], obs]), state

  theirs, state = jax.jit(jax_stream)(fresh)
  noise = np.zeros((S, 1, n, 1), np.float32)
  actor = host_actor.HostActor(heads.DiagGaussian(1), "tanh", 10.0)
  actor.load(host_actor.ActorArrays((), None, fresh.obs_stats, noise))
  ours = np.stack([actor.observe(x) for x in stream])
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  mean, var, count = actor.statistics
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5),
               (mean, var, count), tuple(state.obs_stats))
  every = stream.transpose(1, 0, 2, 3).reshape(S, -1, 4).astype(np.float64)
  np.testing.assert_allclose(mean, every.mean(axis=1), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(var, every.var(axis=1), rtol=1e-4)
  np.testing.assert_array_equal(count, [12 * n] * S)

  class Late(host_actor.HostActor):  # normalises with the old statistics
    def observe(self, obs):
      mean, var, _ = self._stats
      super().observe(obs)  # merges the batch
      y = (obs - mean[:, None]) / np.sqrt(var + self._eps)[:, None]
      return np.clip(y, -self._clip, self._clip)

  late = Late(heads.DiagGaussian(1), "tanh", 10.0)
  late.load(host_actor.ActorArrays((), None, fresh.obs_stats, noise))
  wrong = np.stack([late.observe(x) for x in stream])
  assert np.abs(wrong - np.asarray(theirs)).max() > 0.1


def test_the_activations_are_the_networks():
  """The NumPy actor knows every hidden activation a network can have."""
  assert set(host_actor.ACTIVATIONS) == set(networks.ACTIVATIONS)
  x = np.linspace(-3, 3, 13, dtype=np.float32)
  for name, fn in host_actor.ACTIVATIONS.items():
    np.testing.assert_allclose(fn(x), networks.ACTIVATIONS[name](x),
                               rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="activation"):
    host_actor.HostActor(heads.Categorical(2), "gelu", None)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_replay_gives_the_trajectory_a_jax_native_rollout_records(env_id):
  """A JAX-native rollout's raw steps, replayed by the learner's
  ``replay`` (as a host rollout is), give that rollout's trajectory with
  the wrappers on: observations, final observations, scaled rewards,
  flags, episode statistics and wrapper statistics, to float32 rounding;
  its ``log_prob`` and ``value`` are the policy's at those observations
  for the actions taken."""
  n, steps, gamma = 4, 200, 0.95
  config = ppo.PPOConfig(env_id=env_id, num_envs=n, num_steps=steps,
                         normalize_obs=True, scale_reward=True, gamma=gamma)
  task = tasks.make(env_id, host=True)
  policy = task.policy(config)
  state = ppo.init(config, jax.random.key(0), task)

  def run(**kwargs):  # actions that do not read the observations, so the
    venv, params = envs.make_vec(env_id, n, **kwargs)  # two runs agree
    dummy = jnp.zeros((n,) + policy.obs_shape)
    start = envs.rollout_init(venv, params, jax.random.key(5))
    return jax.jit(lambda s: envs.rollout(
        lambda k, o: (policy.act(state.params)(k, dummy)[0], {}), venv,
        params, s, steps))(start)

  wrapped_state, wrapped = run(normalize_obs=True, scale_reward=True,
                               gamma=gamma)
  raw_state, raw = run()
  if env_id == "CartPole-v1":  # episodes end inside the rollout
    assert np.asarray(raw.terminated | raw.truncated).any()
  stepping = ppo.LEARNER.stepping
  obs0, state = jax.jit(lambda s: stepping.restart(config, s, raw.obs[0],
                                                   task))(state)
  after = jnp.concatenate([raw.obs[1:], raw_state.obs[None]])
  rollout = envs.HostRollout(
      obs=obs0, action=wrapped.action,
      steps=envs.HostStep(after, raw.reward, raw.terminated, raw.truncated,
                          raw.next_obs),
      episode_return=raw.episode_return, episode_length=raw.episode_length)
  trajectory, last, state = jax.jit(
      lambda s, r: stepping.replay(config, s, r, task))(state, rollout)
  close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5)
  for name in ("obs", "reward", "next_obs", "episode_return"):
    close(getattr(trajectory, name), getattr(wrapped, name))
  for name in ("action", "terminated", "truncated", "episode_length"):
    np.testing.assert_array_equal(getattr(trajectory, name),
                                  getattr(wrapped, name))
  close(last, wrapped_state.obs)
  theirs = wrapped_state.env_state
  jax.tree.map(close, state.rollout.env_state.inner.obs_stats,
               theirs.inner.obs_stats)
  jax.tree.map(close, state.rollout.env_state.return_stats,
               theirs.return_stats)
  out, value = jax.vmap(lambda o: policy.apply(state.params, o))(
      wrapped.obs)
  log_prob = jax.vmap(policy.head.log_prob)(out, wrapped.action)
  close(trajectory.extras["value"], value)
  close(trajectory.extras["log_prob"], log_prob)


def _host_rollout(env_id, monkeypatch, **overrides):
  """A host rollout of PPO on ``env_id`` over 2 seeds, with the arrays the
  actor was given: ``(config, task, states before, arrays, trajectory)``."""
  from jaxrl_align.host import stepping

  config = ppo.PPOConfig(env_id=env_id, num_envs=N, num_steps=40,
                         total_timesteps=40 * N, num_minibatches=2,
                         normalize_obs=True, scale_reward=True,
                         **overrides)
  programs = stepping.HostPrograms(ppo.LEARNER, 1, 1, env_seed=3)
  task = tasks.make(env_id, host=True)
  states = programs.init(config, jax.random.split(jax.random.key(0), S), task)
  states, _ = programs.chunk(config, states)  # statistics under way
  loaded = []
  load = host_actor.HostActor.load
  monkeypatch.setattr(host_actor.HostActor, "load",
                      lambda self, a: (loaded.append(a), load(self, a))[1])
  before = states
  trajectory, _ = programs.rollout(config, states)
  programs.close()
  return config, task, before, loaded[0], trajectory


@pytest.mark.parametrize("env_id", ["InvertedPendulum-v5", "CartPole-v1"])
def test_a_host_rollout_acts_on_what_the_learner_trains_on(env_id,
                                                           monkeypatch):
  """Every action of a host rollout (2 seeds, observations normalised) is
  the policy's sample, with that step's noise, at the observation the
  trajectory records: acting in NumPy differs from the learner's program
  by float32 rounding only. An actor that skips the normalisation is
  caught."""
  config, task, before, arrays, trajectory = _host_rollout(env_id,
                                                           monkeypatch)
  policy = task.policy(config)
  noise = arrays.noise  # [S, T, N, ...]

  def expected(params, obs, noise):
    return jax.vmap(lambda o, e: policy.head.sample_with(
        policy.apply(params, o)[0], e))(obs, noise)

  want = jax.vmap(expected)(before.params, trajectory.obs, noise)
  if isinstance(policy.head, heads.Categorical):
    assert np.mean(np.asarray(want) == np.asarray(trajectory.action)) == 1.0
  else:
    np.testing.assert_allclose(trajectory.action, want, rtol=1e-4, atol=1e-4)
  assert np.asarray(trajectory.obs).std() > 0.1
  monkeypatch.undo()
  monkeypatch.setattr(host_actor.HostActor, "observe", lambda self, obs: obs)
  _, _, before, arrays, wrong = _host_rollout(env_id, monkeypatch)
  want = jax.vmap(expected)(before.params, wrong.obs, arrays.noise)
  assert np.abs(np.asarray(want, np.float64)
                - np.asarray(wrong.action, np.float64)).max() > 1e-3


def test_float64_observations_are_normalised_in_float32():
  """Gymnasium's float64 observations are normalised in float32, the
  statistics staying float32, as the learner's are."""
  stats = jax.vmap(lambda _: normalization.running_mean_std_init((2,)))(
      jnp.zeros(1))  # one seed
  actor = host_actor.HostActor(heads.Categorical(2), "tanh", 10.0)
  actor.load(host_actor.ActorArrays((), None, jax.device_get(stats),
                                    np.zeros((1, 1, 1, 2), np.float32)))
  y = actor.observe(np.ones((1, 1, 2), np.float64))
  assert y.dtype == np.float32
  assert all(x.dtype == np.float32 for x in actor.statistics)
