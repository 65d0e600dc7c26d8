"""Evaluation and video of a run directory's checkpoints (host side)."""

from __future__ import annotations

import dataclasses
import os
import warnings

import jax
import numpy as np

from jaxrl_align import agents
from jaxrl_align import envs
from jaxrl_align.agents import on_policy
from jaxrl_align.host import checkpoints
from jaxrl_align.host import files
from jaxrl_align.host import programs
from jaxrl_align.host import runner
from jaxrl_align.host import settings as settings_lib


def _restore(progs, run_dir, config, settings, step, data):
  directory = os.path.join(run_dir, runner.CHECKPOINTS)
  if step is None:  # found (or refused) before anything compiles
    step = checkpoints.newest_readable(directory)
  template = progs.init(config, programs.seed_keys(settings), data)
  store = checkpoints.Checkpoints(directory, settings.keep)
  try:
    return store.restore(template, step)
  finally:
    store.close()


def restore_run(run_dir: str, step: int | None = None, data=None):
  """``(learner, config, settings, step, states)`` of a run's checkpoint
  (the newest readable one when ``step`` is None; ``data``: the learner's,
  for learners that have some)."""
  learner, config, settings = runner.load_config(run_dir)
  progs = programs.for_run(learner, config, settings, data)
  try:
    step, states = _restore(progs, run_dir, config, settings, step, data)
  finally:
    progs.close()
  return learner, config, settings, step, states


def evaluate_run(run_dir: str, episodes: int, seed: int = 0):
  """``([seeds, episodes] deterministic returns, update)`` of a run's
  newest readable checkpoint."""
  if not isinstance(episodes, int) or episodes < 1:
    raise files.RunError(f"`episodes` must be an integer >= 1, got "
                         f"{episodes!r}.")
  learner, config, settings = runner.load_config(run_dir)
  if learner.name not in agents.LEARNERS:
    raise files.RunError(f"{run_dir!r} is a {learner.name} run: its "
                         f"evaluation is in its summary.json (eval evaluates "
                         f"environment learners).")
  task = settings_lib.task_for(config)  # once: the programs' data
  progs = programs.for_run(learner, config, dataclasses.replace(
      settings, eval_episodes=episodes), task)
  try:
    step, states = _restore(progs, run_dir, config, settings, None, task)
    keys = jax.random.split(jax.random.key(seed), settings.seeds)
    return np.asarray(progs.evaluate(config, states, keys, task)), step
  finally:
    progs.close()


MAX_FRAMES = 10_000  # an episode without a time limit is cut here


def record_video(run_dir: str, path: str, *, seed_index: int = 0,
                 env_seed: int = 0) -> tuple[float, int]:
  """Renders one deterministic episode of seed ``seed_index``'s policy in
  Gymnasium's own env (``render_mode="rgb_array"``; for a task compiled
  with MJX, the Gymnasium task it is) to an animated GIF (at most
  :data:`MAX_FRAMES` frames).

  Returns:
    ``(episode return, frames)``.
  """
  # Headless rendering: pygame needs neither a screen nor a sound card.
  os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
  os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
  import gymnasium
  from PIL import Image

  task = settings_lib.task_for(runner.load_config(run_dir)[1])
  _, config, settings, _, states = restore_run(run_dir, data=task)
  if not 0 <= seed_index < settings.seeds:
    raise files.RunError(f"`seed_index` must be in [0, {settings.seeds}), got "
                         f"{seed_index}.")
  policy = on_policy.deterministic_policy(
      config, jax.tree.map(lambda x: x[seed_index], states), task)

  @jax.jit
  def act(obs):
    return policy(obs[None])[0]

  try:
    env = gymnasium.make(envs.gymnasium_id(config.env_id),
                         render_mode="rgb_array")
  except gymnasium.error.Error as e:
    raise files.RunError(f"{config.env_id} cannot be rendered by Gymnasium: "
                         f"{e}") from None
  with warnings.catch_warnings():
    # MuJoCo's renderer tries a window first; what GLFW says of the
    # missing display is not the user's concern (a failure is, below).
    warnings.filterwarnings("ignore", module="glfw")
    try:
      obs, _ = env.reset(seed=env_seed)
      try:
        frames, total, done = [env.render()], 0.0, False
      except gymnasium.error.DependencyNotInstalled as e:
        raise files.RunError(f"rendering needs the video extra: pip install "
                             f"'jaxrl_align[video]' ({e})") from None
      except Exception as e:  # pylint: disable=broad-except
        # MuJoCo's renderer without an OpenGL context (mujoco.FatalError), a
        # display-less pygame, ...: what the renderer said, in one line.
        hint = (" (MuJoCo renders without a display with MUJOCO_GL=egl or "
                "MUJOCO_GL=osmesa, where those libraries are installed)"
                if "mujoco" in type(e).__module__ + str(e).lower() or
                "OpenGL" in str(e) else "")
        raise files.RunError(
            f"{envs.gymnasium_id(config.env_id)} could not be rendered here: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            f"{hint}") from None
      while not done and len(frames) <= MAX_FRAMES:
        action = np.asarray(act(np.asarray(obs, np.float32)))
        if isinstance(env.action_space, gymnasium.spaces.Box):
          action = np.clip(action.reshape(env.action_space.shape),
                           env.action_space.low, env.action_space.high)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        done = terminated or truncated
        frames.append(env.render())
    finally:
      env.close()
  images = [Image.fromarray(f) for f in frames]
  tmp = f"{path}.tmp-{os.getpid()}.gif"  # Pillow picks the format by suffix
  images[0].save(tmp, save_all=True, append_images=images[1:], duration=20,
                 loop=0)
  os.replace(tmp, path)
  return total, len(frames)
