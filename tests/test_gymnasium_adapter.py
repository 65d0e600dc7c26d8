"""The host adapter: same trajectory as the JAX rollout, true final observations."""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments.classic_control.cartpole import EnvState

from jaxrl_align import envs
from jaxrl_align.envs import registry


def cartpole_policy(key, obs):
  action = jax.random.randint(key, (obs.shape[0],), 0, 2)
  return action, {"log_prob": jnp.full((obs.shape[0],), -0.69, jnp.float32)}


def transition_errors(tr):
  """|next_obs - dynamics(obs, action)| per transition, with gymnax's CartPole
  (equal to Gymnasium's, see test_env_parity). A collector that puts a reset
  observation, or a phantom reset transition, into the data fails this."""
  env, params = envs.make_gymnax("CartPole-v1")
  obs = jnp.asarray(tr.obs, jnp.float32)

  def one(o, a):
    s = EnvState(x=o[0], x_dot=o[1], theta=o[2], theta_dot=o[3], time=0)
    with registry.foreign_numerics():
      nxt, *_ = env.step_env(jax.random.key(0), s, a, params)
    return nxt

  pred = jax.vmap(jax.vmap(one))(obs, jnp.asarray(tr.action))
  return np.abs(np.asarray(pred) - np.asarray(tr.next_obs)).max(-1)


def naive_next_step_collector(num_envs, num_steps, seed):
  """What a careless adapter does: Gymnasium's default NEXT_STEP autoreset,
  recording (obs, action, returned obs) for every step."""
  venv = gymnasium.make_vec("CartPole-v1", num_envs, vectorization_mode="sync")
  obs, _ = venv.reset(seed=seed)
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(num_steps):
    a = rng.integers(0, 2, num_envs)
    nxt, _, _, _, _ = venv.step(a)
    rows.append((obs, a, nxt))
    obs = nxt
  o, a, n = (np.stack(x) for x in zip(*rows))
  return envs.Trajectory(obs=o, action=a, next_obs=n, reward=None,
                         terminated=None, truncated=None, extras={},
                         episode_return=None, episode_length=None)


def test_adapter_trajectory_matches_the_jax_rollout_layout():
  host = envs.GymnasiumVecEnv("CartPole-v1", 3, seed=0)
  _, host_tr = host.rollout(jax.jit(cartpole_policy), jax.random.key(0), 20)
  venv, params = envs.make_vec("CartPole-v1", 3)
  state = envs.rollout_init(venv, params, jax.random.key(0))
  _, jax_tr = envs.rollout(cartpole_policy, venv, params, state, 20)
  assert jax.tree.structure(host_tr) == jax.tree.structure(jax_tr)
  layout = lambda tr: [(x.shape, x.dtype) for x in jax.tree.leaves(tr)]
  assert layout(host_tr) == layout(jax_tr)


def test_final_observations_are_the_true_ones_and_the_check_catches_next_step():
  host = envs.GymnasiumVecEnv("CartPole-v1", 4, seed=1)
  _, tr = host.rollout(jax.jit(cartpole_policy), jax.random.key(1), 200)
  done = np.asarray(tr.terminated | tr.truncated)
  assert done.sum() >= 10
  # Every recorded transition follows the dynamics, the final ones included
  # (obs are float32 roundings of Gymnasium's float64 state: 1e-5).
  assert transition_errors(tr).max() < 1e-5
  # Inside episodes next_obs is the next obs; at an end it is not the reset one.
  obs, nxt = np.asarray(tr.obs), np.asarray(tr.next_obs)
  np.testing.assert_array_equal(nxt[:-1][~done[:-1]], obs[1:][~done[:-1]])
  assert np.all(np.abs(obs[1:][done[:-1]]) <= 0.05)  # a fresh reset follows
  # The same check on a NEXT_STEP collector finds the phantom transitions.
  naive = naive_next_step_collector(4, 200, seed=1)
  assert transition_errors(naive).max() > 0.1


def test_adapter_episode_statistics_equal_a_python_loop():
  host = envs.GymnasiumVecEnv("CartPole-v1", 2, seed=2)
  _, tr = host.rollout(jax.jit(cartpole_policy), jax.random.key(2), 150)
  reward, done = np.asarray(tr.reward), np.asarray(tr.terminated | tr.truncated)
  for e in range(2):
    total, n = 0.0, 0
    for t in range(150):
      total, n = total + reward[t, e], n + 1
      if done[t, e]:
        assert float(tr.episode_return[t, e]) == pytest.approx(total)
        assert int(tr.episode_length[t, e]) == n
        total, n = 0.0, 0


def test_mujoco_through_the_adapter():
  host = envs.GymnasiumVecEnv("InvertedPendulum-v5", 2, seed=0)
  low, high = host.action_space.low, host.action_space.high

  def policy(key, obs):
    a = jax.random.uniform(key, (obs.shape[0], 1), minval=-5.0, maxval=5.0)
    return a, {}

  _, tr = host.rollout(jax.jit(policy), jax.random.key(0), 60)
  assert tr.obs.shape == (60, 2, 4) and tr.obs.dtype == jnp.float32
  assert tr.action.shape == (60, 2, 1)
  assert float(jnp.abs(tr.action).max()) > high[0] > low[0]  # kept unclipped
  done = np.asarray(tr.terminated | tr.truncated)
  assert done.any()
  obs, nxt = np.asarray(tr.obs), np.asarray(tr.next_obs)
  np.testing.assert_array_equal(nxt[:-1][~done[:-1]], obs[1:][~done[:-1]])
  host.close()


def test_one_seed_per_env_seeds_each_as_its_own_vector_env_would():
  """The host loop steps every seed's envs as one vector env, seeding env
  ``j`` of seed ``i`` as seed ``i``'s own vector env would: the same
  observations and transitions."""
  together = envs.GymnasiumVecEnv("InvertedPendulum-v5", 4,
                                  seed=[7, 8, 30, 31])
  apart = [envs.GymnasiumVecEnv("InvertedPendulum-v5", 2, seed=s)
           for s in (7, 30)]
  np.testing.assert_array_equal(together.obs, np.concatenate(
      [a.obs for a in apart]))
  actions = np.linspace(-3, 3, 4, dtype=np.float32)[:, None]
  for _ in range(40):  # episodes end and reset inside
    step = together.step(actions)
    parts = [a.step(actions[2 * i:2 * i + 2]) for i, a in enumerate(apart)]
    for name in step:
      np.testing.assert_array_equal(step[name], np.concatenate(
          [p[name] for p in parts]))
  assert not np.array_equal(together.obs[:2], together.obs[2:])


@pytest.mark.parametrize("env_id", ["InvertedDoublePendulum-v5",
                                    "CartPole-v1"])
def test_stepping_the_sync_envs_directly_is_the_vector_envs_step(env_id):
  """The adapter steps a ``SyncVectorEnv``'s envs itself (no merging of
  their info dicts): every field of every step, episodes ending and
  resetting inside, is what Gymnasium's own ``step`` gives, bit for bit,
  final observations included (where they differ from the reset ones)."""
  ours = envs.GymnasiumVecEnv(env_id, 3, seed=11)
  theirs = envs.GymnasiumVecEnv(env_id, 3, seed=11)
  assert ours._step == ours._step_sync_envs
  theirs._step = theirs._step_vector_env
  rng = np.random.default_rng(0)
  ended = 0
  for _ in range(150):
    if ours._discrete:
      action = rng.integers(0, 2, 3)
    else:
      action = rng.uniform(-1, 1, (3, 1)).astype(np.float32)
    a, b = ours.step(action), theirs.step(action)
    assert a.keys() == b.keys()
    for name in a:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)
      assert a[name].dtype == b[name].dtype, name
    done = a["terminated"] | a["truncated"]
    ended += done.sum()
    if done.any():  # the final observation is not the reset one
      assert not np.array_equal(a["next_obs"][done], ours.obs[done])
  assert ended >= 3
  np.testing.assert_array_equal(ours.obs, theirs.obs)
  ours.close()
  theirs.close()


@pytest.mark.parametrize("through_vector_step", [False, True])
def test_collect_is_a_plain_gymnasium_loop(through_vector_step):
  """``collect`` (the host loop) against Gymnasium's own vector env stepped
  in a plain loop, with float64 episode sums: the observation each step's
  policy is shown, every field, episodes ending inside; the sync envs
  stepped directly, or the vector env's own ``step`` (an async env's
  path; not forked here, under JAX's threads). Its ``next_obs`` differs
  from the next step's input where an episode ended, so a loop that
  recorded the reset observation as the successor would fail."""
  n, steps = 3, 120
  ours = envs.GymnasiumVecEnv("InvertedPendulum-v5", n, seed=5)
  if through_vector_step:
    ours._step = ours._step_vector_env
  ref = gymnasium.make_vec("InvertedPendulum-v5", n, vectorization_mode="sync",
                           vector_kwargs={"autoreset_mode": gymnasium.vector
                                          .AutoresetMode.SAME_STEP})
  obs, _ = ref.reset(seed=5)
  running, length = np.zeros(n), np.zeros(n, int)
  seen, rows = [], []

  def policy(o, t):  # depends on what it is shown, raw and unclipped
    seen.append(o.copy())
    return np.tanh(3 * o[:, :1] + 0.01 * t).astype(np.float32) * 4

  got = ours.collect(policy, steps)
  for t in range(steps):
    action = np.tanh(3 * obs[:, :1].astype(np.float32)
                     + 0.01 * t).astype(np.float32) * 4
    np.testing.assert_array_equal(seen[t], obs.astype(np.float32))
    nxt, r, te, tr, info = ref.step(np.clip(action, -3, 3))
    done = te | tr
    running, length = running + r, length + 1
    final = nxt.copy()
    final[done] = np.stack(info["final_obs"][done]) if done.any() else 0
    rows.append(dict(action=action, obs=obs, reward=r, terminated=te,
                     truncated=tr, next_obs=final,
                     episode_return=np.where(done, running, 0),
                     episode_length=np.where(done, length, 0)))
    running, length = np.where(done, 0, running), np.where(done, 0, length)
    obs = nxt
  want = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
  want["obs"] = np.concatenate([want["obs"], obs[None]])
  for name, value in want.items():
    np.testing.assert_array_equal(got[name], value.astype(got[name].dtype),
                                  err_msg=name)
  done = got["terminated"] | got["truncated"]
  assert done.sum() >= 3
  assert not np.array_equal(got["next_obs"][done], got["obs"][1:][done])
  np.testing.assert_array_equal(ours.obs, obs.astype(np.float32))
  ours.close()
  ref.close()


def test_collect_stopped_by_its_policy_leaves_obs_where_the_envs_are():
  """A policy that raises at step 3 leaves ``obs`` at the envs' state
  after three steps (the next ``collect`` starts from it), not at the
  rollout's start."""
  host = envs.GymnasiumVecEnv("InvertedPendulum-v5", 2, seed=3)
  twin = envs.GymnasiumVecEnv("InvertedPendulum-v5", 2, seed=3)
  action = np.full((2, 1), 0.5, np.float32)

  def policy(obs, t):
    if t == 3:
      raise RuntimeError("stop")
    return action

  with pytest.raises(RuntimeError, match="stop"):
    host.collect(policy, 10)
  twin.collect(lambda obs, t: action, 3)
  np.testing.assert_array_equal(host.obs, twin.obs)
  assert not np.array_equal(host.obs, envs.GymnasiumVecEnv(
      "InvertedPendulum-v5", 2, seed=3).obs)
  host.close()
  twin.close()


def test_adapter_bad_input():
  host = envs.GymnasiumVecEnv("CartPole-v1", 2)
  with pytest.raises(ValueError, match=r"shape \(2,\)"):
    host.step(np.zeros(3, np.int32))
  with pytest.raises(ValueError, match=r"\[0, 2\)"):
    host.step(np.array([0, 2]))
  with pytest.raises(ValueError, match="integers"):
    host.step(np.array([0.0, 1.0]))
  with pytest.raises(ValueError, match="vectorization_mode"):
    envs.GymnasiumVecEnv("CartPole-v1", 2,
                         vectorization_mode="vector_entry_point")
  with pytest.raises(ValueError, match="num_envs"):
    envs.GymnasiumVecEnv("CartPole-v1", 0)
  with pytest.raises(ValueError, match="one per env"):
    envs.GymnasiumVecEnv("CartPole-v1", 2, seed=[1, 2, 3])
  # A policy built for another task: its action shape is named, not broadcast.
  def wrong_policy(key, obs):
    return jnp.zeros((obs.shape[0], 1), jnp.float32), {}
  with pytest.raises(ValueError, match=r"shape \(2,\)"):
    host.rollout(wrong_policy, jax.random.key(0), 3)


def test_adapter_refuses_non_array_observations():
  def to_dict(env):
    return gymnasium.wrappers.TransformObservation(
        env, lambda o: {"x": o}, gymnasium.spaces.Dict({"x": env.observation_space}))
  with pytest.raises(ValueError, match="FlattenObservation"):
    envs.GymnasiumVecEnv("CartPole-v1", 2, wrappers=[to_dict])
  flat = envs.GymnasiumVecEnv(
      "CartPole-v1", 2,
      wrappers=[to_dict, gymnasium.wrappers.FlattenObservation])
  assert flat.obs.shape == (2, 4)
