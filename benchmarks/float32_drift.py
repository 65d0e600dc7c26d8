"""How far float32 trajectories drift from Gymnasium's float64 ones.

CartPole and Acrobot are chaotic: from the same initial state and the same
actions, a float32 simulation (JAX's default) separates from Gymnasium's
float64 one as rounding errors grow. For each task, 64 episodes start from
Gymnasium resets and follow the same random actions for 500 steps (stepping
on through terminations: this measures the dynamics, not the episode); we
report the median and maximum over episodes of ``max |Δ state|`` at several
horizons, for JAX in float32 and, as a control, in float64.

Usage: ``python benchmarks/float32_drift.py``.
"""

from __future__ import annotations

import warnings

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments.classic_control import acrobot
from gymnax.environments.classic_control import cartpole

from jaxrl_align.envs import registry

HORIZONS = (10, 50, 100, 200, 300, 500)
EPISODES = 64

TASKS = {
    "CartPole-v1": (
        2, lambda s: cartpole.EnvState(x=s[0], x_dot=s[1], theta=s[2],
                                       theta_dot=s[3], time=0),
        lambda st: jnp.stack([st.x, st.x_dot, st.theta, st.theta_dot])),
    "Acrobot-v1": (
        3, lambda s: acrobot.EnvState(joint_angle1=s[0], joint_angle2=s[1],
                                      velocity_1=s[2], velocity_2=s[3],
                                      time=0),
        lambda st: jnp.stack([st.joint_angle1, st.joint_angle2,
                              st.velocity_1, st.velocity_2])),
}


def gymnasium_trajectory(env_id, seed, actions):
  env = gymnasium.make(env_id).unwrapped
  env.reset(seed=seed)
  start = np.array(env.state, np.float64)
  states = []
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for a in actions:
      env.step(int(a))
      states.append(np.array(env.state, np.float64))
  return start, np.array(states)


def jax_trajectory(env_id, start, actions, x64):
  _, to_state, from_state = TASKS[env_id]
  env, params = registry.make_gymnax(env_id)
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32

    def body(s, a):
      with registry.foreign_numerics():
        _, new, _, _, _ = env.step_env(jax.random.key(0), s, a, params)
      return new, from_state(new)

    s0 = to_state(jnp.asarray(start, dtype))
    _, states = jax.jit(lambda s: jax.lax.scan(body, s, jnp.asarray(actions)))(
        s0)
    return np.asarray(states, np.float64)


def measure(env_id):
  num_actions = TASKS[env_id][0]
  rng = np.random.default_rng(0)
  drift = {True: [], False: []}
  for episode in range(EPISODES):
    actions = rng.integers(0, num_actions, max(HORIZONS))
    start, g_states = gymnasium_trajectory(env_id, episode, actions)
    for x64 in (False, True):
      j_states = jax_trajectory(env_id, start, actions, x64)
      err = np.abs(j_states - g_states).max(axis=1)
      drift[x64].append([err[:h].max() for h in HORIZONS])
  return {k: np.array(v) for k, v in drift.items()}


def main():
  print(f"max |state difference| to Gymnasium {gymnasium.__version__} "
        f"(float64), same start and actions; median / max over {EPISODES} "
        "episodes")
  print(f"{'task':12s} {'JAX dtype':9s} " + " ".join(
      f"{'≤' + str(h) + ' steps':>19s}" for h in HORIZONS))
  for env_id in TASKS:
    drift = measure(env_id)
    for x64 in (False, True):
      d = drift[x64]
      cells = " ".join(f"{np.median(d[:, i]):8.1e} / {d[:, i].max():8.1e}"
                       for i in range(len(HORIZONS)))
      print(f"{env_id:12s} {'float64' if x64 else 'float32':9s} {cells}")


if __name__ == "__main__":
  main()
