"""Learning is measured: returns over several seeds against stated
thresholds, with each task's preset config (marked slow; CI runs them)."""

import jax
import numpy as np
import pytest

from jaxrl_align.host import stepping
from jaxrl_align.agents import ppo
from jaxrl_align.agents import trpo

ALGOS = {"ppo": (ppo, ppo.PPOConfig), "trpo": (trpo, trpo.TRPOConfig)}


def train_and_evaluate(algo, env_id, total_timesteps, seeds, episodes=16):
  module, config_cls = ALGOS[algo]
  config = config_cls(env_id=env_id, total_timesteps=total_timesteps)
  keys = jax.random.split(jax.random.key(2026), seeds)
  states, metrics = jax.jit(jax.vmap(module.train, in_axes=(None, 0)))(
      config, keys)
  eval_keys = jax.random.split(jax.random.key(7), seeds)
  returns = jax.jit(jax.vmap(lambda s, k: module.evaluate(
      config, s, k, episodes)))(states, eval_keys)
  return np.asarray(returns).mean(axis=1), metrics


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_cartpole_100k_steps_8_seeds(algo):
  per_seed, _ = train_and_evaluate(algo, "CartPole-v1", 100_000, seeds=8)
  assert (per_seed >= 475).sum() >= 7, per_seed


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_pendulum_200k_steps_4_seeds(algo):
  per_seed, _ = train_and_evaluate(algo, "Pendulum-v1", 200_000, seeds=4)
  assert per_seed.mean() >= -250, per_seed


@pytest.mark.slow
def test_mountain_car_ppo_preset_solves_it_within_the_zoo_budget():
  # PPO's MountainCar-v0 preset: the Zoo's entry with PyTorch's default
  # init (docs/agents.md). Gymnasium calls -110 solved; -105 is better than
  # SB3's and SBX's means at the same budget (-109 to -114, README). Measured
  # here -101.9 (-99 to -106); -99.0 to -99.5 on 8 seeds of three other key
  # sets. The orthogonal init (the Zoo's) fails it: -108.5 here, -113 to
  # -120 on the other key sets. About a minute on 2 cores.
  per_seed, _ = train_and_evaluate("ppo", "MountainCar-v0", 999_936, seeds=4)
  assert per_seed.mean() >= -105, per_seed


@pytest.mark.slow
def test_host_stepped_gymnasium_cartpole_learns_with_ppo():
  config = ppo.PPOConfig(env_id="CartPole-v1", total_timesteps=100_000)
  # one compiled evaluation for the four seeds (the training programs are
  # shared between the `train` calls by host/stepping.py)
  evaluate = jax.jit(lambda s, k: ppo.evaluate(config, s, k, 16))
  results = []
  for seed in range(4):
    state, history = stepping.train(ppo, config, jax.random.key(seed), seed=seed)
    returns = evaluate(state, jax.random.key(100 + seed))
    results.append(float(np.mean(returns)))
    assert len(history) == config.num_updates
  assert sum(r >= 475 for r in results) >= 3, results


@pytest.mark.slow
def test_compiled_mujoco_inverted_pendulum_learns_with_ppo(tmp_path):
  # The compiled path: InvertedPendulum-v5 stepped by MJX inside the
  # training program, 4 seeds in one vmap, through the runner, with the
  # task's preset cut from 204,800 steps to 61,440. Holding the cart
  # still lasts about 27 steps (19-58 over 50 starts), random actions
  # about 7. Measured (2026-12-07, 4 deterministic episodes per seed):
  # 332, 264, 236, 181 with this key set; 310, 148, 132, 171 and 423,
  # 201, 222, 257 with base seeds 1 and 2; about 60 s on 2 cores, 16 s of
  # it compiling. (The host path learns the same task to 1,000 with the
  # whole preset: docs/agents.md.)
  pytest.importorskip("mujoco.mjx")
  from jaxrl_align.host import runner

  config = ppo.PPOConfig(env_id="mjx/InvertedPendulum-v5",
                         total_timesteps=61_440)
  result = runner.run("ppo", config, str(tmp_path / "ip"),
                      runner.RunnerSettings(seeds=4, eval_episodes=4),
                      progress=False)
  per_seed = result.evaluation.mean(axis=1)
  assert result.summary["env_path"] == "jax"
  assert (per_seed >= 100).all() and per_seed.mean() >= 150, per_seed


@pytest.mark.slow
def test_host_stepped_mujoco_double_pendulum_learns_with_the_zoo_preset(
    tmp_path):
  # PPO's InvertedDoublePendulum-v5 preset (the Zoo's entry: observations
  # normalised and rewards scaled on the host, by the JAX-native
  # wrappers) cut from 1M steps to 51,200, through the runner, 4 seeds in
  # one Gymnasium vector env. A random policy falls within about 6 steps
  # (return about 45). Measured (2026-12-06, 4 deterministic episodes per
  # seed): 405, 309, 446, 171 with this key set; 402, 251, 345, 208 and
  # 320, 320, 213, 317 with base seeds 1 and 2; about 45 s on 2 cores.
  from jaxrl_align.host import runner

  config = ppo.PPOConfig(env_id="InvertedDoublePendulum-v5",
                         total_timesteps=51_200)
  assert config.normalize_obs and config.scale_reward
  result = runner.run("ppo", config, str(tmp_path / "idp"),
                      runner.RunnerSettings(seeds=4, eval_episodes=4),
                      progress=False)
  per_seed = result.evaluation.mean(axis=1)
  stats = result.states.rollout.env_state.inner.obs_stats
  assert np.all(np.asarray(stats.count) == 51_200 + 1)  # every step, reset
  assert (per_seed >= 120).all() and per_seed.mean() >= 200, per_seed


@pytest.mark.slow
def test_mountain_car_continuous_with_gsde_trpo_within_the_zoo_budget():
  # TRPO's preset (gSDE, 49,152 steps: the Zoo's 50k in whole batches):
  # doing nothing returns ≈ 0, ≥ 90 reaches the flag quickly in every
  # episode; 13 s on 2 cores (24 s when busy). PPO's preset (20k steps)
  # solves about 60 % of seeds, so no test holds it to 3 of 4
  # (docs/agents.md).
  per_seed, _ = train_and_evaluate("trpo", "MountainCarContinuous-v0",
                                   49_152, seeds=4)
  assert (per_seed >= 90).sum() >= 3, per_seed
