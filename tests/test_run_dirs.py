"""Nothing lost in a run directory (issue 28, points 6-9 and 11).

``--overwrite`` deletes only what a run wrote, checked path by path; a torn
metrics line left by a killed process is dropped on resume (said once), and
an unreadable run file is named with its line; one writer per run
directory; a finished run resumed is left byte for byte; a run directory
that cannot be resumed as it is (checkpoints deleted, marker missing,
another command's run) is refused. Every refusal: one line, exit code 2,
nothing compiled, nothing changed on disk."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from jaxrl_align.agents import ppo
from jaxrl_align.host import cli
from jaxrl_align.host import files
from jaxrl_align.host import programs
from jaxrl_align.host import runner

# 4 updates of 2 envs x 8 steps, a checkpoint after each (the last 3 kept).
CONFIG = ppo.PPOConfig(env_id="CartPole-v1", total_timesteps=4 * 16,
                       num_envs=2, num_steps=8, hidden=(8,))
SETTINGS = runner.RunnerSettings(chunk=1, checkpoint_every=1, eval_episodes=1)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
  """``(finished run, run stopped after 2 of its 4 updates)``."""
  root = tmp_path_factory.mktemp("made")
  whole, part = str(root / "whole"), str(root / "part")
  runner.run("ppo", CONFIG, whole, SETTINGS, progress=False)
  runner.run("ppo", CONFIG, part, SETTINGS, progress=False, stop_after=2)
  return whole, part


@pytest.fixture
def no_compile(monkeypatch):
  """A refusal comes before any program is built."""

  def refuse(*args, **kwargs):
    raise AssertionError("a program was built before the refusal")

  monkeypatch.setattr(programs, "for_run", refuse)


def copy(source, tmp_path, name):
  target = str(tmp_path / name)
  shutil.copytree(source, target, symlinks=True)
  return target


def snapshot(root) -> dict[str, str]:
  """Every path under ``root``: a file's SHA-256, ``dir`` or ``link``."""
  seen = {}
  for directory, dirs, names in os.walk(root):
    for name in dirs + names:
      path = os.path.join(directory, name)
      if os.path.islink(path):
        seen[path] = "link:" + os.readlink(path)
      elif os.path.isdir(path):
        seen[path] = "dir"
      else:
        with open(path, "rb") as f:
          seen[path] = hashlib.sha256(f.read()).hexdigest()
  return seen


def run_cli(capsys, *argv):
  code = cli.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def refused(capsys, root, words, *argv):
  """``argv`` exits 2 with one line holding ``words``; nothing under
  ``root`` changed."""
  before = snapshot(root)
  code, _, err = run_cli(capsys, *argv)
  lines = err.strip().splitlines()
  assert code == 2 and "Traceback" not in err, (argv, err)
  assert len(lines) == 1 and words in lines[0], (argv, err)
  assert snapshot(root) == before, argv
  return lines[0]


def write(path, text="a user's file\n"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


# ------------------------------------------------ 6. --overwrite, path by path


def test_overwrite_checks_every_path_it_would_delete(made, tmp_path, capsys,
                                                     no_compile):
  run = copy(made[0], tmp_path, "run")
  outside = str(tmp_path / "thesis.tex")
  write(outside)
  for rel, named in (
      ("checkpoints/notes.txt", None), ("checkpoints/4/mine.txt", None),
      ("checkpoints/4/default/notes.txt", None),
      ("checkpoints/4/default/d/mine.txt", None), ("checkpoints/7/x", None),
      ("summary.json.tmp-draft", None), ("summary.json.tmp-12.bak", None),
      ("notes.json.tmp-12", None), ("tensorboard/notes.txt", None),
      ("model/1/_CHECKPOINT_METADATA", "(model)"),  # no ppo run's
      ("episode_seed0.gif.txt", None)):
    path = os.path.join(run, rel)
    write(path)
    refused(capsys, str(tmp_path), named or rel, "train", "--out", run,
            "--overwrite", "--total-timesteps", "32", "--num-envs", "2",
            "--num-steps", "8", "--no-progress")
    top = rel.split("/")[0]
    if top in ("tensorboard", "model"):
      shutil.rmtree(os.path.join(run, top))
    else:
      os.remove(path)
    if rel == "checkpoints/7/x":
      os.rmdir(os.path.join(run, "checkpoints", "7"))
  # A link is never followed, nor taken for the run's.
  os.symlink(outside, os.path.join(run, "checkpoints", "4", "link"))
  with pytest.raises(files.RunError, match="checkpoints/4/link"):
    files.prepare_run_dir(run, "ppo", overwrite=True)
  os.remove(os.path.join(run, "checkpoints", "4", "link"))
  # What the run wrote, even half-written, is replaced: an orbax temporary
  # checkpoint, a temporary file of ours, a video.
  shutil.copytree(os.path.join(run, "checkpoints", "4"),
                  os.path.join(run, "checkpoints", "5.orbax-checkpoint-tmp"))
  write(os.path.join(run, "summary.json.tmp-123"))
  write(os.path.join(run, "learning_curve.png.tmp-123.png"))
  write(os.path.join(run, "episode_seed0.gif"))
  files.prepare_run_dir(run, "ppo", overwrite=True)
  assert os.listdir(run) == [files.MARKER]
  assert open(outside).read() == "a user's file\n"


# ------------------------------------------ 7. torn lines, errors with lines


def test_a_torn_metrics_line_is_dropped_on_resume(made, tmp_path, capsys):
  part = copy(made[1], tmp_path, "part")
  # kill -9 while a line was half written, after the checkpoint at update 2
  with open(os.path.join(part, "metrics.jsonl"), "a") as f:
    f.write('{"update": 3, "seed": 0, "episode_return": 12.5, "policy_lo')
  # A reader (the curve) skips the torn line; resuming drops it, once.
  assert run_cli(capsys, "plot", part, "--out", tmp_path / "p.png")[0] == 0
  code, _, err = run_cli(capsys, "train", "--resume", part, "--no-progress")
  assert code == 0, err
  said = [l for l in err.splitlines() if "metrics.jsonl" in l]
  assert len(said) == 1 and "torn" in said[0], err
  assert files.read_metrics(part) == files.read_metrics(made[0])


def test_a_run_resumes_past_its_unreadable_checkpoint(made, tmp_path,
                                                      capsys):
  # The newest checkpoint cut short (a disk filled up): the resume starts
  # from the one before, and saving that step again replaces the
  # unreadable one (it failed: 'Checkpoint for step 2 already exists').
  part = copy(made[1], tmp_path, "part")
  for root, _, names in os.walk(os.path.join(part, "checkpoints", "2")):
    for name in names:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(os.path.getsize(f.name) // 3)
  code, _, err = run_cli(capsys, "train", "--resume", part, "--no-progress")
  assert code == 0 and "update 2 is unreadable" in err, err
  assert files.read_metrics(part) == files.read_metrics(made[0])


def test_unreadable_run_files_are_named_with_their_line(made, tmp_path,
                                                        capsys, no_compile):
  part = copy(made[1], tmp_path, "part")
  metrics = os.path.join(part, "metrics.jsonl")
  lines = open(metrics).read().splitlines(keepends=True)
  # A line that is not the last one is not a crash's: refused, named.
  write(metrics, lines[0] + "\n" + lines[1][:40] + "\n" + "".join(lines[2:]))
  refused(capsys, part, "metrics.jsonl: line 3", "train", "--resume", part)
  write(metrics, "".join(lines))
  config = os.path.join(part, "config.json")
  text = open(config).read()
  write(config, text.replace('"config": {', '"config": {,', 1))
  at = text[:text.index('"config": {')].count("\n") + 1
  refused(capsys, part, f"config.json: line {at}", "train", "--resume", part)
  write(config, text)
  whole = copy(made[0], tmp_path, "whole")
  summary = os.path.join(whole, "summary.json")
  write(summary, open(summary).read().replace("{", "{\n\n  ]", 1))
  refused(capsys, whole, "summary.json: line 3", "train", "--resume", whole)
  # The RLHF runs' files: preference pairs, samples, the tokenizer.
  from jaxrl_align.host.rlhf import corpus
  from jaxrl_align.host.rlhf import pair_files

  prefs = str(tmp_path / "prefs")
  files.prepare_run_dir(prefs, "prefs", overwrite=False).release()
  write(os.path.join(prefs, "summary.json"), "{}\n")
  with open(os.path.join(prefs, pair_files.FILE), "wb") as f:
    f.write(b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n')
  with pytest.raises(files.RunError, match="line 2 of prefs.jsonl"):
    pair_files.read(prefs)
  samples = os.path.join(prefs, "samples.jsonl")
  write(samples, '{"update": 2}\n{"update": "4"}\n')
  with pytest.raises(files.RunError, match="samples.jsonl: line 2"):
    files.read_lines(samples, ("update",))
  write(os.path.join(prefs, "tokenizer.json"), '{"version": "1.0",\n "x": [')
  with pytest.raises(files.RunError, match="tokenizer.json: .* line 2"):
    corpus.load_tokenizer(os.path.join(prefs, "tokenizer.json"))


# --------------------------------------------- 8. one writer per directory


HOLD = textwrap.dedent("""
    import sys, time
    from jaxrl_align.host import files
    held = [files.lock(path) for path in sys.argv[1:]]
    print("held", flush=True)
    time.sleep(300)
    """)


def test_one_writer_per_run_directory(made, tmp_path, capsys, no_compile):
  from jaxrl_align.rlhf import model as model_lib
  from jaxrl_align.rlhf import sft

  part = copy(made[1], tmp_path, "part")
  demo = str(tmp_path / "demo")
  files.prepare_run_dir(demo, "demo", overwrite=False).release()
  nested = copy(made[0], tmp_path / "demo", "ppo")
  sft_run = str(tmp_path / "sft")
  runner.create(sft.LEARNER, sft.SFTConfig(
      model=model_lib.TransformerConfig(vocab_size=8, max_len=4,
                                        num_layers=1, num_heads=1, width=4),
      steps=2, warmup_steps=0, eval_every=1), sft_run)
  holder = subprocess.Popen([sys.executable, "-c", HOLD, part, nested,
                             sft_run], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    root = str(tmp_path)
    for argv in (["train", "--resume", part],
                 ["train", "--out", part, "--overwrite", "--num-envs", "2"],
                 ["plot", part],
                 ["eval", part, "--video", "--episodes", "1"],
                 ["demo", "--out", demo, "--overwrite", "--seeds", "1",
                  "--rlhf-iterations", "0"],
                 ["rlhf", "sft", "--resume", sft_run]):
      line = refused(capsys, root, "another process", *argv)
      assert part in line or nested in line or sft_run in line, line
    with pytest.raises(files.RunError, match="another process"):
      files.prepare_run_dir(part, "ppo", overwrite=True)
  finally:
    holder.send_signal(signal.SIGKILL)  # the OS releases its locks
    holder.wait()
  files.lock(part).release()
  files.prepare_run_dir(demo, "demo", overwrite=True).release()


# -------------------------------------------- 9. a finished run, untouched


def test_a_finished_run_resumed_is_left_byte_for_byte(made, tmp_path, capsys,
                                                      no_compile):
  whole = copy(made[0], tmp_path, "whole")
  before = snapshot(whole)
  code, out, err = run_cli(capsys, "train", "--resume", whole,
                           "--no-progress")
  assert code == 0 and "PPO on CartPole-v1" in out, err
  assert "finished" in err and len(err.strip().splitlines()) == 1, err
  assert snapshot(whole) == before
  result = runner.run("ppo", CONFIG, whole, resume=True, progress=False)
  assert result.finished and result.summary == json.load(
      open(os.path.join(whole, "summary.json")))
  assert "finished" in capsys.readouterr().err
  assert snapshot(whole) == before
  # What a finished run cannot use is refused, not ignored.
  for extra, words in ((["--learning-rate", "1e-4"], "--learning-rate"),
                       (["--tensorboard"], "--tensorboard")):
    refused(capsys, whole, words, "train", "--resume", whole, *extra)
  for argv in (["rlhf", "rm", "--resume", whole, "--sft", whole],
               ["rlhf", "sft", "--resume", whole, "--overwrite"]):
    refused(capsys, whole, "--resume", *argv)


# ------------------------------- 11. what cannot be resumed as it is, refused


def test_a_run_that_cannot_be_resumed_as_it_is_is_refused(made, tmp_path,
                                                          capsys, no_compile):
  part = copy(made[1], tmp_path, "part")
  for step in os.listdir(os.path.join(part, "checkpoints")):
    shutil.rmtree(os.path.join(part, "checkpoints", step))
  refused(capsys, part, "no checkpoint", "train", "--resume", part)
  shutil.rmtree(os.path.join(part, "checkpoints"))
  refused(capsys, part, "no checkpoint", "train", "--resume", part)
  part = copy(made[1], tmp_path, "unmarked")
  os.remove(os.path.join(part, files.MARKER))
  refused(capsys, part, files.MARKER, "train", "--resume", part)
  # Another command's run directory is refused, --overwrite or not.
  whole = copy(made[0], tmp_path, "whole")
  refused(capsys, whole, "a ppo run", "demo", "--out", whole, "--overwrite",
          "--seeds", "1", "--rlhf-iterations", "0")
  for kind in ("demo", "prefs", "sft", "rlhf-ppo"):
    with pytest.raises(files.RunError, match="a ppo run"):
      files.prepare_run_dir(whole, kind, overwrite=True)
  from jaxrl_align.agents import trpo

  runner.create(trpo.LEARNER, trpo.TRPOConfig(  # the same command's: replaced
      env_id="CartPole-v1", total_timesteps=32, num_envs=2, num_steps=8),
      whole, overwrite=True)
  assert files.read_run(whole)["algo"] == "trpo"
