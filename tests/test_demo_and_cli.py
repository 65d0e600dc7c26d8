"""The demonstration (the README's main job) and the command line."""

import json
import os

import jax
import numpy as np
import pytest

from jaxrl_align.host import cli
from jaxrl_align import primer


def test_time_limit_demo_shows_the_truncation_bug():
  correct, wrong = primer.time_limit_advantages()
  assert float(correct) < 1e-4
  assert float(wrong) > 10.0


@pytest.mark.parametrize("algo", ["trpo", "ppo"])
def test_bandit_learns_over_seeds(algo):
  keys = jax.random.split(jax.random.key(0), 4)
  m = jax.jit(jax.vmap(lambda k: primer.train_bandit(k, algo=algo,
                                                   num_updates=40)))(keys)
  first = np.asarray(m.mean_reward[:, :3]).mean(1)
  last = np.asarray(m.mean_reward[:, -5:]).mean(1)
  optimal = np.asarray(m.optimal_reward).mean(1)
  # Every seed closes at least 85% of its gap to the optimal policy.
  assert np.all(last - first > 0.85 * (optimal - first)), (first, last, optimal)
  if algo == "trpo":
    assert float(np.max(m.kl)) <= 0.02
    assert float(np.mean(m.accepted)) > 0.9


def test_bandit_is_reproducible_bit_for_bit():
  run = jax.jit(lambda k: primer.train_bandit(k, algo="trpo", num_updates=5))
  a, b = run(jax.random.key(3)), run(jax.random.key(3))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_cli_demo_trains_both_learners_and_plots(tmp_path, capsys):
  out = str(tmp_path / "demo")
  assert cli.main(["demo", "--seeds", "2", "--total-timesteps", "2048",
                   "--out", out, "--no-progress", "--rlhf-iterations",
                   "0"]) == 0
  text = capsys.readouterr().out
  assert "PPO on CartPole-v1, 2 seeds" in text
  assert "TRPO on CartPole-v1, 2 seeds" in text
  assert os.path.getsize(os.path.join(out, "learning_curves.png")) > 1000
  for algo in ("ppo", "trpo"):
    assert os.path.exists(os.path.join(out, algo, "summary.json"))


def test_cli_train_eval_plot(tmp_path, capsys):
  out = str(tmp_path / "run")
  args = ["train", "--algo", "trpo", "--env", "CartPole-v1", "--seeds", "2",
          "--total-timesteps", "512", "--num-envs", "4", "--num-steps",
          "32", "--max-kl", "0.02", "--hidden", "16", "16",
          "--normalize-obs", "true", "--eval-episodes", "2", "--out", out,
          "--no-progress"]
  assert cli.main(args) == 0
  assert "TRPO on CartPole-v1, 2 seeds" in capsys.readouterr().out
  stored = json.load(open(os.path.join(out, "config.json")))["config"]
  assert stored["max_kl"] == 0.02 and stored["hidden"] == [16, 16]
  assert stored["normalize_obs"] is True and stored["num_steps"] == 32
  # An existing run is not overwritten by accident.
  assert cli.main(args) == 2
  assert "--overwrite" in capsys.readouterr().err
  assert cli.main(["eval", out, "--episodes", "2"]) == 0
  assert "checkpoint at update 4" in capsys.readouterr().out
  png = str(tmp_path / "curves.png")
  assert cli.main(["plot", out, out, "--out", png]) == 0
  assert os.path.getsize(png) > 1000
  # Resuming a finished run with a changed static field is refused.
  assert cli.main(["train", "--resume", out, "--num-envs", "8"]) == 2
  assert "--num-envs: 4 (stored) -> 8" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--learning-rat", "1e-3"], "unknown option --learning-rat (did you "
                                 "mean --learning-rate?)"),
    (["--env", "CartPole-v9"], "Unknown `env_id` 'CartPole-v9'; known ids: "
                               "CartPole-v1, Acrobot-v1"),
    (["--gamma", "1.5"], "gamma"),
    (["--num-minibatches", "3"], "--num-minibatches (3) must divide"),
    (["--algo", "ppo", "--max-kl", "0.1"], "--max-kl is not a PPO field"),
    (["--algo", "trpo", "--clip-eps", "0.1"], "--clip-eps is not a TRPO"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--chunk", "7"], "--chunk must divide the number of updates"),
    (["--devices", "64"], "--devices 64: there are "),
    (["--devices", "0"], "--devices must be >= 1, got 0."),
    # one run over several processes: the options go together
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2"],
     "--coordinator HOST:PORT, --num-processes and --process-id go "
     "together"),
    (["--coordinator", "127.0.0.1", "--num-processes", "2", "--process-id",
      "0"], "--coordinator '127.0.0.1': expected HOST:PORT"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id must be in 0..1, got 2."),
    (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"],
     "--num-processes must be >= 1, got 0."),
    (["--coordinator", "auto", "--process-id", "1"],
     "--coordinator auto finds the processes on its own"),
])
def test_cli_rejects_bad_input_before_compiling(tmp_path, capsys, argv,
                                                message):
  out = str(tmp_path / "never")
  assert cli.main(["train", "--out", out] + argv) == 2
  assert message in capsys.readouterr().err
  # Nothing was written: the config was refused before any work.
  assert not os.path.exists(os.path.join(out, "config.json"))


@pytest.mark.parametrize("argv, message", [
    (["--coordinator", "auto", "--process-id", "1"],
     "--coordinator auto finds the processes on its own"),
    (["--coordinator=127.0.0.1:1", "--num-processes=2", "--process-id=0"],
     "could not join the job (jax.distributed.initialize() must be called "
     "before any JAX calls"),  # this test process has started JAX
])
def test_entry_point_joins_a_job_first_or_says_why_not(tmp_path, capsys,
                                                       argv, message,
                                                       monkeypatch):
  from jaxrl_align.host import launch

  monkeypatch.delenv("XLA_FLAGS", raising=False)  # launch.main sets it

  out = str(tmp_path / "never")
  assert launch.job_options(["eval", "--coordinator", "h:1"]) == {}
  assert launch.main(["train", "--out", out] + argv) == 2
  err = capsys.readouterr().err
  assert message in err and err.count("\n") == 1, err
  assert not os.path.exists(out)


def test_entry_point_starts_a_local_job_only_when_asked():
  """``--processes N`` (N >= 2) makes ``launch`` start a job on this
  machine; not with job options (the command refuses a mismatch), a
  value argparse must name, help, or another subcommand."""
  from jaxrl_align.host import launch

  local = launch.local_processes
  assert local(["train", "--processes", "2"]) == 2
  assert local(["train", "--processes=3", "--seeds", "3"]) == 3
  assert local(["train", "--processes", "1"]) is None
  assert local(["train", "--processes", "two"]) is None
  assert local(["train", "--processes"]) is None
  assert local(["train", "-h", "--processes", "2"]) is None
  assert local(["train", "--processes", "2", "--coordinator", "h:1"]) is None
  assert local(["eval", "--processes", "2"]) is None
  assert local(["train", "--seeds", "2"]) is None


def test_a_local_job_ends_its_copies_when_process_0_fails(monkeypatch,
                                                         tmp_path):
  """A defect in process 0 (an uncaught exception) kills the copies it
  started before its traceback, instead of leaving them waiting for it."""
  from jaxrl_align.host import launch

  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
  jobs = []
  start = launch.start_local_job
  monkeypatch.setattr(launch, "start_local_job",
                      lambda *a: jobs.append(start(*a)) or jobs[-1])

  def failing(argv):
    assert "--process-id" in argv
    assert [p.poll() for p in jobs[0][0].procs] == [None]  # still running
    raise RuntimeError("a defect")

  monkeypatch.setattr(launch, "_main", failing)
  with pytest.raises(RuntimeError, match="a defect"):
    launch.main(["train", "--processes", "2", "--out",
                 str(tmp_path / "run")])
  (proc,) = jobs[0][0].procs
  assert proc.returncode is not None  # ended and reaped
  assert not os.path.exists(tmp_path / "run")


def test_cli_help_lists_every_field_with_its_default(capsys):
  with pytest.raises(SystemExit):
    cli.main(["train", "--help"])
  text = " ".join(capsys.readouterr().out.split())
  for name, entry in cli.config_fields().items():
    assert "--" + name.replace("_", "-") in text, name
  assert "[default: preset, else PPO 0.00025, TRPO 0.001]" in text
  assert "[default: preset, else 64 64]" in text
  assert "*static* conjugate-gradient iterations" in text


def test_cli_rejects_bad_values(capsys):
  assert cli.main(["demo", "--seeds", "0"]) == 2
  assert "--seeds" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["nonsense"])
  with pytest.raises(ValueError, match="algo"):
    primer.train_bandit(jax.random.key(0), algo="a2c")


def test_entry_point_makes_one_cpu_device_per_core_unless_the_count_is_set(
    monkeypatch):
  from jaxrl_align.host import launch

  flag = "--xla_force_host_platform_device_count"
  monkeypatch.setattr(launch, "cores", lambda: 4)
  env = {}
  launch.one_device_per_core(env)
  assert env == {"XLA_FLAGS": f"{flag}=4"}
  env = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
  launch.one_device_per_core(env)
  assert env["XLA_FLAGS"] == f"--xla_cpu_enable_fast_math=false {flag}=4"
  env = {"XLA_FLAGS": f"{flag}=1"}  # the user's count wins
  launch.one_device_per_core(env)
  assert env == {"XLA_FLAGS": f"{flag}=1"}
  monkeypatch.setattr(launch, "cores", lambda: 1)
  env = {}
  launch.one_device_per_core(env)
  assert env == {}


@pytest.mark.parametrize("size, have, want", [
    (8, 2, 2), (8, 4, 4), (6, 4, 3), (7, 4, 1), (1, 8, 1), (2, 1, 1),
    (0, 2, 1), (12, 16, 12)])
def test_spread_is_the_largest_divisor_within_the_devices(size, have, want):
  from jaxrl_align.host import settings

  assert settings.spread(size, have) == want


def test_train_spreads_seeds_over_the_devices_by_default():
  """Seeds over as many devices as divide them; one seed (splitting its
  environments cost 5x here), a host-stepped task: one device; --shard
  data: as many as the batch divides over."""
  from jaxrl_align.agents import ppo
  from jaxrl_align.host import runner
  from jaxrl_align.host import settings

  learner = runner.learner_of("ppo")
  cartpole = ppo.PPOConfig(env_id="CartPole-v1", num_envs=8)
  default = lambda config, have, **kw: settings.default_devices(  # noqa
      learner, config, runner.RunnerSettings(**kw), have)
  assert default(cartpole, 2, seeds=8) == 2
  assert default(cartpole, 8, seeds=6) == 6
  assert default(cartpole, 4, seeds=6) == 3
  assert default(cartpole, 2, seeds=1) == 1
  assert default(cartpole, 4, seeds=1, shard="data") == 4
  assert default(ppo.PPOConfig(env_id="CartPole-v1", num_envs=6), 4,
                 shard="data") == 3
  assert default(ppo.PPOConfig(env_id="InvertedPendulum-v5"), 2,
                 seeds=4) == 1  # stepped on the host: one device


def test_the_command_uses_every_core_by_default(tmp_path):
  """``jaxrl-align train`` started plainly (no XLA_FLAGS) makes one CPU
  device per core and records the seeds spread over them; ``--devices 1``
  opts out."""
  import subprocess
  import sys

  from jaxrl_align.host import launch
  from jaxrl_align.host import settings

  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  recorded = {}
  for name, extra in (("auto", []), ("one", ["--devices", "1"])):
    out = str(tmp_path / name)
    done = subprocess.run(
        [sys.executable, "-m", "jaxrl_align", "train", "--env",
         "CartPole-v1", "--seeds", "4", "--total-timesteps", "512",
         "--out", out, "--no-progress", *extra],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(os.path.join(out, "config.json")) as f:
      recorded[name] = json.load(f)["runner"]["devices"]
  assert recorded == {"auto": settings.spread(4, launch.cores()), "one": 1}
