"""The learners, the runner and the RLHF steps over a device mesh
(``jaxrl_align.parallel``): 1, 2 and 8 forced CPU devices compute what one
device computes on the whole batch; a wrong reduction is caught; the arrays
really are spread; two processes on 127.0.0.1 agree with one.

JAX fixes its device count when it starts, so the work runs in subprocesses
(``parallel_checks.py``, ``multihost_checks.py``), all started at once (their
compilations are single-threaded: they share the cores), and these tests
assert on what they wrote.

Tolerances: float32 sums in another order differ by a few ulps per
reduction; after three updates the PPO parameters stay within 1e-6 of one
device's (measured 3e-8 on 2 and 8 devices) and TRPO's within 1e-5
(measured 1.2e-6: CG on an ill-conditioned Fisher amplifies rounding)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# a task stepped on the host (Gymnasium's MuJoCo), four seeds: over two
# processes (multihost_checks.py) and, the reference, in one
HOST_TRAIN = ["train", "--env", "InvertedPendulum-v5", "--algo", "ppo",
              "--total-timesteps", str(2 * 64 * 4), "--num-envs", "2",
              "--num-steps", "64", "--seeds", "4", "--chunk", "1",
              "--checkpoint-every", "2", "--eval-episodes", "3",
              "--no-progress"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
  """Starts every check at once; ``{part: result}`` once all are done."""
  tmp = tmp_path_factory.mktemp("parallel")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  script = os.path.join(HERE, "parallel_checks.py")
  multi = os.path.join(HERE, "multihost_checks.py")
  os.makedirs(tmp / "runs")
  os.makedirs(tmp / "hosts")
  port = str(_free_port())
  commands = {
      "learners": [script, str(tmp / "learners.json"), "learners"],
      "runner": [script, str(tmp / "runner.json"), "runner",
                 str(tmp / "runs")],
      "rlhf": [script, str(tmp / "rlhf.json"), "rlhf"],
      "host0": [multi, str(tmp / "hosts"), "0", port, json.dumps(HOST_TRAIN)],
      "host1": [multi, str(tmp / "hosts"), "1", port, json.dumps(HOST_TRAIN)],
      "host_single": ["-m", "jaxrl_align", *HOST_TRAIN, "--out",
                      str(tmp / "runs" / "host4")],
      # the command starting its own job of two processes on this machine
      "host_spawned": ["-m", "jaxrl_align", *HOST_TRAIN, "--processes", "2",
                       "--out", str(tmp / "runs" / "host_spawned")]}
  procs = {name: subprocess.Popen([sys.executable, *cmd], env=env,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
           for name, cmd in commands.items()}
  failed, outputs = {}, {}
  for name, p in procs.items():
    out, _ = p.communicate(timeout=900)
    outputs[name] = (p.returncode, out)
    if p.returncode:
      failed[name] = out[-3000:]
  assert not failed, failed
  result = {"outputs": outputs}
  for name in ("learners", "runner", "rlhf"):
    with open(tmp / f"{name}.json") as f:
      result[name] = json.load(f)
  hosts = {}
  for who in ("0", "1"):
    with open(tmp / "hosts" / f"{who}.json") as f:
      hosts[who] = json.load(f)
    hosts[who]["params"] = dict(np.load(tmp / "hosts" / f"{who}.npz"))
  # the same config in one process on one device (parallel_checks.py)
  hosts["single"] = {"params": dict(np.load(tmp / "learners.json"
                                            ".ppo_params.npz"))}
  result["hosts"] = hosts
  # the command over the two processes, and its one-process reference
  result["paths"] = {"host_spawned": tmp / "runs" / "host_spawned",
                     "host_single": tmp / "runs" / "host4"}
  result["runs"] = {name: _run_dir(path) for name, path in {
      "cli": tmp / "hosts" / "cli", "resumed": tmp / "hosts" / "resumed",
      "single": tmp / "runs" / "single4",
      "host_cli": tmp / "hosts" / "host",
      "host_single": tmp / "runs" / "host4",
      "host_spawned": tmp / "runs" / "host_spawned"}.items()}
  result["runs"]["cli"]["params"] = dict(np.load(tmp / "hosts" /
                                                 "cli_params.npz"))
  result["runs"]["single"]["params"] = dict(np.load(tmp / "runs" /
                                                    "single4_params.npz"))
  return result


def _run_dir(path):
  """What a run directory holds: its files, config, metrics and summary."""
  with open(path / "config.json") as f:
    config = json.load(f)
  with open(path / "metrics.jsonl") as f:
    metrics = [json.loads(line) for line in f]
  with open(path / "summary.json") as f:
    summary = json.load(f)
  return {"files": sorted(os.listdir(path)), "config": config,
          "metrics": metrics, "summary": summary}


@pytest.mark.parametrize("algo,tol", [("ppo", 1e-6), ("trpo", 1e-5)])
def test_learners_on_1_2_and_8_devices_agree(measured, algo, tol):
  runs = measured["learners"][algo]
  for d in ("2", "8"):
    assert runs[d]["params"] <= tol, (d, runs[d]["params"])
    # running observation statistics (and reward scaling, for PPO)
    assert runs[d]["stats"] <= 10 * tol, (d, runs[d]["stats"])
    # every metric: losses, gradient norms, KL, episode statistics
    worst = max(runs[d]["metrics"].items(), key=lambda kv: kv[1])
    assert worst[1] <= 1e-3, (d, worst)
    # the environments really are split: one piece per device
    assert runs[d]["obs_spec"] == ["data"]
    assert runs[d]["obs_pieces"] == int(d)
  assert runs["1"]["obs_pieces"] == 1
  if algo == "ppo":  # episodes ended, so their statistics were reduced too
    assert runs["8"]["episodes"] == runs["1"]["episodes"] > 0


@pytest.mark.parametrize("quantity", ["grad", "fvp"])
def test_gradient_and_fisher_product_reductions_and_a_wrong_one(
    measured, quantity):
  """Relative to one device. The compiler's reduction over 8 devices
  agrees; a hand-written ``psum`` of per-device means (the N× trap of
  ``shard_map``) is caught by the same comparison."""
  r = measured["learners"]["reductions"][quantity]
  assert r["eight"] <= 1e-5, r
  assert r["psum"] > 1.0 and r["psum_ratio"] > 5, r
  if quantity == "fvp":
    assert r["pmean"] <= 1e-5, r  # the right hand-written reduction
  else:  # `pmean` of gradients is still wrong when the loss whitens the
    # advantages: each device whitens with its own statistics
    assert r["pmean"] > 1e-2, r


def test_running_statistics_reduction_and_a_wrong_one(measured):
  r = measured["learners"]["reductions"]["stats"]
  assert r["eight"] <= 1e-6, r
  # neither a sum nor a mean of per-device statistics is the whole batch's
  assert r["psum"] > 1e-2 and r["pmean"] > 1e-2, r


def test_seeds_spread_over_devices_and_a_count_that_does_not_divide(
    measured):
  s = measured["learners"]["seeds"]
  # seed 0 against one device; all 8 seeds between the two layouts (the
  # worst of 8 seeds: measured 6e-7)
  assert s["8x1"]["params"] <= 1e-6 and s["2x4"]["params"] <= 1e-6, s
  assert s["8x1_vs_2x4"] <= 1e-5, s
  assert s["8x1"]["spec"] == ["seeds"] and s["8x1"]["pieces"] == 8
  assert s["2x4"]["spec"] == ["seeds"] and s["2x4"]["pieces"] == 2
  assert s["2x4"]["obs_spec"] == ["seeds", "data"]  # both axes at once
  # a hyperparameter sweep spreads the same way
  assert s["sweep"]["params"] <= 1e-6 and s["sweep"]["pieces"] == 4, s
  assert s["sweep"]["distinct"] == 4  # each device trained its own config
  assert s["sweep"]["spec"] == ["seeds"]
  assert s["6_over_4"] == ("6 seeds do not divide over the mesh's 4 `seeds` "
                           "devices.")


@pytest.mark.parametrize("name", ["data8", "seeds2"])
def test_runner_over_devices_agrees_and_resumes_bit_exactly(measured, name):
  """``vs_one_device``: against the seeds spread over 2 devices, where each
  seed's whole batch is on one device."""
  r = measured["runner"][name]
  assert r["vs_one_device"] <= 1e-6, r
  assert r["resumed_bitwise"], r
  assert r["eval_diff"] == 0.0, r
  # the states' layout: [seeds, envs, ...], the envs or the seeds split
  assert r["obs_spec"] == {"data8": [None, "data"], "seeds2": ["seeds"]}[name]


def test_runner_refuses_what_the_devices_cannot_take(measured):
  e = measured["runner"]["errors"]
  assert e["too_many"].startswith("--devices 16: there are 8 (on CPU")
  assert e["seeds"].startswith("--seeds 3 do not divide over --devices 4")
  assert e["batch"] == "--num-envs 12 does not divide over --devices 8."
  assert e["shard"].startswith("`shard` must be one of seeds, data")
  # refused before the run directory was made
  assert not any(v for k, v in e.items() if k.endswith("_dir"))


@pytest.mark.parametrize("name", ["sft", "rm", "rl_ppo", "rl_trpo"])
def test_rlhf_steps_on_8_devices_agree(measured, name):
  r = measured["rlhf"][f"{name}_8"]
  # the losses (sft, rm) or the KL to the reference (rl), every step; after
  # a TRPO step the KL carries the CG's amplified rounding (measured 4e-4
  # relative; test_rlhf_rl compares vmapped TRPO with rtol 0.05 for this)
  rtol = 5e-3 if name == "rl_trpo" else 1e-5
  assert r["metric"] <= rtol * max(r["metric_value"], 1e-3), r
  if name in ("sft", "rm"):
    # AdamW's first steps divide each gradient entry by its own magnitude,
    # so an entry near zero whose rounding differs moves by up to the
    # learning rate: the gradient itself is compared below
    assert r["params"] <= r["lr"], r
  else:
    assert r["params"] <= 1e-4 * r["params_scale"], r
  if name == "rl_trpo":
    assert r["policy/accepted"] == 0 and r["policy/step_fraction"] == 0, r


def test_sft_gradient_on_8_devices_agrees(measured):
  assert measured["rlhf"]["sft_grad"] <= 1e-5


def test_two_processes_agree_with_one_and_step_their_own_envs(measured):
  h = measured["hosts"]
  for who in ("0", "1"):
    assert h[who]["process_count"] == 2 and h[who]["global_devices"] == 4
    assert h[who]["local_devices"] == 2
  # each process stepped only the environments on its own devices
  assert h["0"]["env_rows"] == [[0, 2], [2, 4]]
  assert h["1"]["env_rows"] == [[4, 6], [6, 8]]
  assert set(h["single"]["params"]) == set(h["0"]["params"])
  for name, value in h["single"]["params"].items():
    np.testing.assert_allclose(h["0"]["params"][name], value, atol=1e-6,
                               err_msg=name)
    np.testing.assert_array_equal(h["1"]["params"][name],
                                  h["0"]["params"][name])


def test_the_command_over_two_processes(measured):
  """``jaxrl-align train --coordinator ... --num-processes 2 --process-id
  I``: four seeds over the four devices of two processes write one run
  directory, as one process on one device would; resumed, bit-exact."""
  h, runs = measured["hosts"], measured["runs"]
  for who in ("0", "1"):
    code, err = h[who]["devices_2"]  # refused before anything is made
    assert code == 2 and _error_line(err).endswith(
        "a run over 2 processes spans all their devices: --devices 4."), err
    assert not h[who]["devices_2_dir"]
    assert h[who]["run"][0] == 0, h[who]["run"]
    code, err = h[who]["again"]  # the run directory is taken: process 0
    assert code == 2 and "exists and is not empty" in _error_line(err), err
    assert h[who]["resumed_bitwise"] and h[who]["resumed_step"] == 4
    # process 1's Ctrl-C stopped both after the first chunk
    assert h[who]["ctrl_c"] == {"interrupted": True, "checkpoints": [1],
                                "metrics_rows": 4}, h[who]["ctrl_c"]
    assert h[who]["params_spec"] == ["seeds"]
  assert "error: process 0: " in h["1"]["again"][1]
  assert "JAX-native" in h["0"]["run"][1]  # process 0 speaks for the job
  assert "JAX-native" not in h["1"]["run"][1]
  cli, single = runs["cli"], runs["single"]
  assert cli["files"] == single["files"]
  assert cli["config"]["processes"] == 2
  assert cli["config"]["runner"]["devices"] == 4
  # every update of every seed written once, as one process writes them
  key = [(m["update"], m["seed"]) for m in cli["metrics"]]
  assert len(set(key)) == len(key) == 4 * 4
  _same_metrics(cli, single)
  for name, value in single["params"].items():
    np.testing.assert_allclose(cli["params"][name], value, atol=1e-6,
                               err_msg=name)
  np.testing.assert_allclose(
      [s["eval_return_mean"] for s in cli["summary"]["per_seed"]],
      [s["eval_return_mean"] for s in single["summary"]["per_seed"]])
  # stopped after two updates and resumed: the same metrics, bit for bit
  assert runs["resumed"]["metrics"] == cli["metrics"]


def test_a_task_stepped_on_the_host_spreads_its_seeds_over_processes(
    measured):
  """``jaxrl-align train`` of a host-stepped task (Gymnasium's MuJoCo) in
  a job of two processes: each steps two of the four seeds' environments
  on one device of its own, and the run directory is the one-process
  run's (every metric of every update and seed, and the final
  evaluation). Seeds that do not divide over the processes, and a device
  count other than one of each, are refused in one line before anything
  is made."""
  h, runs = measured["hosts"], measured["runs"]
  for who in ("0", "1"):
    code, err = h[who]["host_seeds_3"]
    assert code == 2 and _error_line(err).endswith(
        "--seeds 3 do not divide over the job's 2 processes (each steps its "
        "share of the seeds): use a multiple of 2."), err
    code, err = h[who]["host_devices_4"]
    assert code == 2 and _error_line(err).endswith(
        "InvertedPendulum-v5 steps its environments on the host, on one "
        "device of each process: --devices 4 needs 4 processes (--processes "
        "4, which spreads the seeds over them); this job has 2."), err
    assert not h[who]["host_refused_dir"]
    assert h[who]["host_run"][0] == 0, h[who]["host_run"]
  assert "stepped on the host" in h["0"]["host_run"][1]
  multi, single = runs["host_cli"], runs["host_single"]
  assert multi["files"] == single["files"]
  assert multi["config"]["processes"] == 2
  assert multi["config"]["runner"]["devices"] == 2
  assert single["config"]["runner"]["devices"] == 1
  assert {m["seed"] for m in multi["metrics"]} == {0, 1, 2, 3}
  assert len(multi["metrics"]) == 4 * 4
  _same_run(multi, single)


def _same_run(run, reference):
  """Every metric of every update and seed, and the summary, as the
  reference's. Each process vmaps its own seeds, and XLA's order of
  float32 operations can depend on how many seeds a program holds (the
  first update of TRPO's HalfCheetah differed in the 7th digit between 4
  and 2 seeds a process), so values are compared to rounding; here they
  were equal bit for bit. Seeds given another's keys or envs are far off
  (tried by hand: two processes both stepping seeds 0 and 1)."""
  _same_metrics(run, reference)
  drop = {"wall_seconds_this_session", "first_chunk_seconds"}
  summary = {k: v for k, v in run["summary"].items() if k not in drop}
  ref = {k: v for k, v in reference["summary"].items() if k not in drop}
  assert summary.keys() == ref.keys()
  assert summary.pop("per_seed") and ref.pop("per_seed")
  for mine, theirs in zip(run["summary"]["per_seed"],
                          reference["summary"]["per_seed"]):
    assert mine["seed"] == theirs["seed"]
    np.testing.assert_allclose(mine["eval_return_mean"],
                               theirs["eval_return_mean"], rtol=1e-6)
  for k, v in ref.items():
    if isinstance(v, float):
      np.testing.assert_allclose(summary[k], v, rtol=1e-6, err_msg=k)
    else:
      assert summary[k] == v, k


def test_the_command_starts_its_own_job_with_processes(measured):
  """``jaxrl-align train --processes 2``: the command starts process 1 of
  a job on 127.0.0.1 and is process 0; the run directory is the
  one-process run's, and the result is printed once. A
  JAX-native task is refused in one line (its seeds spread over
  devices), with nothing made."""
  runs, outputs = measured["runs"], measured["outputs"]
  spawned, single = runs["host_spawned"], runs["host_single"]
  assert spawned["config"]["processes"] == 2
  assert spawned["config"]["runner"]["devices"] == 2
  assert spawned["files"] == single["files"]
  _same_run(spawned, single)
  code, out = outputs["host_spawned"]
  assert code == 0 and out.count("PPO on InvertedPendulum-v5, 4 seeds") == 1
  # the run's checkpoints, written by two processes, read back in this one
  from jaxrl_align.host import evaluation

  mine, step = evaluation.evaluate_run(
      str(measured["paths"]["host_spawned"]), episodes=2)
  ref, ref_step = evaluation.evaluate_run(
      str(measured["paths"]["host_single"]), episodes=2)
  assert step == ref_step == 4 and mine.shape == (4, 2)
  np.testing.assert_allclose(mine, ref, rtol=1e-6)
  for who in ("0", "1"):  # in a job of two, as `launch` makes it
    code, err = measured["hosts"][who]["native_processes"]
    assert code == 2 and _error_line(err).endswith(
        "CartPole-v1 is JAX-native: its seeds spread over this machine's "
        "devices (--devices), not processes: drop --processes."), err
    assert not measured["hosts"][who]["native_dir"]


def _same_metrics(run, reference):
  """The same (update, seed) rows, each metric equal to rounding (None
  where the reference's is)."""
  key = [(m["update"], m["seed"]) for m in run["metrics"]]
  assert key == [(m["update"], m["seed"]) for m in reference["metrics"]]
  for mine, ref in zip(run["metrics"], reference["metrics"]):
    assert mine.keys() == ref.keys()
    for k, v in ref.items():
      if v is None:
        assert mine[k] is None, k
      else:
        np.testing.assert_allclose(mine[k], v, rtol=1e-4, atol=1e-6,
                                   err_msg=k)


def _error_line(err: str) -> str:
  """The one error line of a refused command (no traceback)."""
  lines = err.strip().splitlines()
  assert "Traceback" not in err and "error:" in lines[-1], err
  assert sum("error:" in line for line in lines) == 1, err
  return lines[-1]
