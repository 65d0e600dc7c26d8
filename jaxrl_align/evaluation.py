"""Evaluation and video of a run directory's checkpoints (host side)."""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxrl_align import agents
from jaxrl_align import checkpoints
from jaxrl_align import experiment


def restore_run(run_dir: str, step: int | None = None):
  """``(algo, config, settings, step, states)`` of a run's checkpoint (the
  newest readable one when ``step`` is None)."""
  algo, config, settings = experiment.load_config(run_dir)
  module, _ = experiment.algo_module(algo)
  init, _, _ = experiment.programs(module, config, settings)
  template = init(config, jax.random.split(jax.random.key(settings.seed),
                                           settings.seeds))
  store = checkpoints.Checkpoints(
      os.path.join(run_dir, experiment.CHECKPOINTS), settings.keep)
  try:
    step, states = store.restore(template, step)
  finally:
    store.close()
  return algo, config, settings, step, states


def evaluate_run(run_dir: str, episodes: int, seed: int = 0):
  """``([seeds, episodes] deterministic returns, update)`` of a run's
  newest readable checkpoint."""
  if not isinstance(episodes, int) or episodes < 1:
    raise experiment.RunError(f"`episodes` must be an integer >= 1, got {episodes!r}.")
  algo, config, settings, step, states = restore_run(run_dir)
  module, _ = experiment.algo_module(algo)
  evaluate = jax.jit(jax.vmap(
      lambda s, k: module.evaluate(config, s, k, episodes)),
      compiler_options=agents.compiler_options())
  keys = jax.random.split(jax.random.key(seed), settings.seeds)
  return np.asarray(evaluate(states, keys)), step


def record_video(run_dir: str, path: str, *, seed_index: int = 0,
                 env_seed: int = 0) -> tuple[float, int]:
  """Renders one deterministic episode of seed ``seed_index``'s policy in
  Gymnasium's own env (``render_mode="rgb_array"``) to an animated GIF.

  Returns:
    ``(episode return, frames)``.
  """
  # Headless rendering: pygame needs neither a screen nor a sound card.
  os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
  os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
  import gymnasium
  from PIL import Image

  from jaxrl_align import normalization
  from jaxrl_align.agents import on_policy

  _, config, settings, _, states = restore_run(run_dir)
  if not 0 <= seed_index < settings.seeds:
    raise experiment.RunError(f"`seed_index` must be in [0, {settings.seeds}), got "
                   f"{seed_index}.")
  state = jax.tree.map(lambda x: x[seed_index], states)
  policy = on_policy.task_policy(config)
  stats = on_policy.obs_stats(config, state.rollout.env_state)

  @jax.jit
  def act(obs):
    if stats is not None:
      obs = normalization.normalize(stats, obs, clip=on_policy.OBS_CLIP)
    return policy.mode(state.params, obs[None])[0]

  env = gymnasium.make(config.env_id, render_mode="rgb_array")
  try:
    obs, _ = env.reset(seed=env_seed)
    frames, total, done = [env.render()], 0.0, False
    while not done:
      action = np.asarray(act(np.asarray(obs, np.float32)))
      if isinstance(env.action_space, gymnasium.spaces.Box):
        action = np.clip(action, env.action_space.low, env.action_space.high)
      obs, reward, terminated, truncated, _ = env.step(action)
      total += float(reward)
      done = terminated or truncated
      frames.append(env.render())
  finally:
    env.close()
  images = [Image.fromarray(f) for f in frames]
  tmp = f"{path}.tmp-{os.getpid()}.gif"
  images[0].save(tmp, save_all=True, append_images=images[1:], duration=20,
                 loop=0)
  os.replace(tmp, path)
  return total, len(frames)
