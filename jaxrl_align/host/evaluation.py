"""Evaluation and video of a run directory's checkpoints (host side)."""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxrl_align import compiler
from jaxrl_align.host import checkpoints
from jaxrl_align.host import files
from jaxrl_align.host import runner


def restore_run(run_dir: str, step: int | None = None, data=None):
  """``(learner, config, settings, step, states)`` of a run's checkpoint
  (the newest readable one when ``step`` is None; ``data``: the learner's,
  for learners that have some)."""
  learner, config, settings = runner.load_config(run_dir)
  template = runner.initial_states(learner, config, settings, data)
  store = checkpoints.Checkpoints(os.path.join(run_dir, runner.CHECKPOINTS),
                                  settings.keep)
  try:
    step, states = store.restore(template, step)
  finally:
    store.close()
  return learner, config, settings, step, states


def evaluate_run(run_dir: str, episodes: int, seed: int = 0):
  """``([seeds, episodes] deterministic returns, update)`` of a run's
  newest readable checkpoint."""
  if not isinstance(episodes, int) or episodes < 1:
    raise files.RunError(f"`episodes` must be an integer >= 1, got "
                         f"{episodes!r}.")
  learner, config, settings, step, states = restore_run(run_dir)
  if learner.evaluate is None:
    raise files.RunError(f"{run_dir!r} is a {learner.name} run, which has no "
                         f"evaluation.")
  evaluate = jax.jit(jax.vmap(
      lambda s, k: learner.evaluate(config, s, k, None, episodes)),
      compiler_options=compiler.compiler_options())
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
    raise files.RunError(f"`seed_index` must be in [0, {settings.seeds}), got "
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
  tmp = f"{path}.tmp-{os.getpid()}.gif"  # Pillow picks the format by suffix
  images[0].save(tmp, save_all=True, append_images=images[1:], duration=20,
                 loop=0)
  os.replace(tmp, path)
  return total, len(frames)
