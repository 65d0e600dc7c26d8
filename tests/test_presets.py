"""The MuJoCo presets are the RL Baselines3 Zoo's entries, translated.

``benchmarks/peers.py`` holds the Zoo's entries (copied from rl-zoo3
2.9.2's ``hyperparams/ppo.yml`` and ``trpo.yml``) and the one translation
into our fields that the side-by-side runs use; ``agents/presets.py`` holds
the library's presets, written out by hand. A config built with nothing but
the id must equal the translation field by field, so a slip in either table
(a ``vf_coef`` not doubled, a minibatch count, a ReLU left out) fails."""

import dataclasses
import os
import sys

import pytest

from jaxrl_align.agents import ppo
from jaxrl_align.agents import trpo

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..",
                                "benchmarks"))
import peers  # noqa: E402

CONFIGS = {"ppo": ppo.PPOConfig, "trpo": trpo.TRPOConfig}


def _differences(algo: str, env_id: str, config) -> dict:
  names = {f.name for f in dataclasses.fields(CONFIGS[algo])}
  fields, notes = peers.our_fields(algo, env_id, names)
  assert notes == [], notes  # nothing the translation could not carry
  return {k: (getattr(config, k), v) for k, v in fields.items()
          if getattr(config, k) != v}


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
@pytest.mark.parametrize("env_id", peers.MUJOCO_ENVS)
def test_mujoco_presets_are_the_zoo_entries_translated(algo, env_id):
  config = CONFIGS[algo](env_id=env_id)
  assert _differences(algo, env_id, config) == {}
  assert config.total_timesteps % (config.num_envs * config.num_steps) == 0
  assert config.total_timesteps > 999_000  # the Zoo's 1M, whole batches


def test_a_wrong_translation_is_caught():
  config = ppo.PPOConfig(env_id="Hopper-v5")
  wrong = dataclasses.replace(config, vf_coef=0.835671)  # not doubled
  assert set(_differences("ppo", "Hopper-v5", wrong)) == {"vf_coef"}
  wrong = dataclasses.replace(config, activation="tanh")
  assert set(_differences("ppo", "Hopper-v5", wrong)) == {"activation"}
