"""Refused up front, in one line, naming what the user gave (issue 28,
points 10, 12, 13 and 14).

Every refusal: one line on stderr, exit code 2, before anything compiles or
trains, no traceback, nothing created or changed on disk. The classes: an
option's value out of its range (zero, negative, larger than JAX's 32-bit
counts, an empty string), named by its flag; a value checked only deep
inside (an internal argument's name, after training); a run's record edited
by hand into another shape, named by its file and field; a registered
Gymnasium id whose package is missing; a preference line missing a field
or of the wrong type; an input run made from another run than the input of
its kind (provenance, not shapes); a damaged checkpoint; a directory this
process may not read; a second Ctrl-C.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from jaxrl_align.agents import ppo
from jaxrl_align.host import cli
from jaxrl_align.host import files
from jaxrl_align.host import programs
from jaxrl_align.host import runner
from jaxrl_align.host.rlhf import _common
from jaxrl_align.host.rlhf import pair_files
from jaxrl_align.host.rlhf import rl_stages

HUGE = str(10 ** 23)
TINY = ["--total-timesteps", "32", "--num-envs", "2", "--num-steps", "8",
        "--hidden", "8", "--no-progress"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
  """A finished one-seed run: 2 updates, a checkpoint after each."""
  out = str(tmp_path_factory.mktemp("made") / "run")
  runner.run("ppo", ppo.PPOConfig(env_id="CartPole-v1", total_timesteps=32,
                                  num_envs=2, num_steps=8, hidden=(8,)),
             out, runner.RunnerSettings(chunk=1, checkpoint_every=1,
                                        eval_episodes=1), progress=False)
  return out


@pytest.fixture
def no_compile(monkeypatch):
  """A refusal comes before any program is built."""

  def refuse(*args, **kwargs):
    raise AssertionError("a program was built before the refusal")

  monkeypatch.setattr(programs, "for_run", refuse)


def snapshot(root) -> dict[str, bytes]:
  seen = {}
  for directory, dirs, names in os.walk(root):
    for name in dirs + names:
      path = os.path.join(directory, name)
      seen[path] = b"dir" if os.path.isdir(path) else open(path, "rb").read()
  return seen


def refused(capsys, root, words, *argv) -> str:
  """``argv`` exits 2 with one line holding each of ``words``; nothing
  under ``root`` changed."""
  before = snapshot(root)
  try:
    code = cli.main([str(a) for a in argv])
  except SystemExit as e:  # argparse's refusal of what is not a number
    code = e.code
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  assert code == 2 and "Traceback" not in err, (argv, err)
  assert len(lines) == 1, (argv, err)
  for word in [words] if isinstance(words, str) else words:
    assert word in lines[0], (argv, word, err)
  assert snapshot(root) == before, argv
  return lines[0]


# ------------------- 13, 14. options: range and flag name, before any work


@pytest.mark.timeout(120)  # a count's divisors were looped over: it hung
@pytest.mark.parametrize("argv, flag", [
    (["train", "--out", "@new", "--seed", HUGE], "--seed"),
    (["train", "--out", "@new", "--seeds", HUGE], "--seeds"),
    (["train", "--out", "@new", "--total-timesteps", HUGE],
     "--total-timesteps"),
    (["train", "--out", "@new", "--hidden", "8", HUGE], "--hidden"),
    (["train", "--out", "@new", "--keep", HUGE], "--keep"),
    (["train", "--out", "@new", "--checkpoint-every", "0"],
     "--checkpoint-every"),
    (["train", "--out", "@new", "--chunk", "0"], "--chunk"),
    (["train", "--out", "@new", "--env", ""], "--env"),
    (["train", "--out", ""], "--out"),
    (["train", "--resume", ""], "--resume"),
    (["train", "--out", "@new", "--num-processes", HUGE, "--process-id", "0",
      "--coordinator", "h:1"], "--num-processes"),
    (["eval", "@run", "--episodes", HUGE], "--episodes"),
    (["eval", ""], "RUN_DIR"),
    (["plot", "@run", "--out", ""], "--out"),
    (["plot", "@run", "--metric", ""], "--metric"),
    (["demo", "--out", "@new", "--seeds", HUGE], "--seeds"),
    (["demo", "--out", ""], "--out"),
    (["demo", "--out", "@new", "--rlhf-iterations", "-1"],
     "--rlhf-iterations"),
    (["rlhf", "sft", "--out", "@new", "--max-len", "1"], "--max-len"),
    (["rlhf", "sft", "--out", "@new", "--steps", HUGE], "--steps"),
    (["rlhf", "sft", "--out", "@new", "--seed", HUGE], "--seed"),
    (["rlhf", "sft", "--out", "@new", "--warmup-steps", "-1"],
     "--warmup-steps"),
    (["rlhf", "sft", "--resume", ""], "--resume"),
    (["rlhf", "prefs", "--out", "@new", "--sft", ""], "--sft"),
    (["rlhf", "rm", "--out", "@new", "--sft", "@run", "--prefs", "@run",
      "--epochs", HUGE], "--epochs"),
    (["rlhf", "ppo", "--out", "@new", "--sft", "@run", "--rm", "@run",
      "--kl-coef", "-1"], "--kl-coef"),
    (["rlhf", "trpo", "--out", "@new", "--sft", "@run", "--rm", "@run",
      "--seed", HUGE], "--seed"),
])
def test_an_option_out_of_range_is_refused_by_its_flag(made, tmp_path, capsys,
                                                       no_compile, argv,
                                                       flag):
  run = shutil.copytree(made, str(tmp_path / "run"))
  argv = [str(tmp_path / a[1:]) if a.startswith("@") else a for a in argv]
  if argv[:2] == ["train", "--out"] and argv[2]:  # else a valid config:
    argv[3:3] = TINY  # the value given after it is the one refused
  line = refused(capsys, tmp_path, flag, *argv)
  assert not os.path.exists(tmp_path / "new"), line
  # the name of the option, not of the argument it became
  assert "`" not in line and "Config." not in line, line
  assert os.path.isdir(run)


def test_more_devices_for_a_task_stepped_on_the_host_is_refused(
    tmp_path, capsys, no_compile):
  """One process steps a host-stepped task on one device; more cores come
  from spreading its seeds over processes (test_parallel.py), and the
  refusal says so."""
  line = refused(capsys, tmp_path, [
      "InvertedPendulum-v5 steps its environments on the host, on one device "
      "of each process: --devices 2 needs 2 processes (--processes 2, which "
      "spreads the seeds over them); this job has 1."],
      "train", "--env", "InvertedPendulum-v5", "--seeds", "2", "--devices",
      "2", "--out", tmp_path / "new", *TINY)
  assert not os.path.exists(tmp_path / "new"), line
  # --processes starts processes: the command does, not a call in-process
  refused(capsys, tmp_path, "--processes 2 starts processes: run it as the "
          "jaxrl-align command", "train", "--env", "InvertedPendulum-v5",
          "--processes", "2", "--out", tmp_path / "new", *TINY)
  refused(capsys, tmp_path, "--processes starts its own job on this machine: "
          "drop --coordinator, --num-processes and --process-id.", "train",
          "--processes", "2", "--coordinator", "127.0.0.1:1",
          "--num-processes", "2", "--process-id", "0", "--out",
          tmp_path / "new", *TINY)
  assert not os.path.exists(tmp_path / "new")


def test_eval_checks_the_seed_index_before_evaluating(made, capsys,
                                                      no_compile):
  # It was refused after the evaluation's 16 episodes.
  refused(capsys, made, ["--seed-index 5", "1 seed"], "eval", made,
          "--video", "--seed-index", "5")


# ------------------------------------------- 12. a run's record, by hand


EDITS = {
    "runner": lambda run: run.pop("runner"),
    "config": lambda run: run.update(config=[1, 2]),
    "config.num_envs": lambda run: run["config"].update(num_envs="2"),
    "config.bogus": lambda run: run["config"].update(bogus=1),
    "seed": lambda run: run["runner"].update(seed=10 ** 23),
    "chunk": lambda run: run["runner"].update(chunk=0),
    "units": lambda run: run.update(units=5),
    "algo": lambda run: run.pop("algo"),
}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_a_hand_edited_record_is_refused_naming_file_and_field(
    made, tmp_path, capsys, no_compile, field):
  # Each gave a KeyError, AttributeError, TypeError or OverflowError.
  run = shutil.copytree(made, str(tmp_path / "run"))
  os.remove(os.path.join(run, "summary.json"))  # resumable
  path = os.path.join(run, "config.json")
  record = json.load(open(path))
  EDITS[field](record)
  with open(path, "w") as f:
    json.dump(record, f)
  for argv in (["train", "--resume", run], ["eval", run],
               ["plot", run, "--out", tmp_path / "fig.png"]):
    refused(capsys, tmp_path, [path, field.split(".")[-1]], *argv)


# ---------------------------- 12. an environment whose package is missing


@pytest.mark.parametrize("env_id, package", [
    ("Hopper-v2", "gymnasium-robotics"),  # an ImportError
    ("GymV26Environment-v0", "shimmy")])
def test_an_environment_whose_package_is_missing_is_named(
    tmp_path, capsys, no_compile, env_id, package):
  refused(capsys, tmp_path, [env_id, package], "train", "--out",
          tmp_path / "new", "--env", env_id, *TINY)
  assert not os.path.exists(tmp_path / "new")


# ------------------------------------------- 12. preference lines, checked


def prefs_run(path, records, sft_run="/elsewhere/sft"):
  """A finished prefs run directory holding ``records``."""
  files.prepare_run_dir(path, "prefs", overwrite=False).release()
  with open(os.path.join(path, "summary.json"), "w") as f:
    json.dump({"sft_run": sft_run}, f)
  pair_files.write(path, records)
  return path


PAIR = pair_files.record([1, 2], [3], [4], prompt="ab", chosen="c",
                         rejected="d", annotator=0, gold_chosen=1.0,
                         gold_rejected=0.5, split="train")


@pytest.mark.parametrize("edit, words", [
    (lambda r: r.pop("split"), "has no `split`"),
    (lambda r: r.update(split="test"), "`split` must be train or valid"),
    (lambda r: r.update(gold_chosen="1"), "`gold_chosen` must be a finite"),
    (lambda r: r.update(gold_rejected=None), "`gold_rejected` must be"),
    (lambda r: r.pop("prompt"), "has no `prompt`"),
])
def test_preference_lines_are_checked_field_by_field(tmp_path, edit, words):
  # A missing split was a KeyError in `rlhf rm`, a string score a TypeError.
  bad = dict(PAIR)
  edit(bad)
  path = prefs_run(str(tmp_path / "prefs"), [PAIR, bad, PAIR])
  with pytest.raises(files.RunError) as e:
    pair_files.read(path)
  assert "line 2 of prefs.jsonl" in str(e.value) and words in str(e.value)
  assert pair_files.read(prefs_run(str(tmp_path / "good"), [PAIR])) == [PAIR]


# ------------------------------------------ 10. provenance, not shapes


def fake_sft(path, tokenizer_text):
  """A finished sft run directory of a tiny model: its record, a
  tokenizer file and a model (products hashed, never loaded here)."""
  from jaxrl_align.rlhf import model as model_lib
  from jaxrl_align.rlhf import sft

  config = sft.SFTConfig(model=model_lib.TransformerConfig(
      vocab_size=300, max_len=128, num_layers=1, num_heads=1, width=8),
      steps=2, warmup_steps=0, eval_every=1)
  runner.create(sft.LEARNER, config, path, record={"run_settings": {
      "valid_fraction": 0.1, "seed": 0, "num_samples": 1, "devices": 1}})
  for name, text in (("summary.json", "{}"),
                     (_common.TOKENIZER, tokenizer_text),
                     ("model/2/weights", "weights")):
    os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
    with open(os.path.join(path, name), "w") as f:
      f.write(text)
  return path


def fake_rm(path, sft_run, identity):
  """A finished rm run directory recording ``sft_run`` (and its
  ``identity``, unless None: a run made before identities were
  recorded)."""
  from jaxrl_align.rlhf import reward_model

  model = runner.load_config(sft_run)[1].model
  record = {"sft_run": sft_run, "prefs_run": "/elsewhere/prefs",
            "run_settings": {"dev_fraction": 0.125, "seed": 0, "devices": 1}}
  if identity is not None:
    record[_common.IDENTITIES] = {"sft": identity, "prefs": "0" * 64}
  runner.create(reward_model.LEARNER, reward_model.RMConfig(
      model=model, train_pairs=8), path, record=record)
  with open(os.path.join(path, "summary.json"), "w") as f:
    f.write("{}")
  return path


def test_an_input_made_from_another_run_is_refused(tmp_path, capsys,
                                                    monkeypatch, no_compile):
  # The same shapes, another tokenizer: accepted before (only a shape
  # mismatch was refused), so token ids were read with the wrong strings.
  a = fake_sft(str(tmp_path / "sft_a"), '{"vocab": "a"}')
  b = fake_sft(str(tmp_path / "sft_b"), '{"vocab": "b"}')
  copy = shutil.copytree(a, str(tmp_path / "sft_a_copy"))
  rm = fake_rm(str(tmp_path / "rm"), a, _common.identity(a, "sft", "--sft"))
  old = fake_rm(str(tmp_path / "old_rm"), a, None)
  new = tmp_path / "new"
  for algo in ("ppo", "trpo"):
    refused(capsys, tmp_path, ["--rm", "was made from the sft run", a,
                               "not from --sft", b],
            "rlhf", algo, "--out", new, "--sft", b, "--rm", rm)
    refused(capsys, tmp_path, ["--rm", "records no identity"],
            "rlhf", algo, "--out", new, "--sft", a, "--rm", old)
  # preferences sampled from another sft run than the reward model's
  prefs = prefs_run(str(tmp_path / "prefs"), [PAIR], sft_run=a)
  summary = os.path.join(prefs, "summary.json")
  with open(summary, "w") as f:
    json.dump({"sft_run": a, _common.IDENTITIES: {
        "sft": _common.identity(a, "sft", "--sft")}}, f)
  refused(capsys, tmp_path, ["--prefs", "not from --sft", b],
          "rlhf", "rm", "--out", new, "--sft", b, "--prefs", prefs)
  # A copy of the run it was made from is that run: accepted (on to the
  # data, which these fakes do not hold).
  reached = []

  def build_data(*args, **kwargs):
    reached.append(args[:2])
    raise files.RunError("reached the data")

  monkeypatch.setattr(rl_stages, "build_data", build_data)
  refused(capsys, tmp_path, "reached the data", "rlhf", "ppo", "--out", new,
          "--sft", copy, "--rm", rm)
  assert reached == [(copy, rm)]


def test_a_run_whose_input_was_replaced_is_not_resumed(tmp_path):
  a = fake_sft(str(tmp_path / "sft"), '{"vocab": "a"}')
  stored = {"sft_run": a, _common.IDENTITIES: {
      "sft": _common.identity(a, "sft", "--sft")}}
  _common.check_unchanged("ppo-run", stored, {
      "sft": _common.identity(a, "sft", "--sft")})
  with open(os.path.join(a, _common.TOKENIZER), "w") as f:
    f.write('{"vocab": "another"}')  # another run in its place
  with pytest.raises(files.RunError, match="now holds another run"):
    _common.check_unchanged("ppo-run", stored, {
        "sft": _common.identity(a, "sft", "--sft")})


# -------------------------------------- 14. what a user reads when it fails


def run_command(*argv, env=None, user=None):
  """``jaxrl-align argv`` in a subprocess: ``(exit code, stderr)``."""
  prefix = (["setpriv", f"--reuid={user}", f"--regid={user}",
             "--clear-groups"] if user is not None else [])
  done = subprocess.run(prefix + [sys.executable, "-m", "jaxrl_align",
                                  *map(str, argv)],
                        capture_output=True, text=True, timeout=300,
                        env=env)
  return done.returncode, done.stderr


def test_a_damaged_checkpoint_is_one_short_line(made, tmp_path):
  # It was one line of 9 KB (TensorStore's spec) after dozens of
  # "Event loop is closed" tracebacks.
  run = shutil.copytree(made, str(tmp_path / "run"))
  for directory, _, names in os.walk(os.path.join(run, "checkpoints")):
    for name in names:
      if os.path.basename(directory) == "d":
        with open(os.path.join(directory, name), "wb") as f:
          f.write(b"damaged")
  code, err = run_command("eval", run, "--episodes", "1")
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1, err[-2000:]
  assert os.path.join(run, "checkpoints") in lines[0] and (
      "updates 2, 1" in lines[0]) and len(lines[0]) < 300, lines


def test_permission_denied_is_said(made, tmp_path):
  # It said "not a run directory".
  if os.geteuid() == 0 and shutil.which("setpriv") is None:
    pytest.skip("running as root without setpriv: nothing is denied")
  user = 65534 if os.geteuid() == 0 else None  # root reads everything
  top = tempfile.mkdtemp()  # outside pytest's directories (owner-only)
  try:
    os.chmod(top, 0o777)  # the user's HOME too
    run = shutil.copytree(made, os.path.join(top, "run"))
    os.chmod(run, 0o700 if user is not None else 0o000)
    env = dict(os.environ, HOME=top, MPLCONFIGDIR=top)
    for argv in (["eval", run], ["rlhf", "rm", "--out", os.path.join(
        top, "new"), "--sft", run, "--prefs", run]):
      code, err = run_command(*argv, env=env, user=user)
      lines = err.strip().splitlines()
      assert code == 2 and len(lines) == 1, err[-2000:]
      assert "permission denied" in lines[0] and run in lines[0], lines
    assert not os.path.exists(os.path.join(top, "new"))
  finally:
    os.chmod(os.path.join(top, "run"), 0o755)
    shutil.rmtree(top)


# --------------------------------------------------- 12. a second Ctrl-C


SECOND_CTRL_C = textwrap.dedent("""
    import os, signal, sys, time
    from jaxrl_align.host import monitor
    monitor.QUIET_SECOND_CTRL_C = True  # as the command sets it
    with monitor.Interrupt() as interrupt:
      os.kill(os.getpid(), signal.SIGINT)
      while not interrupt.requested:
        time.sleep(0.01)
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(30)
    print("not reached")
    """)


def test_a_second_ctrl_c_stops_at_once_quietly():
  done = subprocess.run([sys.executable, "-c", SECOND_CTRL_C],
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 130 and "not reached" not in done.stdout
  lines = [line for line in done.stderr.splitlines() if line.strip()]
  assert "Traceback" not in done.stderr and len(lines) == 2, done.stderr
  assert lines[0].startswith("Ctrl-C: stopping after this chunk")
  assert lines[1].startswith("Ctrl-C again: stopped at once; the last "
                             "checkpoint is intact")


def test_a_second_ctrl_c_while_training_exits_quietly(tmp_path):
  # 29 tracebacks (asyncio, orbax) followed "the last checkpoint is intact".
  out = str(tmp_path / "run")
  proc = subprocess.Popen(
      [sys.executable, "-m", "jaxrl_align", "train", "--out", out,
       "--total-timesteps", str(3000 * 64), "--num-envs", "4", "--num-steps",
       "16", "--hidden", "16", "--chunk", "1", "--checkpoint-every", "1",
       "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  while proc.poll() is None and not files.checkpoint_steps(
      os.path.join(out, "checkpoints")):  # training, a checkpoint saved
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  time.sleep(0.1)  # two at once may be delivered as one
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
  assert "the last checkpoint is intact" in err.strip().splitlines()[-1]
