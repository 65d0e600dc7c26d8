"""The accelerator run's one JSON and markdown table (``accelerator.sh``).

``--info FILE``: the machine (the card from ``nvidia-smi``, JAX's backend
and devices, torch's CUDA if present) as JSON. ``--out DIR``: reads each
step's ``DIR/<step>.status`` and ``DIR/<step>.json`` (and the tests'
``tests.xml``) and writes ``DIR/accelerator.json`` (everything) and
``DIR/accelerator.md`` (the tables the README takes). A step that failed or
ran out of time is reported as such, with the last line of its log; no
figure is made up for it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET


def machine_info() -> dict:
  info = {"machine": platform.machine(), "python": platform.python_version(),
          "cores": os.cpu_count()}
  try:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
         "--format=csv,noheader"], capture_output=True, text=True,
        timeout=30, check=True).stdout.strip()
    info["gpus"] = [line.strip() for line in out.splitlines() if line.strip()]
  except (OSError, subprocess.SubprocessError):
    info["gpus"] = []
  import jax  # after nvidia-smi: a broken JAX still leaves the card's name
  info.update(jax=jax.__version__, backend=jax.default_backend(),
              devices=[f"{d.platform}:{d.device_kind}" for d in jax.devices()])
  try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = (torch.cuda.get_device_name(0)
                          if torch.cuda.is_available() else None)
  except ImportError:
    info["torch"] = None
  return info


def _load(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _last_line(path) -> str:
  try:
    with open(path, errors="replace") as f:
      lines = [line.rstrip() for line in f if line.strip()]
  except OSError:
    return ""
  return lines[-1][:200] if lines else ""


def _tests(path) -> dict | None:
  try:
    root = ET.parse(path).getroot()
  except (OSError, ET.ParseError):
    return None
  suites = [root] if root.tag == "testsuite" else list(root)
  count = {k: sum(int(s.get(k, 0)) for s in suites)
           for k in ("tests", "failures", "errors", "skipped")}
  count["passed"] = (count["tests"] - count["failures"] - count["errors"]
                     - count["skipped"])
  count["failed_names"] = [
      f"{case.get('classname')}::{case.get('name')}"
      for s in suites for case in s.iter("testcase")
      if case.find("failure") is not None or case.find("error") is not None]
  return count


def collect(out: str, seconds: float | None) -> dict:
  steps = {}
  for status in sorted(glob.glob(os.path.join(out, "*.status")),
                       key=os.path.getmtime):  # in the order they ran
    name = os.path.basename(status)[:-len(".status")]
    record = _load(status) or {}
    record["last_line"] = _last_line(os.path.join(out, f"{name}.log"))
    steps[name] = record
  report = {"seconds": seconds, "steps": steps,
            "info": _load(os.path.join(out, "info.json")),
            "tests": _tests(os.path.join(out, "tests.xml"))}
  for name in steps:
    if name not in ("info", "tests"):
      report[name] = _load(os.path.join(out, f"{name}.json"))
  return report


def _fmt(x, spec="{:,.0f}"):
  return "–" if x is None else spec.format(x)


def markdown(report: dict) -> str:
  info = report.get("info") or {}
  card = ", ".join(info.get("gpus") or []) or "no GPU seen by nvidia-smi"
  lines = [f"Card: {card}; JAX {info.get('jax')} on {info.get('backend')} "
           f"({', '.join(info.get('devices') or [])}); torch "
           f"{info.get('torch')}; {info.get('cores')} CPU cores. Whole run "
           f"{_fmt(report.get('seconds'))} s.", "",
           "| step | exit | seconds (limit) | last line |",
           "| --- | ---: | ---: | --- |"]
  for name, s in report["steps"].items():
    rc = s.get("rc")
    mark = "timed out" if s.get("timed_out") else rc
    lines.append(f"| {name} | {mark} | {s.get('seconds')} ({s.get('limit')})"
                 f" | `{s.get('last_line', '').replace('|', '/')}` |")
  tests = report.get("tests")
  if tests:
    lines += ["", f"Tests: {tests['passed']} passed, {tests['failures']} "
              f"failed, {tests['errors']} errors, {tests['skipped']} skipped"
              + (": " + ", ".join(tests["failed_names"][:10])
                 if tests["failed_names"] else ".")]
  learners = report.get("learners")
  if learners:
    lines += ["", "PPO at rejax's CartPole config (100k env steps per seed, "
              "all seeds in one vmap):", "",
              "| seeds | ours env steps/s | ours compile s | rejax env "
              "steps/s | ours / rejax |", "| ---: | ---: | ---: | ---: | ---: |"]
    for r in learners["results"]:
      ours, rejax = r["rows"].get("ppo", {}), r["rows"].get("rejax", {})
      rate = (r["env_steps"] / ours["warm"]) if "warm" in ours else None
      theirs = (r["env_steps"] / rejax["warm"]) if "warm" in rejax else None
      lines.append(f"| {r['seeds']} | {_fmt(rate)} | "
                   f"{_fmt(ours.get('compile'), '{:.1f}')} | {_fmt(theirs)} | "
                   + (_fmt(rate / theirs, "{:.2f}x") if rate and theirs
                      else "–") + " |")
  envs = report.get("envs")
  if envs:
    lines += ["", f"{envs['env']} env steps/s (random actions, one "
              "program):", "", "| envs | ours | raw gymnax | ours / gymnax |",
              "| ---: | ---: | ---: | ---: |"]
    for r in envs["results"]:
      rate = r["steps_per_second"]
      lines.append(f"| {r['envs']:,} | {_fmt(rate.get('ours'))} | "
                   f"{_fmt(rate.get('gymnax'))} | "
                   f"{_fmt(rate['ours'] / rate['gymnax'], '{:.2f}x')} |")
  lm = {k: v for k, v in report.items() if k.startswith("lm_rl_") and v}
  if lm:
    lines += ["", "Language-model RL iteration (default model, 48-token "
              "responses):", "",
              "| batch | PPO episodes/s | TRPO episodes/s | PPO update "
              "TFLOP/s | peak device MB |", "| ---: | ---: | ---: | ---: | "
              "---: |"]
    for name, r in sorted(lm.items(), key=lambda kv: int(kv[0][6:])):
      lines.append(f"| {name[6:]} | "
                   f"{_fmt(r['ppo']['episodes_per_second'], '{:.1f}')} | "
                   f"{_fmt(r['trpo']['episodes_per_second'], '{:.1f}')} | "
                   f"{_fmt(r['ppo']['update_tflops_per_second'], '{:.3f}')}"
                   f" | {_fmt(r.get('peak_device_mb'))} |")
  trl = report.get("trl")
  if trl:
    ours, theirs = trl["ours"], trl["trl"]
    lines += ["", f"LM PPO against TRL's PPOTrainer (torch on "
              f"{theirs.get('torch_device')}): ours "
              f"{ours['episodes_per_second']:.1f} episodes/s, TRL "
              f"{theirs['episodes_per_second']:.1f}: "
              f"**{trl['ours_over_trl_episodes_per_second']:.2f}x**."]
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--info", metavar="FILE")
  parser.add_argument("--out", metavar="DIR")
  parser.add_argument("--seconds", type=float, default=None)
  args = parser.parse_args()
  if args.info:
    info = machine_info()
    with open(args.info, "w") as f:
      json.dump(info, f, indent=1)
    print(json.dumps(info))
  if args.out:
    report = collect(args.out, args.seconds)
    with open(os.path.join(args.out, "accelerator.json"), "w") as f:
      json.dump(report, f, indent=1)
    text = markdown(report)
    with open(os.path.join(args.out, "accelerator.md"), "w") as f:
      f.write(text)
    print(text)
  if not (args.info or args.out):
    parser.error("give --info FILE or --out DIR")


if __name__ == "__main__":
  sys.exit(main())
