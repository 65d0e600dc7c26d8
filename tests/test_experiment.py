"""The runner: metrics, checkpoints, exact resume, refusals, evaluation,
plots, TensorBoard, Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxrl_align import configs
from jaxrl_align.agents import ppo
from jaxrl_align.host import checkpoints
from jaxrl_align.host import evaluation
from jaxrl_align.host import plotting
from jaxrl_align.host import runner
from jaxrl_align.host import views

# 12 updates of 4 envs x 16 steps, in chunks of 2.
SMALL = dict(env_id="CartPole-v1", total_timesteps=12 * 64, num_envs=4,
             num_steps=16, num_minibatches=2, update_epochs=2,
             hidden=(16, 16))
SETTINGS = runner.RunnerSettings(seeds=2, chunk=2, checkpoint_every=4,
                                     keep=2, eval_episodes=3)


def small_config(**overrides):
  return ppo.PPOConfig(**dict(SMALL, **overrides))


def params_of(states):
  """Every leaf as a NumPy array (PRNG keys as their key data)."""
  return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(
      x.dtype, jax.dtypes.prng_key) else x) for x in jax.tree.leaves(states)]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("runs") / "full")
  result = runner.run("ppo", small_config(), out, SETTINGS,
                          progress=False)
  return out, result


def test_run_writes_metrics_summary_plot_and_checkpoints(full_run):
  out, result = full_run
  lines = open(os.path.join(out, "metrics.jsonl")).read().splitlines()
  # Plain JSON (no NaN/Infinity tokens), one line per update per seed.
  rows = [json.loads(line, parse_constant=pytest.fail) for line in lines]
  assert [(r["update"], r["seed"]) for r in rows] == [
      (u, s) for u in range(1, 13) for s in range(2)]
  assert rows[-1]["env_steps"] == 12 * 64  # steps taken, this update included
  assert {"episode_return", "policy_loss", "approx_kl",
          "learning_rate"} <= set(rows[0])
  stored = json.load(open(os.path.join(out, "config.json")))
  assert stored["algo"] == "ppo" and stored["config"]["num_envs"] == 4
  assert stored["config"]["target_kl"] == "inf"
  assert stored["runner"]["chunk"] == 2
  # keep=2: the last two of the checkpoints at updates 4, 8, 12.
  ckpts = checkpoints.Checkpoints(os.path.join(out, "checkpoints"), 2)
  assert ckpts.steps() == [8, 12]
  ckpts.close()
  assert result.eval_returns.shape == (2, 3)
  summary = json.load(open(os.path.join(out, "summary.json")))
  np.testing.assert_allclose(summary["eval_return_mean"],
                             result.eval_returns.mean())
  assert os.path.getsize(os.path.join(out, "learning_curve.png")) > 1000
  assert "PPO on CartPole-v1" in views.of(ppo.LEARNER).report(summary)


def test_runner_equals_plain_train(full_run):
  # Chunks of jitted updates are the pure train function, seed for seed.
  _, result = full_run
  keys = jax.random.split(jax.random.key(SETTINGS.seed), 2)
  states, metrics = jax.jit(jax.vmap(ppo.train, in_axes=(None, 0)))(
      small_config(), keys)
  for a, b in zip(params_of(result.states.params), params_of(states.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_interrupted_and_resumed_run_is_bit_identical(full_run, tmp_path):
  out, full = full_run
  part = str(tmp_path / "part")
  stopped = runner.run("ppo", small_config(), part, SETTINGS,
                           progress=False, stop_after=6)
  assert stopped.interrupted and stopped.summary is None
  # A crash after metrics were written but before the next checkpoint:
  # resuming must drop those lines.
  with open(os.path.join(part, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"update": 7, "seed": 0, "episode_return": 1.0})
            + "\n")
  resumed = runner.run("ppo", small_config(), part, SETTINGS,
                           resume=True, progress=False)
  for a, b in zip(params_of(full.states), params_of(resumed.states)):
    np.testing.assert_array_equal(a, b)
  assert (runner.read_metrics(part) == runner.read_metrics(out))
  np.testing.assert_array_equal(full.eval_returns, resumed.eval_returns)


def test_resume_with_a_changed_hyperparameter_is_recorded(tmp_path, capsys):
  out = str(tmp_path / "changed")
  settings = runner.RunnerSettings(chunk=2, eval_episodes=1)
  config = small_config(total_timesteps=4 * 64)
  runner.run("ppo", config, out, settings, progress=False, stop_after=2)
  runner.run("ppo", config.replace(learning_rate=1e-4), out, settings,
                 resume=True, progress=False)
  assert "resuming with learning_rate = 0.0001" in capsys.readouterr().err
  stored = json.load(open(os.path.join(out, "config.json")))
  assert stored["config"]["learning_rate"] == 1e-4
  lr0 = float(config.learning_rate)  # the CartPole preset's
  assert stored["changes"] == [{"at_update": 2, "changes": {
      "learning_rate": [lr0, 1e-4]}}]
  rows = runner.read_metrics(out)
  # Linear annealing over 4 updates, from the new rate after the resume.
  np.testing.assert_allclose([r["learning_rate"] for r in rows],
                             [lr0, lr0 * 3 / 4, 1e-4 * 2 / 4, 1e-4 * 1 / 4],
                             rtol=1e-6)


def test_corrupt_checkpoint_falls_back_to_the_previous_one(full_run, tmp_path,
                                                           capsys):
  import shutil

  out = str(tmp_path / "copy")
  shutil.copytree(full_run[0], out)
  newest = os.path.join(out, "checkpoints", "12")
  # A crash in the middle of writing checkpoint 16: orbax writes into a
  # temporary directory and renames it when complete, so the half-written
  # one is not a checkpoint and 12 is still the newest.
  shutil.copytree(newest, os.path.join(out, "checkpoints",
                                       "16.orbax-checkpoint-tmp-1234"))
  _, _, _, step, _ = evaluation.restore_run(out)
  assert step == 12
  for root, _, files in os.walk(newest):
    for name in files:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(max(0, os.path.getsize(f.name) // 3))
  _, _, _, step, _ = evaluation.restore_run(out)
  assert step == 8
  assert "update 12 is unreadable" in capsys.readouterr().err
  shutil.rmtree(os.path.join(out, "checkpoints", "8"))
  shutil.rmtree(newest)
  with pytest.raises(checkpoints.CheckpointError, match="no checkpoint"):
    evaluation.restore_run(out)


def test_refusals_before_any_work(full_run, tmp_path):
  out = full_run[0]
  with pytest.raises(runner.RunError, match="--resume .* --overwrite"):
    runner.run("ppo", small_config(), out, SETTINGS, progress=False)
  with pytest.raises(runner.RunError, match=r"num_envs: 4 \(stored\) "
                                                r"-> 8"):
    runner.run("ppo", small_config(num_envs=8), out, SETTINGS,
                   resume=True, progress=False)
  with pytest.raises(runner.RunError, match="is ppo, not trpo"):
    from jaxrl_align.agents import trpo
    runner.run("trpo", trpo.TRPOConfig(env_id="CartPole-v1"), out,
                   SETTINGS, resume=True, progress=False)
  fresh = str(tmp_path / "fresh")
  with pytest.raises(runner.RunError, match="`chunk` must divide"):
    runner.run("ppo", small_config(), fresh,
                   runner.RunnerSettings(chunk=5), progress=False)
  with pytest.raises(runner.RunError, match="`seeds`"):
    runner.run("ppo", small_config(), fresh,
                   runner.RunnerSettings(seeds=0), progress=False)
  assert not os.path.exists(fresh)
  with pytest.raises(runner.RunError, match="not a run directory"):
    evaluation.evaluate_run(str(tmp_path), 2)


def test_default_chunk_divides_the_updates():
  assert runner.default_chunk(390) == 15  # 26 calls of 15 updates
  assert runner.default_chunk(97) == 1
  assert runner.default_chunk(10) == 1
  for n in (1, 12, 390, 781, 1000):
    assert n % runner.default_chunk(n) == 0


def test_config_json_round_trip():
  from jaxrl_align.agents import trpo

  for config in (small_config(objective="kl_penalty"),
                 trpo.TRPOConfig(env_id="Pendulum-v1")):
    back = configs.from_dict(
        type(config), json.loads(json.dumps(configs.to_dict(config))))
    assert configs.diff(config, back) == {}
  assert configs.static_fields(small_config())[:2] == ["env_id",
                                                        "total_timesteps"]


def test_evaluate_plot_and_video(full_run, tmp_path):
  out = full_run[0]
  returns, step = evaluation.evaluate_run(out, 2)
  assert returns.shape == (2, 2) and step == 12
  steps, values = plotting.curves(out)
  assert steps.shape == (12,) and values.shape == (2, 12)
  figure = plotting.plot_runs([out, out], str(tmp_path / "two.png"),
                              labels=["a", "b"])
  assert os.path.getsize(figure) > 1000
  with pytest.raises(runner.RunError, match="Unknown metric"):
    plotting.curves(out, "nope")
  gif = str(tmp_path / "episode.gif")
  total, frames = evaluation.record_video(out, gif, seed_index=1)
  from PIL import Image
  with Image.open(gif) as image:
    # Pillow merges identical consecutive frames.
    assert 1 < image.n_frames <= frames
  # CartPole pays 1 per step; the episode has frames - 1 steps.
  assert total == frames - 1


def test_tensorboard_events(tmp_path):
  out = str(tmp_path / "tb")
  runner.run("ppo", small_config(total_timesteps=4 * 64), out,
                 runner.RunnerSettings(chunk=2, eval_episodes=1),
                 tensorboard=True, progress=False)
  events = os.listdir(os.path.join(out, "tensorboard"))
  assert any(name.startswith("events.out.tfevents") for name in events)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_is_exact(tmp_path):
  # Updates of this tiny config take milliseconds: with only 60 the run once
  # finished before the SIGINT (sent once the first metrics are written)
  # arrived. 600 leave a window of seconds.
  UPDATES = 600
  out = str(tmp_path / "sigint")
  args = ["--algo", "ppo", "--env", "CartPole-v1", "--seeds", "2",
          "--total-timesteps", str(UPDATES * 64), "--num-envs", "4",
          "--num-steps", "16", "--num-minibatches", "2", "--update-epochs",
          "2", "--hidden", "16", "16", "--chunk", "1", "--checkpoint-every",
          "1000", "--eval-episodes", "2", "--no-progress",
          "--devices", "1"]  # resumed here, in a process of one device
  proc = subprocess.Popen(
      [sys.executable, "-m", "jaxrl_align", "train", "--out", out] + args,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(out, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(metrics) and os.path.getsize(metrics) > 0:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 130, err
  # The signal is acknowledged when it arrives, not when the chunk ends.
  assert "Ctrl-C: stopping after this chunk" in err
  assert "Resume with: jaxrl-align train --resume" in err
  ckpts = checkpoints.Checkpoints(os.path.join(out, "checkpoints"), 3)
  stopped_at = ckpts.steps()
  ckpts.close()
  assert len(stopped_at) == 1 and 1 <= stopped_at[0] < UPDATES
  from jaxrl_align.host import cli
  assert cli.main(["train", "--resume", out, "--no-progress"]) == 0
  whole = str(tmp_path / "whole")
  assert cli.main(["train", "--out", whole] + args) == 0
  assert runner.read_metrics(out) == runner.read_metrics(whole)
  _, _, _, _, a = evaluation.restore_run(out)
  _, _, _, _, b = evaluation.restore_run(whole)
  for x, y in zip(params_of(a), params_of(b)):
    np.testing.assert_array_equal(x, y)
