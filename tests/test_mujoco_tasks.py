"""Gymnasium's MuJoCo tasks compiled with MJX, against Gymnasium itself.

Three layers: each task's rules (observation, reward, termination) read
from the C engine's own ``MjData`` after Gymnasium's step (all six tasks,
exact to float32); MJX's dynamics from Gymnasium's start state under
Gymnasium's actions (two tasks: MJX compiles each model for about 15 s);
and the reset distribution.
"""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_align import envs
from jaxrl_align.agents import presets
from jaxrl_align.agents import tasks
from jaxrl_align.envs import registry

mujoco_tasks = pytest.importorskip("jaxrl_align.envs.mujoco_tasks")


def gymnasium_steps(gymnasium_id, rules, steps=120, seed=0):
  """Gymnasium's obs, reward and terminated for random actions over
  episodes, beside the same values from ``rules`` read off the C engine's
  ``MjData`` after each step."""
  env = gymnasium.make(gymnasium_id)
  data = env.unwrapped.data
  dt = env.unwrapped.dt
  rng = np.random.default_rng(seed)
  ours, theirs = [], []
  obs, _ = env.reset(seed=seed)
  ours.append((rules.observe(data), 0.0, False))
  theirs.append((obs, 0.0, False))
  for _ in range(steps):
    action = rng.uniform(env.action_space.low, env.action_space.high)
    before = data.qpos.copy()
    obs, reward, terminated, truncated, _ = env.step(action)
    reward_ours, terminated_ours = rules.score(before, data, action, dt)
    ours.append((rules.observe(data), reward_ours, terminated_ours))
    theirs.append((obs, reward, terminated))
    if terminated or truncated:
      obs, _ = env.reset()
      ours.append((rules.observe(data), 0.0, False))
      theirs.append((obs, 0.0, False))
  env.close()
  return ours, theirs


def assert_same_steps(ours, theirs):
  for (o, r, t), (o2, r2, t2) in zip(ours, theirs, strict=True):
    np.testing.assert_allclose(np.asarray(o), o2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(r), r2, rtol=1e-5, atol=1e-5)
    assert bool(t) == t2


@pytest.mark.parametrize("gymnasium_id", list(mujoco_tasks.RULES))
def test_rules_read_off_the_c_engine_give_gymnasiums_values(gymnasium_id):
  ours, theirs = gymnasium_steps(gymnasium_id,
                                 mujoco_tasks.RULES[gymnasium_id])
  assert_same_steps(ours, theirs)
  ends = sum(t for _, _, t in theirs)
  if gymnasium_id in ("HalfCheetah-v5", "Swimmer-v5"):
    assert ends == 0  # they never end
  else:
    assert ends >= 1  # the termination rule was exercised


def _differ(ours, theirs):
  try:
    assert_same_steps(ours, theirs)
  except AssertionError:
    return True
  return False


@pytest.mark.parametrize("gymnasium_id,wrong_id", [
    ("Walker2d-v5", "Hopper-v5"),      # another health rule
    ("Swimmer-v5", "HalfCheetah-v5"),  # another observation and cost
    ("InvertedDoublePendulum-v5", "InvertedPendulum-v5"),
])
def test_another_tasks_rules_fail(gymnasium_id, wrong_id):
  ours, theirs = gymnasium_steps(gymnasium_id,
                                 mujoco_tasks.RULES[wrong_id], steps=60)
  assert _differ(ours, theirs)


def test_a_wrong_health_range_fails():
  good = mujoco_tasks.RULES["Hopper-v5"]
  wrong = mujoco_tasks._locomotion(  # the angle bound of Walker2d
      1, True, 1e-3, lambda d: (0.7 < d.qpos[1]) & (jnp.abs(d.qpos[2]) < 1.0),
      5e-3, False)
  ours, theirs = gymnasium_steps("Hopper-v5", good)
  assert_same_steps(ours, theirs)
  ours, theirs = gymnasium_steps("Hopper-v5", wrong)
  assert _differ(ours, theirs)


@pytest.mark.parametrize("gymnasium_id", ["InvertedDoublePendulum-v5",
                                          "Hopper-v5"])
def test_mjx_steps_as_gymnasium_does_from_the_same_state(gymnasium_id):
  # MJX in float32 against the C engine in float64: measured gaps of about
  # 1e-6 (observations) and 1e-7 (rewards) over these steps.
  env, params = envs.make("mjx/" + gymnasium_id)
  mjx_env = env.gymnax_env
  set_state = jax.jit(mjx_env.set_state)
  step = jax.jit(lambda s, a: mjx_env.step_env(None, s, a, params))
  g = gymnasium.make(gymnasium_id)
  rng = np.random.default_rng(1)
  moved, steps, ends = 0.0, 0, 0
  for seed in range(2):
    obs, _ = g.reset(seed=seed)
    ours, state = set_state(g.unwrapped.data.qpos, g.unwrapped.data.qvel)
    np.testing.assert_allclose(ours, obs, atol=1e-6)
    for _ in range(40):
      action = rng.uniform(g.action_space.low, g.action_space.high)
      previous = obs
      obs, reward, terminated, _, _ = g.step(action)
      ours, state, reward_ours, terminated_ours, _ = step(
          state, jnp.asarray(action, jnp.float32))
      np.testing.assert_allclose(ours, obs, atol=1e-4)
      np.testing.assert_allclose(reward_ours, reward, atol=1e-4)
      assert bool(terminated_ours) == terminated
      moved = max(moved, np.abs(obs - previous).max())
      steps += 1
      if terminated:
        ends += 1
        break
  g.close()
  assert moved > 100 * 1e-4  # a state off by one step would fail
  assert ends >= 1


def test_reset_draws_gymnasiums_noise():
  for gymnasium_id, normal in [("InvertedDoublePendulum-v5", True),
                               ("Hopper-v5", False)]:
    mjx_env = mujoco_tasks.make("mjx/" + gymnasium_id)
    scale = mujoco_tasks.RULES[gymnasium_id].reset_noise
    _, state = jax.jit(jax.vmap(mjx_env.reset_env, in_axes=(0, None)))(
        jax.random.split(jax.random.key(0), 2000), mjx_env.default_params)
    g = gymnasium.make(gymnasium_id).unwrapped
    qpos = np.asarray(state.qpos) - g.init_qpos
    qvel = np.asarray(state.qvel) - g.init_qvel
    assert np.abs(qpos).max() <= scale * (1 + 1e-6)
    np.testing.assert_allclose(qpos.std(0), scale / np.sqrt(3), rtol=0.1)
    if normal:
      np.testing.assert_allclose(qvel.std(0), scale, rtol=0.1)
      assert np.abs(qvel).max() > 2 * scale
    else:
      assert np.abs(qvel).max() <= scale * (1 + 1e-6)
      np.testing.assert_allclose(qvel.std(0), scale / np.sqrt(3), rtol=0.1)
    assert (np.asarray(state.time) == 0).all()
    if not mujoco_tasks.RULES[gymnasium_id].observe_reads_forward:
      # Its reset skips `mj_forward`: the same observation and the same
      # state to start from as Gymnasium's `set_state`, which runs it.
      obs, one = jax.jit(mjx_env.reset_env)(jax.random.key(3),
                                            mjx_env.default_params)
      obs_set, two = jax.jit(mjx_env.set_state)(one.qpos, one.qvel)
      np.testing.assert_array_equal(obs, obs_set)
      jax.tree.map(np.testing.assert_array_equal, one, two)


def test_mjx_ids_are_jax_native_tasks_with_gymnasiums_spaces_and_presets():
  assert registry.MJX_IDS == tuple("mjx/" + k for k in mujoco_tasks.RULES)
  for env_id in registry.MJX_IDS:
    assert envs.is_jax_native(env_id)
    envs.check_env_id(env_id)
    gymnasium_id = env_id.removeprefix("mjx/")
    for algo in ("ppo", "trpo"):
      assert presets.preset(algo, env_id) == presets.preset(algo,
                                                            gymnasium_id)
  task = tasks.make("mjx/Hopper-v5")
  g = gymnasium.make("Hopper-v5")
  assert task.jax_native and task.max_episode_steps == 1000
  assert task.observation_space.shape == g.observation_space.shape
  np.testing.assert_array_equal(task.action_space.low, g.action_space.low)
  np.testing.assert_array_equal(task.action_space.high, g.action_space.high)
  assert tasks.make("mjx/Hopper-v5") == task
  assert mujoco_tasks.make("mjx/Hopper-v5") is task.env.gymnax_env
  with pytest.raises(ValueError, match="Did you mean mjx/Hopper-v5"):
    envs.check_env_id("mjx/Hoper-v5")


def test_without_mujoco_mjx_an_mjx_id_is_refused_in_one_line(monkeypatch):
  import builtins
  real_import = builtins.__import__

  def no_mjx(name, *args, **kwargs):
    if name == "jaxrl_align.envs" and "mujoco_tasks" in (args[2] or ()):
      raise ImportError("No module named 'mujoco.mjx'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_mjx)
  with pytest.raises(ValueError, match=r"needs mujoco-mjx.*jaxrl_align\[mjx\]"):
    registry.make_gymnax("mjx/Swimmer-v5")
