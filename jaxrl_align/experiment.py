"""Host-side experiment runner: chunked, vmapped training with progress,
metrics, checkpoints that resume exactly, evaluation and plots.

A run trains ``seeds`` copies of one learner in one ``vmap``. The pure
``update`` runs in jitted chunks of ``chunk`` updates (``lax.scan``); between
chunks the host writes metrics, shows progress and saves checkpoints, so the
training program is the same whether a run was interrupted or not: resuming
from a checkpoint gives bit-identical parameters and metrics.

A run directory holds::

    config.json         algorithm, every config field, runner settings
    metrics.jsonl       one JSON object per update per seed
    checkpoints/<step>  orbax checkpoints (atomic; the last ``keep`` kept;
                        :mod:`jaxrl_align.checkpoints`)
    summary.json        final deterministic evaluation per seed
    learning_curve.png  episode return against env steps, mean and band
    tensorboard/        events, with ``tensorboard=True``
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import signal
import sys
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxrl_align import agents
from jaxrl_align import checkpoints
from jaxrl_align.agents import ppo
from jaxrl_align.agents import trpo

ALGOS = {"ppo": (ppo, ppo.PPOConfig), "trpo": (trpo, trpo.TRPOConfig)}
FORMAT_VERSION = 1
CHECKPOINTS = "checkpoints"


class RunError(ValueError):
  """A run cannot start or resume as asked (the message says why)."""


@dataclasses.dataclass(frozen=True)
class RunnerSettings:
  """How a run is executed (not what is learned).

  Attributes:
    seeds: runs trained in one ``vmap`` (seed ``i`` uses key ``split(key(seed),
      seeds)[i]``).
    seed: base seed.
    chunk: updates per jitted call (divides the number of updates, so one
      program serves every chunk).
    checkpoint_every: save a checkpoint once this many updates have passed
      since the last one (and always at the end).
    keep: checkpoints kept.
    eval_episodes: episodes per seed in the final evaluation.
  """
  seeds: int = 1
  seed: int = 0
  chunk: int = 0
  checkpoint_every: int = 0
  keep: int = 3
  eval_episodes: int = 16


# ----------------------------------------------------------------- configs


def config_to_dict(config) -> dict[str, Any]:
  """Config fields as plain JSON values (non-finite floats as strings)."""
  out = {}
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if isinstance(value, tuple):
      value = list(value)
    elif isinstance(value, (float, np.floating)):
      value = float(value)
      if not math.isfinite(value):
        value = str(value)
    elif isinstance(value, np.integer):
      value = int(value)
    out[field.name] = value
  return out


def config_from_dict(algo: str, fields: dict[str, Any]):
  """Inverse of :func:`config_to_dict` (validates, like any config)."""
  _, config_cls = algo_module(algo)
  kwargs = {}
  for name, value in fields.items():
    if isinstance(value, list):
      value = tuple(value)
    elif value in ("inf", "-inf", "nan"):
      value = float(value)
    kwargs[name] = value
  return config_cls(**kwargs)


def static_fields(config) -> list[str]:
  return [f.name for f in dataclasses.fields(config)
          if not f.metadata.get("pytree_node", True)]


def config_diff(old, new) -> dict[str, tuple[Any, Any]]:
  """Fields whose values differ: ``{name: (old, new)}``."""
  a, b = config_to_dict(old), config_to_dict(new)
  return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def algo_module(algo: str):
  if algo not in ALGOS:
    raise RunError(f"Unknown algorithm {algo!r}; choose from "
                   f"{', '.join(ALGOS)}.")
  return ALGOS[algo]


def default_chunk(num_updates: int, target_chunks: int = 20) -> int:
  """The largest divisor of ``num_updates`` that is at most
  ``num_updates / target_chunks`` (at least 1)."""
  limit = max(1, num_updates // target_chunks)
  return max(d for d in range(1, limit + 1) if num_updates % d == 0)


def resolve_settings(config, settings: RunnerSettings) -> RunnerSettings:
  """Fills ``chunk`` and ``checkpoint_every`` and validates every field."""
  n = config.num_updates
  for name in ("seeds", "keep", "eval_episodes"):
    value = getattr(settings, name)
    if not isinstance(value, int) or value < 1:
      raise RunError(f"`{name}` must be an integer >= 1, got {value!r}.")
  if not isinstance(settings.seed, int) or settings.seed < 0:
    raise RunError(f"`seed` must be an integer >= 0, got {settings.seed!r}.")
  chunk = settings.chunk or default_chunk(n)
  if not isinstance(chunk, int) or chunk < 1 or n % chunk:
    raise RunError(f"`chunk` must divide the number of updates ({n}), got "
                   f"{chunk!r}.")
  every = settings.checkpoint_every or chunk * max(1, n // (10 * chunk))
  if not isinstance(every, int) or every < 1:
    raise RunError(f"`checkpoint_every` must be an integer >= 1, got "
                   f"{every!r}.")
  return dataclasses.replace(settings, chunk=chunk, checkpoint_every=every)


# ------------------------------------------------------------------ files


def _atomic_write(path: str, text: str) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _plain(value: float):
  value = float(value)
  return value if math.isfinite(value) else None


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def read_run(run_dir: str) -> dict[str, Any]:
  path = os.path.join(run_dir, "config.json")
  if not os.path.exists(path):
    raise RunError(f"{run_dir!r} is not a run directory (no config.json).")
  with open(path) as f:
    return json.load(f)


def load_config(run_dir: str):
  run = read_run(run_dir)
  return run["algo"], config_from_dict(run["algo"], run["config"]), \
      RunnerSettings(**run["runner"])


# ---------------------------------------------------------------- running


class RunResult(NamedTuple):
  """What :func:`run` returns (host values).

  Attributes:
    states: final learner states, leading axis = seed.
    eval_returns: ``[seeds, eval_episodes]`` deterministic returns.
    summary: the dict written to ``summary.json``.
    interrupted: True when stopped by Ctrl-C (a checkpoint was saved).
  """
  states: Any
  eval_returns: np.ndarray | None
  summary: dict[str, Any] | None
  interrupted: bool


class _Interrupt:
  """Turns the first Ctrl-C into a flag checked between chunks."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGINT, self._handle)
    except ValueError:  # not the main thread: no handler, no flag
      self._previous = None
    return self

  def _handle(self, signum, frame):
    self.requested = True
    # A second Ctrl-C interrupts at once; the last checkpoint stays intact.
    signal.signal(signal.SIGINT, signal.default_int_handler)

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)


def programs(module, config, settings):
  """``(init, chunk, evaluate)``, jitted and vmapped over seeds.

  Cached per learner, chunk length and evaluation size, so runs that share
  a config's static fields reuse the compiled programs (jit keys them on
  the config's static fields).
  """
  del config  # an argument of each program, not part of the cache key
  return _programs(module, settings.chunk, settings.eval_episodes)


@functools.lru_cache(maxsize=None)
def _programs(module, chunk: int, eval_episodes: int):
  options = agents.compiler_options()
  init = jax.jit(jax.vmap(module.init, in_axes=(None, 0)),
                 compiler_options=options)

  def _chunk(config, state):
    return jax.lax.scan(lambda s, _: module.update(config, s), state, None,
                        length=chunk)

  run_chunk = jax.jit(jax.vmap(_chunk, in_axes=(None, 0)),
                      compiler_options=options)
  evaluate = jax.jit(jax.vmap(
      lambda c, s, k: module.evaluate(c, s, k, eval_episodes),
      in_axes=(None, 0, 0)), compiler_options=options)
  return init, run_chunk, evaluate


def prepare_run_dir(out: str, *, resume: bool, overwrite: bool) -> None:
  """Refuses to write over an existing run unless asked to."""
  if resume:
    read_run(out)
    return
  if os.path.isdir(out) and os.listdir(out):
    if not overwrite:
      raise RunError(
          f"{out!r} exists and is not empty; pass --resume to continue that "
          f"run or --overwrite to replace it.")
    shutil.rmtree(out)
  os.makedirs(out, exist_ok=True)


def run(algo: str, config, out: str, settings: RunnerSettings = RunnerSettings(),
        *, resume: bool = False, overwrite: bool = False,
        tensorboard: bool = False, progress: bool = True,
        stop_after: int | None = None) -> RunResult:
  """Trains, logs, checkpoints and evaluates one run.

  Args:
    algo: ``"ppo"`` or ``"trpo"``.
    config: its config.
    out: run directory.
    settings: runner settings (seeds, chunk, checkpoints, evaluation).
    resume: continue the run in ``out`` from its newest readable checkpoint;
      ``config`` must equal the stored one in every static field, and the
      stored runner settings are used (``settings`` is ignored).
    overwrite: replace an existing, non-empty ``out``.
    tensorboard: also write TensorBoard events (needs ``tensorboardX``).
    progress: show a progress bar on stderr.
    stop_after: stop (with a checkpoint) once this many updates are done,
      as Ctrl-C would (for tests and for splitting a run across jobs).

  Returns:
    A :class:`RunResult`.
  """
  module, _ = algo_module(algo)
  if resume:
    stored_algo, stored, stored_settings = load_config(out)
    if stored_algo != algo:
      raise RunError(f"The run in {out!r} is {stored_algo}, not {algo}.")
    diff = config_diff(stored, config)
    static = {k: v for k, v in diff.items() if k in static_fields(config)}
    if static:
      raise RunError(
          "Cannot resume with different static fields (they change the "
          "program):\n" + "\n".join(f"  {k}: {a!r} (stored) -> {b!r}"
                                    for k, (a, b) in static.items()))
    for k, (a, b) in diff.items():
      print(f"warning: resuming with {k} = {b!r} (was {a!r}); the result "
            f"will differ from an uninterrupted run.", file=sys.stderr)
    settings = stored_settings
  else:
    settings = resolve_settings(config, settings)
  prepare_run_dir(out, resume=resume, overwrite=overwrite)
  if not resume:
    _atomic_write(os.path.join(out, "config.json"), json.dumps({
        "format": FORMAT_VERSION, "algo": algo,
        "config": config_to_dict(config),
        "runner": dataclasses.asdict(settings),
        "jax": jax.__version__}, indent=2) + "\n")

  init, chunk_fn, evaluate = programs(module, config, settings)
  keys = jax.random.split(jax.random.key(settings.seed), settings.seeds)
  states = init(config, keys)
  store = checkpoints.Checkpoints(os.path.join(out, CHECKPOINTS),
                                  settings.keep)
  metrics_path = os.path.join(out, "metrics.jsonl")
  done = 0
  if resume:
    done, states = store.restore(states)
    kept = [m for m in read_metrics(out) if m["update"] <= done]
    _atomic_write(metrics_path, "".join(json.dumps(m) + "\n" for m in kept))
    if diff:  # the run's record says which hyperparameters changed, when
      stored_run = read_run(out)
      stored_run["config"] = config_to_dict(config)
      stored_run.setdefault("changes", []).append(
          {"at_update": done, "changes": {k: list(v) for k, v in diff.items()}})
      _atomic_write(os.path.join(out, "config.json"),
                    json.dumps(stored_run, indent=2) + "\n")
  writer = _tensorboard_writer(out) if tensorboard else None

  n = config.num_updates
  steps_per_update = config.num_envs * config.num_steps
  bar = progress_bar(n * steps_per_update, done * steps_per_update, progress)
  last_saved, start, first_chunk_s = done, time.perf_counter(), None
  interrupted = False
  with _Interrupt() as interrupt, open(metrics_path, "a") as metrics_file:
    while done < n:
      t0 = time.perf_counter()
      states, metrics = chunk_fn(config, states)
      metrics = jax.tree.map(np.asarray, jax.device_get(metrics))
      if first_chunk_s is None:
        first_chunk_s = time.perf_counter() - t0
      _write_metrics(metrics_file, metrics, done, writer)
      done += settings.chunk
      if bar is not None:
        bar.update(settings.chunk * steps_per_update)
        bar.set_postfix(ret=f"{float(np.mean(metrics['episode_return'][:, -1])):.1f}")
      stop = interrupt.requested or (stop_after is not None
                                     and done >= stop_after and done < n)
      if done - last_saved >= settings.checkpoint_every or done == n or stop:
        metrics_file.flush()
        os.fsync(metrics_file.fileno())
        store.save(done, states)
        last_saved = done
      if stop:
        interrupted = True
        break
  if bar is not None:
    bar.close()
  if writer is not None:
    writer.close()
  store.close()
  if interrupted:
    print(f"Stopped after update {done} of {n}; checkpoint saved. Resume "
          f"with: jaxrl-align train --resume {out}", file=sys.stderr)
    return RunResult(states, None, None, True)

  wall = time.perf_counter() - start
  eval_keys = jax.random.split(jax.random.key(settings.seed + 1),
                               settings.seeds)
  returns = np.asarray(evaluate(config, states, eval_keys))
  summary = _summary(algo, config, settings, read_metrics(out), returns,
                     wall, first_chunk_s)
  _atomic_write(os.path.join(out, "summary.json"),
                json.dumps(summary, indent=2) + "\n")
  from jaxrl_align import plotting  # matplotlib is host-side only
  plotting.plot_runs([out], os.path.join(out, "learning_curve.png"))
  return RunResult(states, returns, summary, False)


def _write_metrics(f, metrics, done, writer) -> None:
  """One line per update per seed; metrics are ``[seeds, chunk]`` arrays."""
  seeds, length = metrics["episode_return"].shape
  for j in range(length):
    update = done + j + 1
    for i in range(seeds):
      line = {"update": update, "seed": i}
      line.update({k: _plain(v[i, j]) for k, v in metrics.items()})
      f.write(json.dumps(line, allow_nan=False) + "\n")
    if writer is not None:
      step = int(metrics["env_steps"][0, j])
      for k, v in metrics.items():
        writer.add_scalar(f"train/{k}", float(np.mean(v[:, j])), step)


def _summary(algo, config, settings, metrics, returns, wall, first_chunk_s):
  last = {}
  for m in metrics:
    last[m["seed"]] = m
  per_seed = [{"seed": i, "eval_return_mean": float(np.mean(returns[i])),
               "train_episode_return": last.get(i, {}).get("episode_return")}
              for i in range(settings.seeds)]
  means = np.mean(returns, axis=1)
  return {
      "algo": algo, "env_id": config.env_id, "seeds": settings.seeds,
      "total_timesteps": config.num_updates * config.num_envs
                         * config.num_steps,
      "eval_episodes": settings.eval_episodes,
      "eval_return_mean": float(np.mean(means)),
      "eval_return_std_over_seeds": float(np.std(means)),
      "per_seed": per_seed,
      "wall_seconds_this_session": wall,
      "first_chunk_seconds": first_chunk_s,  # with compilation, if any
  }


def format_summary(summary: dict[str, Any]) -> str:
  """The final summary as a small text table."""
  lines = [f"{summary['algo'].upper()} on {summary['env_id']}, "
           f"{summary['seeds']} seeds x {summary['total_timesteps']:,} steps",
           f"  {'seed':>4s} {'eval return':>12s} {'last train return':>18s}"]
  for row in summary["per_seed"]:
    train = row["train_episode_return"]
    lines.append(f"  {row['seed']:4d} {row['eval_return_mean']:12.1f} "
                 f"{train if train is not None else float('nan'):18.1f}")
  lines.append(f"  mean {summary['eval_return_mean']:11.1f} ± "
               f"{summary['eval_return_std_over_seeds']:.1f} (std over seeds, "
               f"{summary['eval_episodes']} deterministic episodes each); "
               f"{summary['wall_seconds_this_session']:.1f} s")
  return "\n".join(lines)


def progress_bar(total: int, initial: int, enabled: bool):
  """A tqdm bar on stderr counting ``total`` steps from ``initial``, or
  ``None`` when not ``enabled`` (callers skip their updates then)."""
  if not enabled:
    return None
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, unit="step", unit_scale=True,
              dynamic_ncols=True, file=sys.stderr)


def _tensorboard_writer(out: str):
  try:
    from tensorboardX import SummaryWriter
  except ImportError as e:
    raise RunError("TensorBoard logging needs tensorboardX: "
                   "pip install 'jaxrl_align[tensorboard]'.") from e
  return SummaryWriter(os.path.join(out, "tensorboard"))
