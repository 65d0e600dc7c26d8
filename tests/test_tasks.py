"""The task: built once from an id at the boundary and handed down.

A config never makes a Gymnasium environment; ``tasks.make`` does, once;
a run through the command line builds one task; ``train`` builds one when
none is given, and a task passed in gives the same numbers; evaluation
reads observation statistics through the task, not the state's layout.
"""

from __future__ import annotations

import dataclasses
import json

import gymnasium
import jax
import numpy as np
import pytest

from jaxrl_align import envs
from jaxrl_align import heads
from jaxrl_align import normalization
from jaxrl_align.agents import on_policy
from jaxrl_align.agents import ppo
from jaxrl_align.agents import tasks
from jaxrl_align.agents import trpo
from jaxrl_align.host import cli
from jaxrl_align.host import runner
from jaxrl_align.host import views

TINY = ["--num-envs", "2", "--num-steps", "8", "--hidden", "8",
        "--eval-episodes", "1", "--no-progress", "--total-timesteps", "32"]
HOST_ID = "CartPole-v0"  # registered in Gymnasium, not JAX-native


def _no_gymnasium_make(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("gymnasium.make called")
  envs.spaces.cache_clear()
  monkeypatch.setattr(gymnasium, "make", refuse)


def _count_makes(monkeypatch) -> list[str]:
  made, make = [], tasks.make

  def counting(env_id, **kwargs):
    made.append(env_id)
    return make(env_id, **kwargs)
  monkeypatch.setattr(tasks, "make", counting)
  return made


def _leaves(tree):
  return [jax.random.key_data(x) if jax.dtypes.issubdtype(
      x.dtype, jax.dtypes.prng_key) else x for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("algo", [ppo, trpo])
def test_config_construction_makes_no_gymnasium_env(algo, monkeypatch):
  _no_gymnasium_make(monkeypatch)
  config_type = algo.LEARNER.config_type
  config = config_type(env_id=HOST_ID, num_envs=2, num_steps=8,
                       total_timesteps=32, num_minibatches=2)
  assert config.replace(learning_rate=1e-3).env_id == HOST_ID
  with pytest.raises(ValueError, match="use_sde"):  # no env needed to say so
    config_type(env_id=HOST_ID, use_sde=True)
  with pytest.raises(ValueError, match="Did you mean"):  # the registry
    config_type(env_id="CartPole-v9")
  with pytest.raises(AssertionError, match="gymnasium.make"):
    tasks.make(HOST_ID)  # the task is where the environment is made
  monkeypatch.undo()
  task = tasks.for_config(config)
  assert not task.jax_native
  assert task.policy(config).head == heads.Categorical(2)


def test_a_task_is_static_and_equal_by_id():
  a, b = tasks.make("CartPole-v1"), tasks.make("CartPole-v1")
  assert a == b and hash(a) == hash(b) and a.jax_native
  assert a != tasks.make("CartPole-v1", host=True)
  assert a != tasks.make("Pendulum-v1")
  shorter = dataclasses.replace(a, env_params=a.env_params.replace(
      max_steps_in_episode=10))
  assert shorter != a and shorter.max_episode_steps == 10
  assert jax.tree.leaves(a) == []
  config = ppo.PPOConfig(env_id="CartPole-v1")
  with pytest.raises(ValueError, match="Pendulum-v1"):
    tasks.make("Pendulum-v1").check(config)
  with pytest.raises(ValueError, match="JAX-native only"):
    tasks.make("Pendulum-v1", host=True).check(
        ppo.PPOConfig(env_id="Pendulum-v1", use_sde=True))
  tasks.make("CartPole-v1", host=True).check(  # normalised on the host too
      config.replace(normalize_obs=True, scale_reward=True))
  sde = ppo.PPOConfig(env_id="Pendulum-v1", use_sde=True)
  tasks.make("Pendulum-v1").check(sde)
  discrete = dataclasses.replace(tasks.make("Pendulum-v1"),
                                 action_space=a.action_space)
  with pytest.raises(ValueError, match="gSDE: Box only"):
    discrete.check(sde)


def test_train_builds_its_task_once_and_a_given_task_gives_the_same_run(
    monkeypatch):
  made = _count_makes(monkeypatch)
  config = ppo.PPOConfig(env_id="Pendulum-v1", num_envs=2, num_steps=16,
                         total_timesteps=64, num_minibatches=2,
                         update_epochs=1, normalize_obs=True,
                         scale_reward=True)
  assert made == []  # the config built none
  key = jax.random.key(0)
  state, metrics = jax.jit(ppo.train)(config, key)
  assert made == ["Pendulum-v1"]
  task = tasks.make("Pendulum-v1")
  given, given_metrics = jax.jit(ppo.train)(config, key, task)
  for x, y in zip(_leaves((state, metrics)), _leaves((given, given_metrics))):
    np.testing.assert_array_equal(x, y)
  # Evaluation reads the statistics through the task's wrapper stack
  # (observation normalisation under reward scaling).
  stats = task.training_env(config).obs_stats(state.rollout.env_state)
  assert stats is state.rollout.env_state.inner.obs_stats
  obs = jax.random.normal(jax.random.key(1), (3, 3))
  np.testing.assert_array_equal(
      on_policy.deterministic_policy(config, state, task)(obs),
      task.policy(config).mode(state.params, normalization.normalize(
          stats, obs, clip=tasks.OBS_CLIP)))
  returns = jax.jit(lambda s, k: ppo.evaluate(config, s, k, 2, task))(
      state, key)
  np.testing.assert_array_equal(returns, ppo.evaluate(config, state, key, 2))


@pytest.mark.parametrize("env_id", ["CartPole-v1", HOST_ID])
def test_a_command_line_run_builds_one_task(env_id, tmp_path, capsys,
                                            monkeypatch):
  made = _count_makes(monkeypatch)
  out = tmp_path / "run"
  code = cli.main(["train", "--out", str(out), "--env", env_id, *TINY])
  err = capsys.readouterr().err
  assert code == 0, err
  assert made == [env_id]
  summary = json.load(open(out / "summary.json"))
  assert summary["env_path"] == ("jax" if env_id == "CartPole-v1"
                                 else "host")


def test_the_runner_gives_the_same_run_with_the_task_as_its_data(tmp_path):
  config = ppo.PPOConfig(env_id="CartPole-v1", num_envs=2, num_steps=8,
                         total_timesteps=32, num_minibatches=2, hidden=(8,),
                         normalize_obs=True)
  settings = runner.RunnerSettings(seeds=2, chunk=2, eval_episodes=1)
  built = runner.run("ppo", config, str(tmp_path / "built"), settings,
                     progress=False)
  given = runner.run("ppo", config, str(tmp_path / "given"), settings,
                     data=tasks.make("CartPole-v1"), progress=False)
  for x, y in zip(_leaves((built.states, built.evaluation)),
                  _leaves((given.states, given.evaluation))):
    np.testing.assert_array_equal(x, y)


class _Opaque(tuple):
  """A learner state the host cannot read: no field names, no attributes
  (a pytree by being a tuple)."""


def _opaque(learner):
  """``learner`` with its state hidden in an :class:`_Opaque`; only its
  own pure functions unwrap it."""
  wrap = lambda state: _Opaque((state,))  # noqa: E731
  s = learner.stepping

  def prepare(config, state, task):
    arrays, inner = s.prepare(config, state[0], task)
    return arrays, wrap(inner)

  def replay(config, state, rollout, task):
    trajectory, obs, inner = s.replay(config, state[0], rollout, task)
    return trajectory, obs, wrap(inner)

  def learn(config, state, trajectory, task):
    inner, metrics = s.learn(config, state[0], trajectory, task)
    return wrap(inner), metrics

  def restart(config, state, obs, task):
    obs, inner = s.restart(config, state[0], obs, task)
    return obs, wrap(inner)

  return dataclasses.replace(
      learner, name="opaque",
      init=lambda config, key, task: wrap(learner.init(config, key, task)),
      stepping=s._replace(
          prepare=prepare, replay=replay, learn=learn, restart=restart,
          mode=lambda config, state, obs, task: s.mode(config, state[0], obs,
                                                       task)))


jax.tree_util.register_pytree_node(
    _Opaque, lambda t: (tuple(t), None), lambda _, xs: _Opaque(xs))


def test_host_stepping_calls_only_the_learners_stepping(tmp_path):
  """Host-stepped programs drive a learner through its ``Stepping`` alone:
  with its state made unreadable (a bare tuple) the run is the same run,
  bit for bit (the host read ``state.rollout.key`` and ``state.update``
  before), observation normalisation and reward scaling included."""
  config = ppo.PPOConfig(env_id=HOST_ID, num_envs=2, num_steps=8,
                         total_timesteps=32, num_minibatches=2, hidden=(8,),
                         normalize_obs=True, scale_reward=True)
  settings = runner.RunnerSettings(seeds=2, chunk=2, eval_episodes=1)
  plain = runner.run(ppo.LEARNER, config, str(tmp_path / "plain"), settings,
                     progress=False)
  hidden = runner.run(_opaque(ppo.LEARNER), config, str(tmp_path / "hid"),
                      settings, progress=False,
                      view=views.of(ppo.LEARNER))
  assert plain.summary["env_path"] == "host"
  for x, y in zip(_leaves((plain.states, plain.evaluation)),
                  _leaves((hidden.states[0], hidden.evaluation))):
    np.testing.assert_array_equal(x, y)
