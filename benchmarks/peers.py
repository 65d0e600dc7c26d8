"""Our PPO and TRPO side by side with Stable-Baselines3, sb3-contrib, SBX and
rejax on the five classic-control tasks, at the RL Baselines3 Zoo's tuned
hyperparameters, in one run.

Per task and algorithm every library trains at the Zoo's entry (rl-zoo3
2.9.2, ``hyperparams/ppo.yml`` and ``trpo.yml``, copied into ``ZOO`` below
with the libraries' own defaults for what an entry leaves out), for
``--seeds`` seeds: ours and rejax's as one ``vmap`` over the seeds in one
process, SB3's, sb3-contrib's and SBX's one process per seed, as many at
once as there are cores (each with one thread). XLA runs a CPU device's
program on one core, so ours also runs as ``ours-cores``: the same
program with the seeds spread over one CPU device per core
(``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` and
``jaxrl_align.parallel``, as ``jaxrl-align train --devices`` does), when
the cores divide the seeds; the peers' ratios are given against both (they
use every core too). Per run: the whole
process's wall time (measured outside it: start-up, imports, compilation,
training, evaluation), compilation time (the JAX libraries), warm training
time, env steps/s (all seeds' steps over the warm training time; per seed
for the one-process-per-seed libraries, summed over the seeds running at
once), the mean return of 16 deterministic evaluation episodes per seed,
the peak resident memory of the process, and a learning curve: the mean
return of the training episodes that ended in each rollout against env
steps and against wall-clock seconds (ours: one compiled program, so its
seconds are interpolated over the warm training time, after compilation;
rejax: its own deterministic evaluations, 10 per run). Ratios are computed
from the figures of this one run.

``--envs`` also takes the five MuJoCo tasks of ``MUJOCO_ENVS`` (the Zoo's
MuJoCo entries; ours stepped on the host through the runner, as the
command runs them, its wall time including compilation and evaluation;
``ours-cores`` there is the same run with its seeds spread over one
process per core, a ``jax.distributed`` job on 127.0.0.1 writing one run
directory, as ``jaxrl-align train --coordinator ... --num-processes``
runs it; SB3 and sb3-contrib as for the others; not rejax, whose
environments are gymnax's). ``.venv-peers`` needs ``gymnasium[mujoco]`` for them.

What we translate from a Zoo entry, and what we lack, is printed and
recorded with each result (``notes``). Our ``value_loss`` is ½·MSE where
SB3's is MSE, so a Zoo ``vf_coef`` of c becomes 2c here; SB3's
``VecNormalize`` (``normalize: true``) becomes ``normalize_obs`` and
``scale_reward``; ``lin_`` learning rates become ``anneal_lr``. What an
entry leaves to the library (SB3 then takes its defaults) takes our
preset's value for the task, and is noted.

The peers run in their own virtual environment (``make bench-peers`` builds
``.venv-peers``: stable-baselines3, sb3-contrib and sbx-rl with
``torch==2.13.0``; rejax 0.1.3 with ``gymnax==0.0.9``) through
``--peer-python``; this script re-runs itself there (``--worker``) and
imports nothing of ours in that mode.

Usage: ``python benchmarks/peers.py [--envs ...] [--algos ppo trpo]
[--libraries ours sb3 sbx rejax] [--seeds 4] [--steps-scale 1.0]
[--peer-python .venv-peers/bin/python] [--out benchmarks/results/peers]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ENVS = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0",
        "MountainCarContinuous-v0", "Pendulum-v1")
# MuJoCo: the Zoo's entries are for the -v4 (InvertedDoublePendulum: -v2)
# tasks; Gymnasium 1.x ships -v5, the same models and rewards with fixed
# bugs (Gymnasium's MuJoCo docs, "Version History"). Stepped on the host.
MUJOCO_ENVS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Swimmer-v5",
               "InvertedDoublePendulum-v5")
_ZOO_MUJOCO_POLICY = dict(log_std_init=-2, ortho_init=False,
                          activation_fn="relu",
                          net_arch=dict(pi=[256, 256], vf=[256, 256]))
# trpo.yml's &pybullet-defaults, which its &mujoco-defaults extend.
_ZOO_TRPO_MUJOCO = dict(
    normalize=True, n_envs=2, n_timesteps=1e6, batch_size=128, n_steps=1024,
    gamma=0.99, gae_lambda=0.95, sub_sampling_factor=1, cg_max_steps=25,
    cg_damping=0.1, n_critic_updates=20, learning_rate=1e-3)
EVAL_EPISODES = 16

# rl-zoo3 2.9.2, hyperparams/ppo.yml and trpo.yml (the five entries each).
ZOO = {
    ("ppo", "CartPole-v1"): dict(
        n_envs=8, n_timesteps=1e5, n_steps=32, batch_size=256, gae_lambda=0.8,
        gamma=0.98, n_epochs=20, ent_coef=0.0, learning_rate="lin_0.001",
        clip_range="lin_0.2"),
    ("ppo", "Acrobot-v1"): dict(
        normalize=True, n_envs=16, n_timesteps=1e6, n_steps=256,
        gae_lambda=0.94, gamma=0.99, n_epochs=4, ent_coef=0.0),
    ("ppo", "MountainCar-v0"): dict(
        normalize=True, n_envs=16, n_timesteps=1e6, n_steps=16,
        gae_lambda=0.98, gamma=0.99, n_epochs=4, ent_coef=0.0),
    ("ppo", "MountainCarContinuous-v0"): dict(
        normalize=True, n_envs=1, n_timesteps=20000, batch_size=256,
        n_steps=8, gamma=0.9999, learning_rate=7.77e-05, ent_coef=0.00429,
        clip_range=0.1, n_epochs=10, gae_lambda=0.9, max_grad_norm=5,
        vf_coef=0.19, use_sde=True,
        policy_kwargs=dict(log_std_init=-3.29, ortho_init=False)),
    ("ppo", "Pendulum-v1"): dict(
        n_envs=4, n_timesteps=1e5, n_steps=1024, gae_lambda=0.95, gamma=0.9,
        n_epochs=10, ent_coef=0.0, learning_rate=1e-3, clip_range=0.2,
        use_sde=True, sde_sample_freq=4),
    ("trpo", "CartPole-v1"): dict(
        n_envs=2, n_timesteps=1e5, n_steps=512, batch_size=512,
        cg_damping=1e-3, gae_lambda=0.98, gamma=0.99, learning_rate=1e-3,
        n_critic_updates=20),
    ("trpo", "Acrobot-v1"): dict(
        normalize=True, n_envs=2, n_timesteps=1e5, n_steps=1024),
    ("trpo", "MountainCar-v0"): dict(
        normalize=True, n_envs=2, n_timesteps=1e5, n_steps=1024,
        n_critic_updates=20),
    ("trpo", "MountainCarContinuous-v0"): dict(
        normalize=True, n_envs=2, n_timesteps=50000, use_sde=True,
        sde_sample_freq=4),
    ("trpo", "Pendulum-v1"): dict(
        n_envs=2, n_timesteps=1e5, n_steps=1024, gamma=0.9,
        n_critic_updates=15, use_sde=True, sde_sample_freq=4),
    # ppo.yml's tuned MuJoCo entries ("# Tuned / 10 mujoco envs", and
    # Swimmer-v4's).
    ("ppo", "HalfCheetah-v5"): dict(
        normalize=True, n_envs=1, n_timesteps=1e6, batch_size=64,
        n_steps=512, gamma=0.98, learning_rate=2.0633e-05,
        ent_coef=0.000401762, clip_range=0.1, n_epochs=20, gae_lambda=0.92,
        max_grad_norm=0.8, vf_coef=0.58096, policy_kwargs=_ZOO_MUJOCO_POLICY),
    ("ppo", "Hopper-v5"): dict(
        normalize=True, n_envs=1, n_timesteps=1e6, batch_size=32,
        n_steps=512, gamma=0.999, learning_rate=9.80828e-05,
        ent_coef=0.00229519, clip_range=0.2, n_epochs=5, gae_lambda=0.99,
        max_grad_norm=0.7, vf_coef=0.835671, policy_kwargs=_ZOO_MUJOCO_POLICY),
    ("ppo", "Walker2d-v5"): dict(
        normalize=True, n_envs=1, n_timesteps=1e6, batch_size=32,
        n_steps=512, gamma=0.99, learning_rate=5.05041e-05,
        ent_coef=0.000585045, clip_range=0.1, n_epochs=20, gae_lambda=0.95,
        max_grad_norm=1.0, vf_coef=0.871923),
    ("ppo", "Swimmer-v5"): dict(
        normalize=True, n_timesteps=1e6, gamma=0.9999, n_envs=4,
        n_steps=1024, batch_size=256, learning_rate=6e-4, gae_lambda=0.98),
    ("ppo", "InvertedDoublePendulum-v5"): dict(
        normalize=True, n_envs=1, n_timesteps=1e6, batch_size=512,
        n_steps=128, gamma=0.98, learning_rate=0.000155454,
        ent_coef=1.05057e-06, clip_range=0.4, n_epochs=10, gae_lambda=0.8,
        max_grad_norm=0.5, vf_coef=0.695929),
    ("trpo", "HalfCheetah-v5"): dict(_ZOO_TRPO_MUJOCO, target_kl=0.04),
    ("trpo", "Hopper-v5"): dict(_ZOO_TRPO_MUJOCO),
    ("trpo", "Walker2d-v5"): dict(_ZOO_TRPO_MUJOCO),
    ("trpo", "Swimmer-v5"): dict(_ZOO_TRPO_MUJOCO, gamma=0.9999),
    # trpo.yml has no InvertedDoublePendulum entry: its `default` (1e6
    # steps, sb3-contrib's TRPO defaults, no normalisation).
    ("trpo", "InvertedDoublePendulum-v5"): dict(n_envs=1, n_timesteps=1e6),
}

# What an entry leaves out: the libraries' constructor defaults
# (stable_baselines3/ppo/ppo.py and sb3_contrib/trpo/trpo.py, 2.9.2).
DEFAULTS = {
    "ppo": dict(learning_rate=3e-4, n_steps=2048, batch_size=64, n_epochs=10,
                gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.0,
                vf_coef=0.5, max_grad_norm=0.5, use_sde=False,
                sde_sample_freq=-1, normalize=False, policy_kwargs={}),
    "trpo": dict(learning_rate=1e-3, n_steps=2048, batch_size=128,
                 gamma=0.99, cg_max_steps=15, cg_damping=0.1,
                 line_search_shrinking_factor=0.8, line_search_max_iter=10,
                 n_critic_updates=10, gae_lambda=0.95, use_sde=False,
                 sde_sample_freq=-1, target_kl=0.01, sub_sampling_factor=1,
                 normalize=False, policy_kwargs={}),
}

# Which library runs which algorithm.
LIBRARIES = {"ours": ("ppo", "trpo"), "ours-cores": ("ppo", "trpo"),
             "sb3": ("ppo",),
             "sb3-contrib": ("trpo",), "sbx": ("ppo",), "rejax": ("ppo",)}


SCALE = [1.0]  # --steps-scale: the Zoo's budgets times this (quick checks)


def entry(algo: str, env_id: str) -> dict:
  """The Zoo's entry over the library's defaults (its budget times
  ``--steps-scale``)."""
  out = dict(DEFAULTS[algo])
  out.update(ZOO[(algo, env_id)])
  out["n_timesteps"] = int(out["n_timesteps"] * SCALE[0])
  return out


def _value(x):
  """A Zoo value: ``lin_v`` (linear decay to 0 from v) or a number:
  ``(v, linear)``."""
  if isinstance(x, str) and x.startswith("lin_"):
    return float(x[4:]), True
  return float(x), False


def batches(e: dict) -> tuple[int, int]:
  """``(updates, env steps)``: the Zoo's budget in whole rollouts."""
  per = e["n_envs"] * e["n_steps"]
  updates = max(1, e["n_timesteps"] // per)
  return updates, updates * per


# ------------------------------------------------------------------ ours


def our_fields(algo: str, env_id: str, field_names) -> tuple[dict, list]:
  """Our config fields for the Zoo entry, and notes on what differs."""
  e = entry(algo, env_id)
  notes = []
  _, steps = batches(e)
  lr, linear = _value(e["learning_rate"])
  f = dict(env_id=env_id, total_timesteps=steps, num_envs=e["n_envs"],
           num_steps=e["n_steps"], learning_rate=lr, gamma=float(e["gamma"]),
           gae_lambda=float(e["gae_lambda"]), hidden=(64, 64),
           normalize_obs=bool(e["normalize"]),
           scale_reward=bool(e["normalize"]),
           adv_norm_ddof=1)  # SB3 and sb3-contrib: torch's std
  batch = e["n_envs"] * e["n_steps"]
  f["num_minibatches"] = max(1, batch // e["batch_size"])
  if batch > e["batch_size"] and batch % e["batch_size"]:
    notes.append(f"batch {batch} not a multiple of {e['batch_size']}: "
                 f"{f['num_minibatches']} minibatches")
  if algo == "ppo":
    clip, clip_linear = _value(e["clip_range"])
    f.update(update_epochs=e["n_epochs"], anneal_lr=linear, clip_eps=clip,
             ent_coef=float(e["ent_coef"]),
             vf_coef=2 * float(e["vf_coef"]),  # ½·MSE here, MSE in SB3
             max_grad_norm=float(e["max_grad_norm"]), clip_value=False)
    if clip_linear:
      notes.append("clip range annealing (lin_): ours stays constant")
  else:
    f.update(update_epochs=e["n_critic_updates"], anneal_lr=linear,
             cg_iters=e["cg_max_steps"], cg_damping=float(e["cg_damping"]),
             backtrack_coeff=e["line_search_shrinking_factor"],
             backtrack_iters=e["line_search_max_iter"],
             max_kl=float(e["target_kl"]),
             fisher_subsample=e["sub_sampling_factor"],
             max_grad_norm=float("inf"))  # sb3-contrib's critic: no clip
  kwargs = e["policy_kwargs"]
  if "log_std_init" in kwargs:
    f["log_std_init"] = float(kwargs["log_std_init"])
  if "ortho_init" in kwargs:
    f["ortho_init"] = bool(kwargs["ortho_init"])
  if "activation_fn" in kwargs:
    f["activation"] = kwargs["activation_fn"]
  if "net_arch" in kwargs:
    arch = kwargs["net_arch"]
    assert arch["pi"] == arch["vf"], arch  # ours: one size for both
    f["hidden"] = tuple(arch["pi"])
  if e["use_sde"]:
    if "use_sde" in field_names:
      f.update(use_sde=True, sde_sample_freq=e["sde_sample_freq"])
    else:
      notes.append("gSDE: not available here, Gaussian noise instead")
  f = {k: v for k, v in f.items() if k in field_names or k == "env_id"}
  if algo == "trpo" and "anneal_lr" not in field_names and linear:
    notes.append("learning-rate annealing (lin_): ours stays constant")
  from jaxrl_align.agents import presets  # what the entry leaves to us
  left = {k: v for k, v in presets.preset(algo, env_id).items()
          if k not in f and k in field_names
          and v != presets.DEFAULTS[algo].get(k)}
  if left:
    notes.append("not in the Zoo's entry, so our preset's: " + ", ".join(
        f"{k}={v}" for k, v in sorted(left.items())))
  return f, notes


def run_ours(algo: str, env_id: str, seeds: int, devices: int = 1,
             run_dir: str | None = None) -> dict:
  """Our run: the seeds in one ``vmap``, spread over ``devices`` CPU
  devices (forced by the caller's ``XLA_FLAGS``); a MuJoCo task stepped
  on the host, in ``run_dir`` (None: a scratch directory), its seeds
  spread over the processes of the job this process joined."""
  import contextlib
  import dataclasses

  import jax
  import numpy as np

  from jaxrl_align import agents
  from jaxrl_align import parallel
  from jaxrl_align.agents import ppo
  from jaxrl_align.agents import trpo

  import timing

  agents.unroll_threefry_on_cpu()  # as the command does (the same bits)
  module = ppo if algo == "ppo" else trpo
  config_type = ppo.PPOConfig if algo == "ppo" else trpo.TRPOConfig
  names = {f.name for f in dataclasses.fields(config_type)}
  fields, notes = our_fields(algo, env_id, names)
  config = config_type(**fields)
  if env_id in MUJOCO_ENVS:
    return _run_ours_host(algo, config, seeds, fields, notes, run_dir)
  keys = jax.random.split(jax.random.key(0), seeds)
  assert len(jax.devices()) >= devices, jax.devices()
  mesh = (jax.set_mesh(parallel.mesh(seeds=devices)) if devices > 1
          else contextlib.nullcontext())
  with mesh:
    train = jax.jit(parallel.vmap_seeds(module.train, in_axes=(None, 0)),
                    compiler_options=agents.compiler_options())
    (states, metrics), compile_s, warm_s = timing.compile_and_run(
        train, config, keys)
    returns = jax.jit(parallel.vmap_seeds(
        lambda s, k: module.evaluate(config, s, k, EVAL_EPISODES)))(
            states, jax.random.split(jax.random.key(1), seeds))
  curve = np.asarray(metrics["episode_return"])  # [seeds, updates]
  steps = np.asarray(metrics["env_steps"])[0]  # after each update
  n = len(steps)
  mean = [None if np.all(np.isnan(c)) else float(np.nanmean(c))
          for c in curve.T]
  return {"compile_s": compile_s, "warm_s": warm_s, "devices": devices,
          "env_steps": int(steps[-1]) * seeds,
          "returns": np.mean(np.asarray(returns), axis=1).tolist(),
          "curve": {"steps": steps.tolist(), "return": mean,
                    "seconds": [compile_s + warm_s * (i + 1) / n
                                for i in range(n)]},
          "notes": notes, "config": {k: (list(v) if isinstance(v, tuple)
                                         else v) for k, v in fields.items()}}


def _run_ours_host(algo, config, seeds, fields, notes, run_dir) -> dict:
  """Our run of a task stepped on the host, through the runner as the
  command runs it (one Gymnasium vector env of every seed's envs, the
  learner vmapped over seeds; over the processes of a job, each process's
  share of the seeds), in ``run_dir`` (None: a scratch directory)."""
  import contextlib
  import tempfile

  import jax
  import numpy as np

  from jaxrl_align.host import runner

  processes = jax.process_count()
  with (tempfile.TemporaryDirectory() if run_dir is None
        else contextlib.nullcontext(run_dir)) as tmp:
    start = time.perf_counter()
    result = runner.run(algo, config, os.path.join(tmp, "run"),
                        runner.RunnerSettings(seeds=seeds, devices=processes,
                                              eval_episodes=EVAL_EPISODES),
                        progress=False)
    wall = time.perf_counter() - start
    rows = runner.read_metrics(os.path.join(tmp, "run"))
  updates = config.num_updates
  curve = np.full((seeds, updates), np.nan)
  for row in rows:
    if row["episode_return"] is not None:
      curve[row["seed"], row["update"] - 1] = row["episode_return"]
  steps = [(i + 1) * config.num_envs * config.num_steps
           for i in range(updates)]
  mean = [None if np.all(np.isnan(c)) else float(np.nanmean(c))
          for c in curve.T]
  return {"compile_s": None, "warm_s": wall, "devices": 1,
          "env_steps": steps[-1] * seeds,
          "returns": np.nanmean(result.evaluation, axis=1).tolist(),
          "curve": {"steps": steps, "return": mean,
                    "seconds": [wall * (i + 1) / updates
                                for i in range(updates)]},
          "notes": notes + ["stepped on the host; wall time includes "
                            "compiling and the final evaluation"] + (
                                [f"seeds over {processes} processes"]
                                if processes > 1 else []),
          "config": {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in fields.items()}}


# ----------------------------------------------------------------- peers


def run_sb3(library: str, algo: str, env_id: str, seed: int) -> dict:
  """One seed of SB3's PPO, sb3-contrib's TRPO or SBX's PPO."""
  import numpy as np
  from stable_baselines3.common.callbacks import BaseCallback
  from stable_baselines3.common.env_util import make_vec_env
  from stable_baselines3.common.evaluation import evaluate_policy
  from stable_baselines3.common.vec_env import VecNormalize

  if library == "sbx":
    from sbx import PPO as Algo
  elif algo == "ppo":
    import torch
    torch.set_num_threads(1)
    from stable_baselines3 import PPO as Algo
  else:
    import torch
    torch.set_num_threads(1)
    from sb3_contrib import TRPO as Algo
  e = entry(algo, env_id)
  _, steps = batches(e)
  kwargs = {k: v for k, v in e.items()
            if k not in ("n_envs", "n_timesteps", "normalize")}
  for name in ("learning_rate", "clip_range"):
    if name in kwargs:
      v, linear = _value(kwargs[name])
      kwargs[name] = (lambda p, v=v: p * v) if linear else v
  if "activation_fn" in kwargs["policy_kwargs"]:  # the Zoo's nn.ReLU
    import torch
    kwargs["policy_kwargs"] = dict(kwargs["policy_kwargs"], activation_fn={
        "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[
            kwargs["policy_kwargs"]["activation_fn"]])
  env = make_vec_env(env_id, n_envs=e["n_envs"], seed=seed)
  if e["normalize"]:
    env = VecNormalize(env, gamma=e["gamma"])

  class Curve(BaseCallback):
    def __init__(self):
      super().__init__()
      self.points, self.ended, self.start = [], [], time.perf_counter()

    def _on_step(self):
      for info in self.locals["infos"]:
        if "episode" in info:
          self.ended.append(info["episode"]["r"])
      return True

    def _on_rollout_end(self):
      self.points.append((self.num_timesteps,
                          float(np.mean(self.ended)) if self.ended else None,
                          time.perf_counter() - self.start))
      self.ended = []

  model = Algo("MlpPolicy", env, seed=seed, verbose=0, **kwargs)
  curve = Curve()
  start = time.perf_counter()
  model.learn(total_timesteps=steps, callback=curve)
  warm_s = time.perf_counter() - start
  if e["normalize"]:
    env.training, env.norm_reward = False, False
  returns, _ = evaluate_policy(model, env, n_eval_episodes=EVAL_EPISODES,
                               deterministic=True)
  return {"warm_s": warm_s, "env_steps": int(model.num_timesteps),
          "returns": [float(np.mean(returns))],
          "curve": {"steps": [p[0] for p in curve.points],
                    "return": [p[1] for p in curve.points],
                    "seconds": [p[2] for p in curve.points]}}


def run_rejax(algo: str, env_id: str, seeds: int) -> dict:
  """rejax's PPO at the Zoo entry, the seeds in one ``vmap``."""
  import jax
  import numpy as np
  from rejax import PPO

  import timing

  e = entry(algo, env_id)
  _, steps = batches(e)
  lr, _ = _value(e["learning_rate"])
  clip, _ = _value(e["clip_range"])
  batch = e["n_envs"] * e["n_steps"]
  algo_ = PPO.create(
      env=env_id, total_timesteps=steps, num_envs=e["n_envs"],
      num_steps=e["n_steps"], num_epochs=e["n_epochs"],
      num_minibatches=max(1, batch // e["batch_size"]), learning_rate=lr,
      gamma=float(e["gamma"]), gae_lambda=float(e["gae_lambda"]),
      clip_eps=clip, vf_coef=2 * float(e["vf_coef"]),  # ½·MSE, as ours
      ent_coef=float(e["ent_coef"]), max_grad_norm=float(e["max_grad_norm"]),
      normalize_observations=bool(e["normalize"]),
      normalize_rewards=bool(e["normalize"]),
      eval_freq=max(batch, steps // 10), skip_initial_evaluation=True,
      agent_kwargs={"activation": "tanh", "hidden_layer_sizes": [64, 64]})
  notes = ["rejax clips the value loss (max form) always"]
  notes += [f"{name}: rejax has none (constant / Gaussian noise)"
           for name, lacking in (
               ("lin_ schedules", _value(e["learning_rate"])[1]
                or _value(e["clip_range"])[1]),
               ("gSDE", e["use_sde"]),
               ("log_std_init / ortho_init", bool(e["policy_kwargs"])))
           if lacking]
  keys = jax.random.split(jax.random.key(0), seeds)
  train = jax.jit(jax.vmap(algo_.train))
  (_, evaluation), compile_s, warm_s = timing.compile_and_run(train, keys)
  returns = np.asarray(evaluation[1])  # [seeds, evaluations, episodes]
  n = returns.shape[1]
  points = [(steps * (i + 1) // n) for i in range(n)]
  return {"compile_s": compile_s, "warm_s": warm_s,
          "env_steps": steps * seeds,
          "returns": returns[:, -1].mean(axis=1).tolist(),
          "curve": {"steps": points,
                    "return": returns.mean(axis=(0, 2)).tolist(),
                    "seconds": [compile_s + warm_s * (i + 1) / n
                                for i in range(n)]},
          "notes": notes}


def worker(args) -> None:
  if args.job:  # one of the processes of a host-stepped run (ours-cores)
    from jaxrl_align.host import distributed

    port, count, index = map(int, args.job.split(","))
    distributed.initialize(f"127.0.0.1:{port}", count, index)
  if args.library == "ours" or args.job:
    out = run_ours(args.algo, args.env, args.seeds, run_dir=args.run_dir)
    if args.job and not args.job.endswith(",0"):
      return  # process 0 reports the job's run
  elif args.library == "ours-cores":
    out = run_ours(args.algo, args.env, args.seeds, os.cpu_count() or 1)
  elif args.library == "rejax":
    out = run_rejax(args.algo, args.env, args.seeds)
  else:
    out = run_sb3(args.library, args.algo, args.env, args.seed)
  out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss \
      / 1024
  print("RESULT " + json.dumps(out))


# -------------------------------------------------------------- the run


def _launch(python, library, algo, env_id, seeds, seed, job=()):
  cmd = [python, os.path.abspath(__file__), "--worker", "--library", library,
         "--algo", algo, "--env", env_id, "--seeds", str(seeds), "--seed",
         str(seed), "--steps-scale", str(SCALE[0]), *job]
  env = dict(os.environ)
  if library == "ours-cores" and not job:  # one CPU device per core
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_"
                        f"platform_device_count={os.cpu_count() or 1}")
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env), time.perf_counter()


def _collect(proc, start) -> dict:
  out, err = proc.communicate()
  wall = time.perf_counter() - start
  lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not lines:
    tail = (err.strip().splitlines() or ["no output"])[-1]
    return {"error": tail[:300]}
  result = json.loads(lines[-1][len("RESULT "):])
  result["process_s"] = wall
  return result


def _run_ours_processes(python, algo, env_id, seeds, cores) -> dict:
  """``ours-cores`` on a task stepped on the host: one process per core
  (a ``jax.distributed`` job on 127.0.0.1), each stepping its share of
  the seeds, one run directory; process 0's result, timed until every
  process has ended."""
  import socket
  import tempfile

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  with tempfile.TemporaryDirectory() as tmp:
    began = time.perf_counter()
    procs = [_launch(python, "ours-cores", algo, env_id, seeds, 0,
                     ["--job", f"{port},{cores},{i}", "--run-dir", tmp])
             for i in range(cores)]
    outs = [p.communicate() for p, _ in procs]
    wall = time.perf_counter() - began
  for (p, _), (out, err) in zip(procs, outs):
    if p.returncode:
      return {"error": ((err.strip().splitlines() or ["no output"])[-1]
                        )[:300]}
  lines = [l for l in outs[0][0].splitlines() if l.startswith("RESULT ")]
  result = json.loads(lines[-1][len("RESULT "):])
  result["process_s"] = wall
  result["processes"] = cores
  return result


def run_library(library, algo, env_id, seeds, python, cores) -> dict:
  """A library's runs on one task: one process (JAX libraries; ours on a
  MuJoCo task as ``ours-cores``: one per core) or one per seed, ``cores``
  at a time; the per-seed results merged."""
  if library == "ours-cores" and env_id in MUJOCO_ENVS:
    return _run_ours_processes(python, algo, env_id, seeds, cores)
  if library in ("ours", "ours-cores", "rejax"):
    return _collect(*_launch(python, library, algo, env_id, seeds, 0))
  results, running = [], []
  began = time.perf_counter()
  for seed in range(seeds):
    running.append(_launch(python, library, algo, env_id, 1, seed))
    if len(running) == cores or seed == seeds - 1:
      results += [_collect(*r) for r in running]
      running = []
  errors = [r for r in results if "error" in r]
  if errors:
    return errors[0]
  first = results[0]["curve"]
  return {"process_s": time.perf_counter() - began,
          "process_s_per_seed": [r["process_s"] for r in results],
          "warm_s": max(r["warm_s"] for r in results),
          "env_steps": sum(r["env_steps"] for r in results),
          "returns": [r["returns"][0] for r in results],
          "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
          "concurrent": min(cores, seeds),
          "curve": {"steps": first["steps"],
                    "return": _mean_curves([r["curve"]["return"]
                                            for r in results]),
                    "seconds": first["seconds"]}}


def _mean_curves(curves):
  n = min(len(c) for c in curves)
  out = []
  for i in range(n):
    vals = [c[i] for c in curves if c[i] is not None]
    out.append(sum(vals) / len(vals) if vals else None)
  return out


def _rate(r) -> float | None:
  """Env steps per second of warm training (for one-process-per-seed
  libraries: each seed's rate times the seeds running at once)."""
  if "error" in r:
    return None
  if "concurrent" in r:
    per_seed = r["env_steps"] / len(r["returns"]) / r["warm_s"]
    return per_seed * r["concurrent"]
  return r["env_steps"] / r["warm_s"]


def _difference(ours, theirs) -> str:
  """Our mean return minus theirs, ± the standard error of that
  difference (each side's sample variance over its seeds)."""
  def mean_var(x):
    m = sum(x) / len(x)
    v = sum((a - m) ** 2 for a in x) / (len(x) - 1) if len(x) > 1 else 0.0
    return m, v / len(x)

  (a, va), (b, vb) = mean_var(ours), mean_var(theirs)
  return f"{a - b:+.1f} ± {(va + vb) ** 0.5:.1f}"


def table(results) -> str:
  rows = ["| task | algorithm | library | all seeds, wall (s) | compile (s) "
          "| warm (s) | env steps/s | eval return: mean (per seed) | "
          "peak RSS (MB) | ours: ×env steps/s, ×wall | ours-cores: "
          "×env steps/s, ×wall | ours − this: return ± SE |",
          "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: "
          "| --- | --- | ---: |"]
  for (env_id, algo), by_lib in results.items():
    for library, r in by_lib.items():
      if "error" in r:
        rows.append(f"| {env_id} | {algo} | {library} | failed: "
                    f"{r['error'][:80]} | | | | | | | | |")
        continue
      mean = sum(r["returns"]) / len(r["returns"])
      ratios = []
      for name in ("ours", "ours-cores"):
        ours = by_lib.get(name, {})
        ratios.append(
            f"{_rate(ours) / _rate(r):.1f}x, "
            f"{r['process_s'] / ours['process_s']:.1f}x"
            if not library.startswith("ours") and ours and "error" not in ours
            else "")
      ours = by_lib.get("ours") or by_lib.get("ours-cores", {})
      ratios.append(_difference(ours["returns"], r["returns"])
                    if not library.startswith("ours") and ours
                    and "error" not in ours else "")
      ratio = " | ".join(ratios)
      compile_s = r.get("compile_s")
      rows.append(
          f"| {env_id} | {algo} | {library} | {r['process_s']:.1f} | "
          f"{'' if compile_s is None else f'{compile_s:.1f}'} | "
          f"{r['warm_s']:.1f} | {_rate(r):,.0f} | {mean:.1f} "
          f"({', '.join(f'{x:.0f}' for x in r['returns'])}) | "
          f"{r['peak_rss_mb']:,.0f} | {ratio} |")
  return "\n".join(rows)


def plots(results, out_dir) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  keys = list(results)
  for x_name in ("steps", "seconds"):
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2),
                             squeeze=False)
    for ax, key in zip(axes[0], keys):
      for library, r in results[key].items():
        if "error" in r:
          continue
        c = r["curve"]
        pts = [(x, y) for x, y in zip(c[x_name], c["return"]) if y is not None]
        if pts:
          ax.plot(*zip(*pts), marker=".", markersize=3, label=library)
      ax.set_title(f"{key[0]} {key[1].upper()}", fontsize=9)
      ax.set_xlabel("env steps" if x_name == "steps" else "wall seconds")
      if x_name == "seconds":
        ax.set_xscale("log")
      ax.legend(fontsize=7)
    axes[0][0].set_ylabel("training-episode return")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"return_vs_{x_name}.png"), dpi=110)
    plt.close(fig)


def _save(args, cores, results) -> None:
  """Write peers.json atomically (a temporary file renamed over it)."""
  path = os.path.join(args.out, "peers.json")
  with open(path + ".tmp", "w") as f:
    json.dump({"machine": {"processor": platform.processor(),
                           "cores": cores, "python": platform.python_version()},
               "date": time.strftime("%Y-%m-%d"),
               "seeds": args.seeds, "steps_scale": args.steps_scale,
               "results": {f"{e}/{a}": v for (e, a), v in results.items()}},
              f, indent=1)
  os.replace(path + ".tmp", path)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--envs", nargs="+", default=list(ENVS),
                      choices=ENVS + MUJOCO_ENVS,
                      help="default: the five classic-control tasks")
  parser.add_argument("--algos", nargs="+", default=["ppo", "trpo"],
                      choices=["ppo", "trpo"])
  parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES),
                      choices=list(LIBRARIES))
  parser.add_argument("--seeds", type=int, default=4)
  parser.add_argument("--seed", type=int, default=0,
                      help=argparse.SUPPRESS)
  parser.add_argument("--steps-scale", type=float, default=1.0,
                      help="the Zoo's step budgets times this (quick checks; "
                           "1 for results)")
  parser.add_argument("--peer-python", default=".venv-peers/bin/python")
  parser.add_argument("--out", default="benchmarks/results/peers")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--library", help=argparse.SUPPRESS)
  parser.add_argument("--algo", help=argparse.SUPPRESS)
  parser.add_argument("--env", help=argparse.SUPPRESS)
  parser.add_argument("--job", help=argparse.SUPPRESS)  # PORT,COUNT,INDEX
  parser.add_argument("--run-dir", help=argparse.SUPPRESS)
  args = parser.parse_args()
  SCALE[0] = args.steps_scale
  if args.worker:
    return worker(args)
  if args.seeds < 1 or not args.steps_scale > 0:
    parser.exit(2, "peers.py: --seeds must be at least 1 and --steps-scale "
                   "positive\n")
  peers = [l for l in args.libraries if not l.startswith("ours")]
  if peers and not os.path.exists(args.peer_python):
    parser.exit(2, f"peers.py: no peer interpreter at {args.peer_python} "
                   "(make bench-peers builds it)\n")
  os.makedirs(args.out, exist_ok=True)
  cores = os.cpu_count() or 1
  print(f"{platform.processor() or platform.machine()}, {cores} cores; "
        f"{args.seeds} seeds; peers: {args.peer_python}", flush=True)
  results = {}
  for env_id in args.envs:
    for algo in args.algos:
      by_lib = {}
      for library in args.libraries:
        if algo not in LIBRARIES[library] or (
            library == "ours-cores" and (cores == 1 or args.seeds % cores)) or (
                env_id in MUJOCO_ENVS and library == "rejax"):
          continue
        python = (sys.executable if library.startswith("ours")
                  else args.peer_python)
        r = run_library(library, algo, env_id, args.seeds, python, cores)
        by_lib[library] = r
        what = (r["error"] if "error" in r else
                f"{r['process_s']:.1f}s process, {_rate(r):,.0f} steps/s, "
                f"return {sum(r['returns']) / len(r['returns']):.1f}")
        print(f"{env_id:26s} {algo:4s} {library:11s} {what}", flush=True)
        for note in r.get("notes", []):
          print(f"{'':32s} note: {note}")
      results[(env_id, algo)] = by_lib
      _save(args, cores, results)  # after each task: a cut run keeps its part
  text = table(results)
  with open(os.path.join(args.out, "peers.md"), "w") as f:
    f.write(text + "\n")
  print("\n" + text)
  plots(results, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
