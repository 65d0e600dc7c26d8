"""Our JAX-native classic control equals the installed Gymnasium.

One-step equality from identical states (5,000 random state-action pairs per
task), flags and time limits, 50-step agreement, reset distributions.

Where Gymnasium computes in float32, we match it to float32 precision and say
why:
* MountainCarContinuous-v0 stores its state as a float32 array after every
  step, and under NumPy 2's promotion rules (a float32 scalar with a Python
  float stays float32) its whole step runs in float32.
* Pendulum-v1 takes the torque from the float32 action, so ``0.001 u²`` and
  ``3/(m l²) u`` are float32 products; we feed the same float32 action, and
  JAX's weak typing keeps those products float32 too.
"""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments.classic_control import acrobot
from gymnax.environments.classic_control import cartpole
from gymnax.environments.classic_control import continuous_mountain_car
from gymnax.environments.classic_control import mountain_car
from gymnax.environments.classic_control import pendulum
from scipy import stats

from jaxrl_align import envs
from jaxrl_align.envs import registry

N_PAIRS = 5000
TIME_LIMITS = {"CartPole-v1": 500, "Acrobot-v1": 500, "MountainCar-v0": 200,
               "MountainCarContinuous-v0": 999, "Pendulum-v1": 200}


# Per task: how to draw states and actions, to build gymnax states, and to
# read and write Gymnasium's state. `state` rows are float64 [N, state_dim].
def _cartpole_states(rng, n):
  high = np.array([2.4, 3.0, 0.2094, 3.5])
  return rng.uniform(-high, high, size=(n, 4))


def _acrobot_states(rng, n, velocity_fraction=1.0):
  high = np.array([np.pi, np.pi, 4 * np.pi * velocity_fraction,
                   9 * np.pi * velocity_fraction])
  return rng.uniform(-high, high, size=(n, 4))


def _mountain_car_states(rng, n):
  s = np.stack([rng.uniform(-1.2, 0.6, n), rng.uniform(-0.07, 0.07, n)], 1)
  s[: n // 10, 0] = -1.2  # at the left wall: the velocity rule matters
  s[n // 10: n // 5, 0] = rng.uniform(0.4, 0.6, n // 10)  # near the goal
  return s


def _pendulum_states(rng, n):
  return np.stack([rng.uniform(-3 * np.pi, 3 * np.pi, n),
                   rng.uniform(-8, 8, n)], 1)


def _discrete_actions(k):
  return lambda rng, n: rng.integers(0, k, size=n)


def _box_actions(high):
  return lambda rng, n: rng.uniform(-high, high, size=(n, 1)).astype(np.float32)


SPECS = {
    "CartPole-v1": dict(
        states=_cartpole_states, actions=_discrete_actions(2),
        to_gymnax=lambda s: cartpole.EnvState(
            x=s[:, 0], x_dot=s[:, 1], theta=s[:, 2], theta_dot=s[:, 3],
            time=jnp.zeros(s.shape[0], jnp.int32)),
        from_gymnax=lambda st: jnp.stack([st.x, st.x_dot, st.theta,
                                          st.theta_dot], -1),
        dtype=np.float64),
    "Acrobot-v1": dict(
        states=_acrobot_states, actions=_discrete_actions(3),
        to_gymnax=lambda s: acrobot.EnvState(
            joint_angle1=s[:, 0], joint_angle2=s[:, 1], velocity_1=s[:, 2],
            velocity_2=s[:, 3], time=jnp.zeros(s.shape[0], jnp.int32)),
        from_gymnax=lambda st: jnp.stack([st.joint_angle1, st.joint_angle2,
                                          st.velocity_1, st.velocity_2], -1),
        dtype=np.float64),
    "MountainCar-v0": dict(
        states=_mountain_car_states, actions=_discrete_actions(3),
        to_gymnax=lambda s: mountain_car.EnvState(
            position=s[:, 0], velocity=s[:, 1],
            time=jnp.zeros(s.shape[0], jnp.int32)),
        from_gymnax=lambda st: jnp.stack([st.position, st.velocity], -1),
        dtype=np.float64),
    "MountainCarContinuous-v0": dict(
        states=_mountain_car_states, actions=_box_actions(1.5),
        to_gymnax=lambda s: continuous_mountain_car.EnvState(
            position=s[:, 0], velocity=s[:, 1],
            time=jnp.zeros(s.shape[0], jnp.int32)),
        from_gymnax=lambda st: jnp.stack([st.position, st.velocity], -1),
        dtype=np.float32),
    "Pendulum-v1": dict(
        states=_pendulum_states, actions=_box_actions(2.5),
        to_gymnax=lambda s: pendulum.EnvState(
            theta=s[:, 0], theta_dot=s[:, 1], last_u=jnp.zeros_like(s[:, 0]),
            time=jnp.zeros(s.shape[0], jnp.int32)),
        from_gymnax=lambda st: jnp.stack([st.theta, st.theta_dot], -1),
        dtype=np.float64),
}


def _gym_state(env_id, genv):
  return np.asarray(genv.unwrapped.state, np.float64)


def _set_gym_state(env_id, genv, s):
  u = genv.unwrapped
  if env_id == "MountainCar-v0":
    u.state = (np.float64(s[0]), np.float64(s[1]))
  else:
    u.state = np.array(s, dtype=SPECS[env_id]["dtype"])
  if env_id == "CartPole-v1":
    u.steps_beyond_terminated = None


def gymnasium_steps(env_id, states, actions):
  """Steps Gymnasium's own env from each state: next states, rewards, flags."""
  genv = gymnasium.make(env_id).unwrapped
  genv.reset(seed=0)
  out_s, out_r, out_d = [], [], []
  for s, a in zip(states, actions):
    _set_gym_state(env_id, genv, s)
    action = int(a) if np.ndim(a) == 0 else a
    _, r, terminated, _, _ = genv.step(action)
    out_s.append(np.asarray(genv.state, np.float64))
    out_r.append(r)
    out_d.append(terminated)
  return np.array(out_s), np.array(out_r, np.float64), np.array(out_d)


def jax_steps(env_id, states, actions):
  """Our gymnax step from the same states (vmapped), in the current dtype."""
  spec = SPECS[env_id]
  env, params = envs.make_gymnax(env_id)
  dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  if spec["dtype"] == np.float32:
    dtype = jnp.float32  # Gymnasium's own state is float32 here
  gstate = spec["to_gymnax"](jnp.asarray(states, dtype))
  act = jnp.asarray(actions)

  def one(s, a):
    with registry.foreign_numerics():
      _, ns, r, d, _ = env.step_env(jax.random.key(0), s, a, params)
    return spec["from_gymnax"](ns), r, d

  ns, r, d = jax.jit(jax.vmap(one))(gstate, act)
  return np.asarray(ns, np.float64), np.asarray(r, np.float64), np.asarray(d)


# Float64 tolerances, relative to max(1, |state|): 1e-9 where Gymnasium
# computes in float64; two float32 ulps at |x| ~ 1 (2.4e-7) where it does not.
F64_ATOL = {"CartPole-v1": 1e-9, "Acrobot-v1": 1e-9, "MountainCar-v0": 1e-9,
            "MountainCarContinuous-v0": 2.4e-7, "Pendulum-v1": 1e-9}


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_one_step_parity_float64(env_id):
  rng = np.random.default_rng(0)
  states = SPECS[env_id]["states"](rng, N_PAIRS)
  if SPECS[env_id]["dtype"] == np.float32:
    states = states.astype(np.float32).astype(np.float64)
  actions = SPECS[env_id]["actions"](rng, N_PAIRS)
  g_s, g_r, g_d = gymnasium_steps(env_id, states, actions)
  with jax.enable_x64(True):
    j_s, j_r, j_d = jax_steps(env_id, states, actions)
  scale = np.maximum(1.0, np.abs(g_s))
  np.testing.assert_allclose(j_s / scale, g_s / scale, rtol=0,
                             atol=F64_ATOL[env_id])
  # MountainCarContinuous's action cost 0.1·a² is a float32 product of the
  # float32 action here, a float64 `math.pow` in Gymnasium: 2 ulps apart.
  np.testing.assert_allclose(j_r, g_r, rtol=2.4e-7 if env_id.startswith(
      "MountainCarC") else 1e-9, atol=1e-9)
  np.testing.assert_array_equal(j_d, g_d)
  if env_id == "MountainCarContinuous-v0":  # the goal bonus was exercised
    assert (g_r > 50).sum() >= 20
  if env_id == "Pendulum-v1":  # angles beyond ±π: the normalisation matters
    assert np.mean(np.abs(states[:, 0]) > np.pi) > 0.5


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_one_step_parity_float32(env_id):
  rng = np.random.default_rng(1)
  if env_id == "Acrobot-v1":
    # Joint velocities up to half their bounds (2π, 4.5π): twice what a
    # random policy reaches (we measured |dθ₂| ≤ 6.4); see the next test for
    # the top of the range.
    states = _acrobot_states(rng, N_PAIRS, velocity_fraction=0.5)
  else:
    states = SPECS[env_id]["states"](rng, N_PAIRS)
  states = states.astype(np.float32).astype(np.float64)
  actions = SPECS[env_id]["actions"](rng, N_PAIRS)
  g_s, g_r, g_d = gymnasium_steps(env_id, states, actions)
  j_s, j_r, j_d = jax_steps(env_id, states, actions)
  scale = np.maximum(1.0, np.abs(g_s))
  np.testing.assert_allclose(j_s / scale, g_s / scale, rtol=0, atol=1e-5)
  np.testing.assert_allclose(j_r, g_r, rtol=1e-5, atol=1e-5)
  # A float32 state within rounding of a termination threshold may flip; all
  # others must agree.
  mismatch = j_d != g_d
  assert mismatch.sum() <= 2, np.flatnonzero(mismatch)


def test_acrobot_float32_error_at_extreme_velocities_is_bounded():
  """Near the velocity bounds (|dθ₂| up to 9π ≈ 28), Acrobot's RK4 step adds
  terms of order m·l·dθ₂² ≈ 400 whose float32 rounding (≈ 2e-5 each) leaves
  up to ~4e-4 relative error after one step (measured: 4.1e-4 on these 5,000
  states; float64 agrees to 1e-9, so it is float32 arithmetic, not a
  different model). This bounds it so a regression would show."""
  rng = np.random.default_rng(4)
  states = _acrobot_states(rng, N_PAIRS).astype(np.float32).astype(np.float64)
  actions = SPECS["Acrobot-v1"]["actions"](rng, N_PAIRS)
  g_s, _, _ = gymnasium_steps("Acrobot-v1", states, actions)
  j_s, _, _ = jax_steps("Acrobot-v1", states, actions)
  err = np.abs(j_s - g_s) / np.maximum(1.0, np.abs(g_s))
  assert err.max() < 1e-3
  assert np.quantile(err, 0.99) < 5e-5


def test_mountain_car_continuous_left_wall_rule_is_gymnasium_s():
  # At the left wall moving left: Gymnasium zeroes the velocity. Plain gymnax
  # zeroes it at the goal instead; ours follows Gymnasium.
  state = np.array([[-1.2, -0.05]])
  action = np.array([[-1.0]], np.float32)
  g_s, _, _ = gymnasium_steps("MountainCarContinuous-v0", state, action)
  j_s, _, _ = jax_steps("MountainCarContinuous-v0", state, action)
  assert g_s[0, 1] == 0.0 and j_s[0, 1] == 0.0


def _policy_actions(env_id, rng, n):
  if env_id == "CartPole-v1":
    return None  # chosen from the state by a balancing controller
  return SPECS[env_id]["actions"](rng, n)


def _balance(obs):
  return int(obs[2] + 0.5 * obs[3] + 0.01 * obs[0] + 0.1 * obs[1] > 0)


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_flags_and_time_limits_from_identical_states(env_id):
  """Whole episodes: after each step our physical state is set to Gymnasium's,
  so flags are compared from identical states while both time counters run."""
  rng = np.random.default_rng(2)
  genv = gymnasium.make(env_id)
  env, params = envs.make(env_id)
  step = jax.jit(env.step)
  spec = SPECS[env_id]
  hit_limit = 0
  with jax.enable_x64(True):
    for episode in range(3):
      obs, _ = genv.reset(seed=episode)
      _, state = env.reset(jax.random.key(0), params)
      for t in range(1, TIME_LIMITS[env_id] + 1):
        inner = spec["to_gymnax"](jnp.asarray(_gym_state(env_id, genv)[None]))
        inner = jax.tree.map(lambda x: x[0], inner).replace(time=state.inner.time)
        state = state._replace(inner=inner)
        a = (_balance(obs) if env_id == "CartPole-v1"
             else SPECS[env_id]["actions"](rng, 1)[0])
        obs, _, terminated, truncated, _ = genv.step(a)
        _, state, _, j_term, j_trunc, _ = step(jax.random.key(t), state,
                                                jnp.asarray(a), params)
        assert (bool(j_term), bool(j_trunc)) == (terminated, truncated), (
            episode, t)
        if terminated or truncated:
          break
      assert truncated == (t == TIME_LIMITS[env_id])
      hit_limit += truncated
  assert hit_limit >= 1, "no episode reached the time limit"


@pytest.mark.filterwarnings("ignore:.*already returned terminated.*")
@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_fifty_step_trajectories_agree(env_id):
  # Dynamics only: stepping on past a termination is fine for both.
  rng = np.random.default_rng(3)
  spec = SPECS[env_id]
  env, params = envs.make_gymnax(env_id)
  genv = gymnasium.make(env_id).unwrapped
  for seed in range(4):
    genv.reset(seed=seed)
    start = _gym_state(env_id, genv)
    actions = spec["actions"](rng, 50)
    g_states = []
    for a in actions:
      genv.step(int(a) if np.ndim(a) == 0 else a)
      g_states.append(_gym_state(env_id, genv))
    g_states = np.array(g_states)
    for x64, atol in ((True, 5e-7 if spec["dtype"] == np.float32 else 1e-9),
                      (False, 2e-4)):
      with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 and spec["dtype"] == np.float64 else jnp.float32
        s = jax.tree.map(lambda x: x[0],
                         spec["to_gymnax"](jnp.asarray(start[None], dtype)))

        def body(s, a):
          with registry.foreign_numerics():
            _, new, _, _, _ = env.step_env(jax.random.key(0), s, a, params)
          # Pendulum's last_u follows the float32 action; keep carry dtypes.
          new = jax.tree.map(lambda n, o: jnp.asarray(n, o.dtype), new, s)
          return new, spec["from_gymnax"](new)

        _, j_states = jax.jit(lambda s: jax.lax.scan(body, s, jnp.asarray(
            actions)))(s)
      scale = np.maximum(1.0, np.abs(g_states))
      np.testing.assert_allclose(np.asarray(j_states, np.float64) / scale,
                                 g_states / scale, rtol=0, atol=atol,
                                 err_msg=f"seed {seed}, x64={x64}")


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_reset_distribution_matches_gymnasium(env_id):
  n = 2000
  env, params = envs.make(env_id)
  obs, _ = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(
      jax.random.split(jax.random.key(0), n), params)
  genv = gymnasium.make(env_id)
  g_obs = np.array([genv.reset(seed=10_000 + i)[0] for i in range(n)])
  assert obs.shape == g_obs.shape and obs.dtype == g_obs.dtype
  for dim in range(g_obs.shape[1]):
    if np.ptp(g_obs[:, dim]) == 0:  # a constant, e.g. MountainCar's velocity
      np.testing.assert_array_equal(obs[:, dim], g_obs[:, dim])
      continue
    result = stats.ks_2samp(np.asarray(obs[:, dim]), g_obs[:, dim])
    assert result.pvalue > 1e-3, (dim, result)
