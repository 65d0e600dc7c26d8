"""The command line under random use (hypothesis): commands, options and
values, good and bad, in scratch directories that hold a user's files and
run directories, finished and damaged (a torn metrics line, no marker,
checkpoints deleted, a user's file among the checkpoints); values zero,
negative, empty or past JAX's 32-bit counts among them. For every case:
exit code 0 or 2, no traceback, a refusal in one line naming the option
(not a config class's field), nothing outside the run directory the
command names is created, changed or removed (a ``plot`` also writes the
PNG it was asked for), a user's file is never touched, a finished run is
left byte for byte unless replaced with ``--overwrite``, and a refusal
changes nothing at all."""

import contextlib
import hashlib
import io
import os
import shutil

import conftest
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from jaxrl_align.host import cli

TINY = ["--num-envs", "2", "--num-steps", "8", "--hidden", "8",
        "--eval-episodes", "1", "--no-progress"]


@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
  """A finished tiny run, copied into each case's scratch directory."""
  out = str(tmp_path_factory.mktemp("made") / "run")
  assert cli.main(["train", "--out", out, "--total-timesteps", "32"]
                  + TINY) == 0
  return out


def _snapshot(root: str) -> dict[str, str]:
  seen = {}
  for directory, dirs, names in os.walk(root):
    for name in names + dirs:
      path = os.path.join(directory, name)
      if os.path.isfile(path):
        with open(path, "rb") as f:
          seen[path] = hashlib.sha256(f.read()).hexdigest()
      else:
        seen[path] = "dir"
  return seen


PLACES = ["new", "run", "mine", "notes.tex", "missing/deeper", "mine/sub",
          "torn", "nomarker", "nockpt", "foreign"]
# A user's files, planted in every case's scratch directory.
USER_FILES = ("notes.tex", "mine/notes.tex", "mine/sub/data.csv",
              "foreign/checkpoints/notes.txt")


def _damaged_runs(scratch: str) -> None:
  """Copies of the finished run in ``scratch/run``, each damaged as a
  crash or a user may leave it: a torn last metrics line (unfinished), no
  marker, checkpoints deleted (unfinished), a user's file among the
  checkpoints."""
  for name in ("torn", "nomarker", "nockpt", "foreign"):
    shutil.copytree(os.path.join(scratch, "run"), os.path.join(scratch, name))
  for name in ("torn", "nockpt"):
    os.remove(os.path.join(scratch, name, "summary.json"))
  with open(os.path.join(scratch, "torn", "metrics.jsonl"), "a") as f:
    f.write('{"update": 3, "seed": 0, "episode_ret')
  os.remove(os.path.join(scratch, "nomarker", ".jaxrl-align-run"))
  shutil.rmtree(os.path.join(scratch, "nockpt", "checkpoints"))
HUGE = str(10 ** 23)  # past JAX's 32-bit counts: an OverflowError once
VALUES = {
    "--learning-rate": ["1e-3", "-1", "inf", "nan", "abc", "1e30"],
    "--total-timesteps": ["32", "48", "0", "1000"],
    "--num-envs": ["2", "0", "x", HUGE],
    "--gamma": ["0.9", "1.5"],
    "--max-kl": ["0.01", "0", "inf"],
    "--clip-eps": ["0.2", "inf"],
    "--seeds": ["1", "2", "0", HUGE],
    "--seed": ["0", "3", "-1", HUGE],
    "--chunk": ["1", "3", "7", "0"],
    "--checkpoint-every": ["1", "0", HUGE],
    "--keep": ["2", "0", HUGE],
    "--hidden": ["8", "0", HUGE],
    "--objective": ["clip", "kl_penalty", "trust"],
    "--learning-rat": ["1e-3"],
}


def place(draw) -> str:
  """A scratch path (``@name``), or now and then an empty one."""
  return draw(st.sampled_from(["@" + p for p in PLACES] + [""]))


@st.composite
def commands(draw):
  kind = draw(st.sampled_from(["train", "train", "train", "resume", "resume",
                               "eval", "plot", "rlhf", "rlhf-resume",
                               "junk"]))
  if kind == "junk":
    return draw(st.sampled_from([[], ["train"], ["nonsense"], ["--x"],
                                 ["eval"], ["plot"], ["rlhf", "sft"]]))
  if kind == "eval":
    return ["eval", place(draw), "--episodes",
            draw(st.sampled_from(["1", "0", "x", HUGE]))] + draw(
                st.sampled_from([[], ["--video", "--seed-index", "5"]]))
  if kind == "rlhf-resume":  # every place is refused: none is an rlhf run
    command = draw(st.sampled_from(["sft", "rm", "ppo", "trpo"]))
    args = ["rlhf", command, "--resume", "@" + draw(st.sampled_from(PLACES))]
    if command != "sft" and draw(st.booleans()):
      args += ["--sft", "@" + draw(st.sampled_from(PLACES))]
    if draw(st.booleans()):
      args += ["--overwrite"]
    return args + ["--no-progress"]
  if kind == "plot":
    return ["plot", "@" + draw(st.sampled_from(PLACES)), "--out",
            draw(st.sampled_from(["@fig.png", "@notes.tex",
                                  "@missing/fig.png", "@run", ""]))] + draw(
                st.sampled_from([[], ["--metric", ""]]))
  if kind == "rlhf":
    command = draw(st.sampled_from(["sft", "prefs", "rm", "ppo"]))
    args = ["rlhf", command, "--out", place(draw)]
    if command != "sft":
      args += ["--sft", place(draw)]
    if command in ("rm", "ppo"):
      args += ["--prefs" if command == "rm" else "--rm", place(draw)]
    if command == "sft":  # bad sizes, refused before any work
      args += draw(st.sampled_from([["--width", "0"], ["--num-heads", "3"],
                                    ["--vocab-size", "100"],
                                    ["--max-len", "1"], ["--steps", HUGE],
                                    ["--seed", HUGE]]))
    return args + ["--no-progress"]
  args = ["train"]
  if kind == "resume":
    args += ["--resume", "@" + draw(st.sampled_from(PLACES))]
    if draw(st.booleans()):
      args += ["--out", "@new"]
  else:
    args += ["--out", place(draw)]
    args += ["--algo", draw(st.sampled_from(["ppo", "trpo", "a2c"]))]
    args += ["--env", draw(st.sampled_from(["CartPole-v1", "Pendulum-v1",
                                            "CartPole-v9", "Hopper-v2",
                                            ""]))]
    args += ["--total-timesteps", "32"] + TINY
  if draw(st.booleans()):
    args += ["--overwrite"]
  for option in draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=2,
                              unique=True)):
    args += [option, draw(st.sampled_from(VALUES[option]))]
  return args


@pytest.mark.slow
@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(argv=commands())
def test_cli_exits_0_or_2_and_touches_only_its_run(tmp_path_factory,
                                                   made_run, argv):
  conftest.release_compiled_programs()  # examples compile many programs
  scratch = str(tmp_path_factory.mktemp("scratch"))
  os.makedirs(os.path.join(scratch, "mine", "sub"))
  shutil.copytree(made_run, os.path.join(scratch, "run"))
  _damaged_runs(scratch)
  for name in USER_FILES:
    with open(os.path.join(scratch, name), "w") as f:
      f.write("a user's file\n")
  argv = [os.path.join(scratch, a[1:]) if a.startswith("@") else a
          for a in argv]
  before = _snapshot(scratch)
  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(
      io.StringIO()):
    try:
      code = cli.main(argv)
    except SystemExit as e:  # argparse: usage errors and --help
      code = e.code
  assert code in (0, 2), (argv, code, err.getvalue())
  assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
  if code == 2:  # one line saying what is wrong, of what the user typed
    lines = err.getvalue().strip().splitlines()
    assert [l for l in lines if "error:" in l] == lines[-1:], err.getvalue()
    assert "Config." not in lines[-1], (argv, lines[-1])
  # What the command may write: the run directory it names (--out, or
  # --resume) and the missing directories above it (as mkdir -p), or the
  # figure `plot --out` names.
  allowed = []
  for flag in ("--out", "--resume"):
    if flag in argv and argv[argv.index(flag) + 1]:  # '' names nothing
      allowed.append(argv[argv.index(flag) + 1])
  after = _snapshot(scratch)
  changed = {p for p in set(before) | set(after)
             if before.get(p) != after.get(p)}
  made_parents = {p for p in changed if p not in before
                  and after.get(p) == "dir"
                  and any(a.startswith(p + os.sep) for a in allowed)}
  outside = {p for p in changed - made_parents
             if not any(p == a or p.startswith(a + os.sep) for a in allowed)}
  assert not outside, (argv, sorted(outside))
  if argv and argv[0] == "plot":
    assert not any(p.endswith(".tex") for p in changed), argv
  assert not {os.path.join(scratch, n) for n in USER_FILES} & changed, argv
  finished = os.path.join(scratch, "run")
  if "--overwrite" not in argv:  # resumed, evaluated, plotted: untouched
    assert not {p for p in changed if p == finished
                or p.startswith(finished + os.sep)}, argv
  if code == 2 and "diverged" not in err.getvalue():
    assert not changed, (argv, err.getvalue(), sorted(changed))
  for damaged in ("nomarker", "nockpt"):
    if "--resume" in argv and argv[argv.index("--resume") + 1] == (
        os.path.join(scratch, damaged)):
      assert code == 2, (argv, err.getvalue())
