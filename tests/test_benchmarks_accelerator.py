"""benchmarks/accelerator_report.py without an accelerator: the report of
benchmarks/accelerator.sh reads each step's record and figures, computes
the ratios from them, says which step failed or ran out of time, and makes
up nothing for a step without figures."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..",
                                "benchmarks"))
import accelerator_report as report  # noqa: E402


def _write(path, obj):
  with open(path, "w") as f:
    json.dump(obj, f)


@pytest.fixture()
def out(tmp_path):
  """An accelerator run's folder: info, learners and lm_rl_64 ran, envs
  timed out and left no figures."""
  d = str(tmp_path)
  for i, (name, rc) in enumerate([("info", 0), ("learners", 0),
                                  ("envs", 124), ("lm_rl_64", 0)]):
    _write(os.path.join(d, f"{name}.status"),
           {"rc": rc, "seconds": 5, "limit": 40, "timed_out": rc == 124})
    with open(os.path.join(d, f"{name}.log"), "w") as f:
      f.write(f"first\n{name} | last line\n\n")
    os.utime(os.path.join(d, f"{name}.status"), (1000 + i, 1000 + i))
  _write(os.path.join(d, "info.json"),
         {"gpus": ["NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04"],
          "jax": "0.11.2", "backend": "gpu", "devices": ["gpu:NVIDIA H100"],
          "torch": "2.11.0", "cores": 16})
  _write(os.path.join(d, "learners.json"), {"results": [
      {"env": "CartPole-v1", "setting": "rejax", "seeds": 8,
       "env_steps": 800_000,
       "rows": {"ppo": {"compile": 7.0, "warm": 2.0, "return": 500.0},
                "rejax": {"compile": 9.0, "warm": 5.0, "return": 480.0}}},
      {"env": "CartPole-v1", "setting": "rejax", "seeds": 4096,
       "env_steps": 409_600_000,
       "rows": {"ppo": {"compile": 7.0, "warm": 4.0, "return": 500.0},
                "rejax": {"error": "ImportError: no rejax"}}}]})
  _write(os.path.join(d, "lm_rl_64.json"), {
      "ppo": {"episodes_per_second": 400.0,
              "update_tflops_per_second": None},
      "trpo": {"episodes_per_second": 250.0,
               "update_tflops_per_second": None},
      "peak_device_mb": 2048.0})
  return d


def test_report_ratios_failures_and_nothing_invented(out):
  r = report.collect(out, 123.0)
  assert list(r["steps"]) == ["info", "learners", "envs", "lm_rl_64"]
  assert r["steps"]["envs"]["timed_out"] and r["envs"] is None
  assert r["steps"]["learners"]["last_line"] == "learners | last line"
  text = report.markdown(r)
  assert "NVIDIA H100 80GB HBM3" in text and "Whole run 123 s" in text
  assert "| envs | timed out | 5 (40) |" in text
  # 800,000 steps in 2 s against 5 s: 400,000 steps/s and 2.50x.
  assert "| 8 | 400,000 | 7.0 | 160,000 | 2.50x |" in text
  # rejax failed at 4,096 seeds: no rejax figure, no ratio.
  assert "| 4096 | 102,400,000 | 7.0 | – | – |" in text
  assert "| 64 | 400.0 | 250.0 | – | 2,048 |" in text
  assert "env steps/s (random actions" not in text  # no figures: no table
  assert "PPOTrainer" not in text


def test_report_counts_tests(out):
  with open(os.path.join(out, "tests.xml"), "w") as f:
    f.write('<testsuites><testsuite tests="3" failures="1" errors="0" '
            'skipped="1"><testcase classname="t" name="a"/>'
            '<testcase classname="t" name="b"><failure/></testcase>'
            '<testcase classname="t" name="c"><skipped/></testcase>'
            '</testsuite></testsuites>')
  tests = report.collect(out, None)["tests"]
  assert (tests["passed"], tests["failures"], tests["skipped"]) == (1, 1, 1)
  assert tests["failed_names"] == ["t::b"]
  assert "Tests: 1 passed, 1 failed" in report.markdown(
      report.collect(out, None))
