"""The user's path: nothing outside a run directory is touched, a user error
is one line and exit code 2, divergence stops a run, metrics never invent a
value, step counts are stated, any Gymnasium id trains on the host. One
regression test per defect the hardening issue reproduced."""

import importlib.util
import json
import os

import gymnasium
import jax
import numpy as np
import pytest

from jaxrl_align import heads
from jaxrl_align.host import stepping
from jaxrl_align.agents import on_policy
from jaxrl_align.agents import ppo
from jaxrl_align.agents import trpo
from jaxrl_align.host import cli
from jaxrl_align.host import files
from jaxrl_align.host import programs
from jaxrl_align.host import runner

TINY = ["--num-envs", "2", "--num-steps", "8", "--hidden", "8",
        "--eval-episodes", "1", "--no-progress"]


def run_cli(capsys, *argv):
  code = cli.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def one_error_line(err: str) -> str:
  lines = err.strip().splitlines()
  assert "Traceback" not in err and "error:" in lines[-1], err
  assert len([l for l in lines if "error:" in l]) == 1, err
  return lines[-1]


# ---------------------------------------------- 1. nothing outside a run


def test_overwrite_never_deletes_what_no_run_wrote(tmp_path, capsys):
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.tex").write_text("x")
  code, _, err = run_cli(capsys, "train", "--out", mine, "--overwrite",
                         "--total-timesteps", "32", *TINY)
  assert code == 2 and "not a jaxrl-align run directory" in one_error_line(err)
  assert (mine / "notes.tex").read_text() == "x"
  # A run directory with a user's file in it (even inside a nested run, as
  # in the demo's directory) is refused too.
  run = tmp_path / "run"
  assert run_cli(capsys, "train", "--out", run, "--total-timesteps", "32",
                 *TINY)[0] == 0
  nested = tmp_path / "demo"
  files.prepare_run_dir(str(nested), "demo", overwrite=False)
  os.rename(run, nested / "ppo")
  (nested / "ppo" / "my_plot.py").write_text("keep me")
  with pytest.raises(files.RunError, match="ppo/my_plot.py"):
    files.prepare_run_dir(str(nested), "demo", overwrite=True)
  assert (nested / "ppo" / "my_plot.py").exists()
  os.remove(nested / "ppo" / "my_plot.py")
  files.prepare_run_dir(str(nested), "demo", overwrite=True)  # all ours
  assert os.listdir(nested) == [files.MARKER]


def test_conflicting_or_wrong_paths_are_refused(tmp_path, capsys):
  run = tmp_path / "run"
  assert run_cli(capsys, "train", "--out", run, "--total-timesteps", "32",
                 *TINY)[0] == 0
  before = sorted(os.listdir(run))
  for argv, message in (
      (["train", "--resume", run, "--out", tmp_path / "other"],
       "neither --out nor --overwrite"),
      (["train", "--resume", run, "--overwrite"], "neither --out"),
      (["train", "--out", run / "config.json"], "not a directory"),
      (["plot", run, "--out", tmp_path / "no" / "such" / "x.png"],
       "no directory"),
      (["plot", run, "--out", run / "config.json"], "PNG"),
      (["rlhf", "prefs", "--out", run, "--sft", run, "--overwrite"],
       "overlap"),
      (["rlhf", "prefs", "--out", tmp_path / "p", "--sft", run],
       "expected a `jaxrl-align rlhf sft` run directory, this is a ppo run"),
      (["rlhf", "prefs", "--out", tmp_path / "p", "--sft",
        tmp_path / "no" / "such"], "not a run directory"),
      (["rlhf", "rm", "--out", tmp_path / "r", "--sft", run, "--prefs", run],
       "expected a `jaxrl-align rlhf sft`"),
      (["eval", tmp_path], "not a run directory"),
  ):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, (argv, err)
    assert message in one_error_line(err), (argv, err)
  assert sorted(os.listdir(run)) == before
  assert not os.path.exists(tmp_path / "p")
  assert not os.path.exists(tmp_path / "other")


def test_demo_replaces_only_its_own_directory(tmp_path, capsys):
  out = tmp_path / "demo"
  out.mkdir()
  (out / "notes.tex").write_text("x")
  code, _, err = run_cli(capsys, "demo", "--out", out, "--overwrite",
                         "--seeds", "1", "--total-timesteps", "1024",
                         "--no-progress")
  assert code == 2 and "not a jaxrl-align run" in one_error_line(err)
  assert (out / "notes.tex").exists()


def test_missing_extras_are_named(tmp_path, capsys, monkeypatch):
  run = tmp_path / "run"
  assert run_cli(capsys, "train", "--out", run, "--total-timesteps", "32",
                 *TINY)[0] == 0
  real = importlib.util.find_spec
  for missing, argv, extra in (
      ("pygame", ["eval", run, "--video"], "jaxrl_align[video]"),
      ("tokenizers", ["rlhf", "sft", "--out", tmp_path / "s"],
       "jaxrl_align[rlhf]"),
      ("vaderSentiment", ["rlhf", "prefs", "--out", tmp_path / "p", "--sft",
                          run], "jaxrl_align[rlhf]")):
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == missing
                        else real(name, *a))
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and extra in one_error_line(err), err
    assert missing in err
  monkeypatch.setattr(importlib.util, "find_spec", real)
  assert not os.path.exists(tmp_path / "s")


def test_a_renderer_that_fails_is_one_line_and_no_gif(tmp_path, capsys,
                                                     monkeypatch):
  # MuJoCo's renderer on a machine without OpenGL raises mujoco.FatalError
  # at the first frame (measured here); any renderer's failure is one line.
  import gymnasium.envs.classic_control.cartpole as cartpole

  run = tmp_path / "run"
  assert run_cli(capsys, "train", "--out", run, "--total-timesteps", "32",
                 *TINY)[0] == 0
  before = sorted(os.listdir(run))

  def fail(self):
    raise RuntimeError("an OpenGL platform library has not been loaded "
                       "into this process\nsecond line")

  monkeypatch.setattr(cartpole.CartPoleEnv, "render", fail)
  code, _, err = run_cli(capsys, "eval", run, "--video", "--episodes", "1")
  line = one_error_line(err)
  assert code == 2 and "could not be rendered here" in line, err
  assert "OpenGL" in line and "MUJOCO_GL=egl" in line
  assert sorted(os.listdir(run)) == before


# ------------------------------------------------------- 3. divergence


def test_divergence_stops_the_run_and_keeps_the_last_finite_checkpoint(
    tmp_path, capsys):
  code, _, err = run_cli(capsys, "train", "--out", tmp_path / "inf",
                         "--learning-rate", "inf", *TINY)
  assert code == 2 and "--learning-rate" in one_error_line(err)
  assert not os.path.exists(tmp_path / "inf")
  out = str(tmp_path / "nan")
  config = ppo.PPOConfig(env_id="CartPole-v1", total_timesteps=16 * 64,
                         num_envs=4, num_steps=16, hidden=(8,),
                         learning_rate=1e30, max_grad_norm=1e30)
  settings = runner.RunnerSettings(chunk=2, checkpoint_every=2)
  with pytest.raises(programs.DivergedError) as caught:
    runner.run("ppo", config, out, settings, progress=False)
  message = str(caught.value)
  assert "at update" in message and "--learning-rate" in message
  assert not os.path.exists(os.path.join(out, "summary.json"))
  rows = files.read_metrics(out)
  store_steps = sorted(int(s) for s in os.listdir(os.path.join(
      out, "checkpoints")) if s.isdigit())
  assert all(np.isfinite(r["policy_loss"]) for r in rows)
  assert (rows[-1]["update"] if rows else 0) >= (store_steps or [0])[-1]
  # Through the command line: one line, exit code 2.
  code, _, err = run_cli(capsys, "train", "--out", tmp_path / "cli",
                         "--total-timesteps", "1024", "--num-envs", "4",
                         "--num-steps", "16", "--hidden", "8",
                         "--learning-rate", "1e30", "--max-grad-norm", "1e30",
                         "--no-progress")
  assert code == 2 and "diverged" in one_error_line(err)


# ----------------------------------------- 4. metrics never invent values


def test_no_episode_ended_means_no_return(tmp_path):
  # Pendulum's episodes last 200 steps: none ends in the first update of
  # 64 steps, so that update records no return (null), where the curve and
  # the summary skip it.
  config = ppo.PPOConfig(env_id="Pendulum-v1", total_timesteps=4 * 64 * 5,
                         num_envs=4, num_steps=64, num_minibatches=4)
  _, metrics = jax.jit(ppo.train)(config, jax.random.key(0))
  assert np.isnan(metrics["episode_return"][0])
  assert float(metrics["episodes_finished"][0]) == 0
  ended = np.asarray(metrics["episodes_finished"]) > 0
  assert np.all(np.isfinite(np.asarray(metrics["episode_return"])[ended]))
  out = str(tmp_path / "pendulum")
  runner.run("ppo", config, out, runner.RunnerSettings(eval_episodes=1),
             progress=False)
  rows = files.read_metrics(out)
  assert rows[0]["episode_return"] is None
  assert rows[0]["policy_loss"] is not None
  from jaxrl_align.host import plotting

  steps, values = plotting.curves(out)
  assert np.isnan(values[0, 0]) and np.isfinite(values[0]).any()
  summary = json.load(open(os.path.join(out, "summary.json")))
  last = [r["episode_return"] for r in rows if r["episode_return"] is not None]
  assert summary["per_seed"][0]["train_episode_return"] == last[-1]


# ------------------------------------------ 7. step counts are stated


def test_total_timesteps_rounding_is_stated_and_recorded(tmp_path, capsys):
  out = tmp_path / "round"
  code, _, err = run_cli(capsys, "train", "--out", out, "--total-timesteps",
                         "100", "--num-envs", "2", "--num-steps", "8",
                         "--hidden", "8", "--eval-episodes", "1",
                         "--no-progress")
  assert code == 0
  assert "not a whole number of batches" in err and "96 env steps" in err
  stored = json.load(open(out / "config.json"))
  summary = json.load(open(out / "summary.json"))
  assert stored["config"]["total_timesteps"] == summary["total_timesteps"] == 100
  assert stored["env_steps"] == summary["env_steps"] == 96
  assert stored["updates"] == summary["updates"] == 6
  assert files.read_metrics(out)[-1]["env_steps"] == 96


# ------------------------------------------------- 8. honest messages


def test_messages_say_what_the_command_has(tmp_path, capsys):
  run = tmp_path / "run"
  assert run_cli(capsys, "train", "--out", run, "--total-timesteps", "32",
                 *TINY)[0] == 0
  code, _, err = run_cli(capsys, "train", "--out", run, "--total-timesteps",
                         "32", *TINY)
  assert code == 2 and "--resume" in one_error_line(err)
  for name in os.listdir(run / "checkpoints"):
    if name.isdigit():
      import shutil
      shutil.rmtree(run / "checkpoints" / name)
  code, _, err = run_cli(capsys, "eval", run)
  assert code == 2 and "no checkpoint yet" in one_error_line(err)
  # An option that exists for a command is never suggested for another.
  code, _, err = run_cli(capsys, "rlhf", "prefs", "--out", tmp_path / "p",
                         "--sft", run, "--resume", run)
  assert code == 2 and "unknown option --resume" in one_error_line(err)


def test_commands_refuse_runs_of_another_kind(tmp_path, capsys):
  """``train --resume`` and ``eval`` of a language-model run say which
  command handles it (without a run having to train: the record is
  enough)."""
  from jaxrl_align.rlhf import model as model_lib
  from jaxrl_align.rlhf import sft

  run = str(tmp_path / "sft")
  runner.create(sft.LEARNER, sft.SFTConfig(
      model=model_lib.TransformerConfig(vocab_size=8, max_len=4,
                                        num_layers=1, num_heads=1, width=4),
      steps=2, warmup_steps=0, eval_every=1), run)
  code, _, err = run_cli(capsys, "train", "--resume", run)
  assert code == 2 and "jaxrl-align rlhf sft --resume" in one_error_line(err)
  code, _, err = run_cli(capsys, "eval", run)
  assert code == 2 and "summary.json" in one_error_line(err)


# ------------------------------------- 2. any Gymnasium id, on the host


class ShapedBox(gymnasium.Env):
  """Box observations of shape (3, 2), Box actions of shape (2, 2); the
  reward is minus the action's distance to the observation's first rows."""
  observation_space = gymnasium.spaces.Box(-1, 1, (3, 2), np.float32)
  action_space = gymnasium.spaces.Box(-1, 1, (2, 2), np.float32)

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    self._t = 0
    self._obs = self.np_random.uniform(-1, 1, (3, 2)).astype(np.float32)
    return self._obs, {}

  def step(self, action):
    self._t += 1
    reward = -float(np.abs(np.asarray(action) - self._obs[:2]).sum())
    self._obs = self.np_random.uniform(-1, 1, (3, 2)).astype(np.float32)
    return self._obs, reward, False, self._t >= 10, {}


gymnasium.register("ShapedBox-v0", entry_point=ShapedBox)


@pytest.mark.parametrize("algo", [ppo, trpo])
def test_box_spaces_of_any_shape_build_their_network(algo):
  config = algo.LEARNER.config_type(env_id="ShapedBox-v0", num_envs=2,
                                    num_steps=10, total_timesteps=40,
                                    num_minibatches=2, hidden=(8,))
  policy = on_policy.task_policy(config)
  assert policy.head == heads.DiagGaussian(4) and policy.obs_shape == (3, 2)
  state, history = stepping.train(algo, config, jax.random.key(0))
  assert len(history) == 2
  assert state.params["params"]["actor"]["Dense_0"]["kernel"].shape == (6, 8)
  assert state.params["params"]["log_std"].shape == (4,)
  # 2 envs x 10 steps: each env ends one 10-step episode per update.
  assert history[0]["episodes_finished"] == 2
  with pytest.raises(ValueError, match="not a JAX-native task"):
    algo.train(config, jax.random.key(0))


def test_the_command_line_trains_any_gymnasium_id_on_the_host(tmp_path,
                                                              capsys):
  out = tmp_path / "host"
  code, _, err = run_cli(capsys, "train", "--out", out, "--env",
                         "CartPole-v0", "--total-timesteps", "64", "--seeds",
                         "2", *TINY)
  assert code == 0, err
  assert "stepped on the host" in err
  summary = json.load(open(out / "summary.json"))
  assert summary["env_path"] == "host" and summary["env_steps"] == 64
  # The evaluation and a resume (episodes restart) work as for JAX tasks.
  assert run_cli(capsys, "eval", out, "--episodes", "2")[0] == 0
  code, _, err = run_cli(capsys, "train", "--env", "HalfCheeta-v5", "--out",
                         tmp_path / "typo", *TINY)
  assert code == 2 and "Did you mean HalfCheetah-v5?" in one_error_line(err)
  code, _, err = run_cli(capsys, "train", "--env", "FrozenLake-v1", "--out",
                         tmp_path / "discrete", *TINY)
  assert code == 2 and "observations must be a Box" in one_error_line(err)
  assert not os.path.exists(tmp_path / "discrete")
