"""``jaxrl-align demo``, the main job: GAE on a time-limited task whose true
value is known; every environment learner on CartPole-v1 over seeds in one
``vmap`` each, their summaries and one figure of their curves; then RLHF at
a small size (:mod:`jaxrl_align.host.rlhf.pipeline`: pretraining,
preferences, reward model, PPO and TRPO against it, the gold score before
and after), when the ``rlhf`` extra is installed."""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import jax

from jaxrl_align import agents
from jaxrl_align import primer
from jaxrl_align.host import files
from jaxrl_align.host import runner
from jaxrl_align.host import settings as settings_lib
from jaxrl_align.host import views
from jaxrl_align.host.rlhf import pipeline  # noqa: F401  (its kind declared)

KIND = "demo"  # its run directory holds a run per learner, and rlhf/
files.declare(KIND, ("learning_curves.png",), runner=False, nests=True)


def main(out: str, seeds: int, total_timesteps: int | None = None, *,
         progress: bool = True, overwrite: bool = False,
         rlhf_iterations: int = 40) -> int:
  """Runs the demo into ``out`` (a run directory holding one run per
  learner, ``learning_curves.png`` and ``rlhf/``); returns the exit code.
  ``total_timesteps``: per seed (default: each learner's preset).
  ``rlhf_iterations``: of each RL learner on the language model (0: no
  RLHF part)."""
  given = {} if total_timesteps is None else {
      "total_timesteps": total_timesteps}
  configs = {name: learner.config_type(env_id="CartPole-v1", **given)
             for name, learner in agents.LEARNERS.items()}
  replacing = files.is_run_dir(out)
  with files.prepare_run_dir(out, KIND, overwrite=overwrite):
    return _main(out, seeds, configs, progress, rlhf_iterations,
                 replacing and overwrite)


def _main(out, seeds, configs, progress, rlhf_iterations, replaced) -> int:
  """:func:`main` once its run directory is made (and locked)."""
  from jaxrl_align.host import plotting

  print(f"jaxrl_align demo: JAX {jax.__version__} on "
        f"{jax.default_backend()}, {os.cpu_count()} cores, "
        f"{len(jax.local_devices())} devices"
        + (f"; replaced the earlier demo in {out}/" if replaced else "")
        + "\n")
  correct, wrong = jax.jit(primer.time_limit_advantages)()
  print("1. GAE on a time-limited task (reward 1 forever, cut every 50 "
        "steps; true value 1/(1-γ) = 100): mean |advantage| should be 0.")
  print(f"   truncation bootstrapped (jaxrl_align.gae): {float(correct):8.4f}")
  print(f"   cut treated as termination (a common bug):  {float(wrong):8.4f}"
        "\n")
  names = " and ".join(k.upper() for k in agents.LEARNERS)
  steps = " / ".join(f"{c.num_updates * c.num_envs * c.num_steps:,}"
                     for c in configs.values())
  print(f"2. {names} on CartPole-v1, {seeds} seeds each in one vmap, "
        f"{steps} env steps per seed:")
  runs = []
  for name, learner in agents.LEARNERS.items():
    path = os.path.join(out, name)
    settings = runner.RunnerSettings(seeds=seeds)
    settings = dataclasses.replace(  # the seeds over the cores
        settings, devices=settings_lib.default_devices(learner, configs[name],
                                                       settings))
    result = runner.run(learner, configs[name], path, settings,
                        progress=progress)
    print(views.of(learner).report(result.summary) + "\n")
    runs.append(path)
  figure = plotting.plot_runs(runs, os.path.join(out, "learning_curves.png"))
  print(f"Learning curves: {figure}; runs in {out}/ (try: .venv/bin/"
        f"jaxrl-align eval {runs[0]})\n")
  if rlhf_iterations:
    _rlhf(os.path.join(out, "rlhf"), rlhf_iterations, progress)
  return 0


def _rlhf(out: str, iterations: int, progress: bool) -> None:
  missing = [m for m in ("tokenizers", "gensim", "vaderSentiment")
             if importlib.util.find_spec(m) is None]
  print("3. RLHF at a small size: pretraining, preferences from simulated "
        "annotators, a reward model, then PPO and TRPO against it with a KL "
        "penalty to the pretrained model; the gold annotator scores the "
        "held-out responses before and after.")
  if missing:
    print(f"   skipped: it needs the rlhf extra (pip install "
          f"'jaxrl_align[rlhf]'; missing: {', '.join(missing)}).")
    return
  pipeline.run_small(out, iterations=iterations, progress=progress)
  print(f"   runs in {out}/ (samples: jaxrl-align rlhf ppo --help; "
        f"docs/rlhf.md)")
