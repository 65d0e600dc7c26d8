"""One PPO run over two processes on 127.0.0.1 (two CPU devices each,
joined by ``jax.distributed``); run by ``test_parallel.py``, which compares
it with ``parallel_checks.py``'s run of the same config in one process on
one device. Usage: ``multihost_checks.py OUT_DIR PROCESS_ID PORT``
(``PROCESS_ID`` 0 or 1). Writes ``OUT_DIR/<id>.npz`` (the parameters) and
``OUT_DIR/<id>.json`` (the devices and which environments this process
stepped)."""

import json
import os
import sys

import numpy as np

OUT, WHO, PORT = sys.argv[1:4]
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=2")

import jax  # noqa: E402

# before anything starts JAX's backend
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{PORT}",
                           num_processes=2, process_id=int(WHO))

jax.config.update("jax_numpy_rank_promotion", "raise")  # as in conftest.py
jax.config.update("jax_numpy_dtype_promotion", "strict")

from jaxrl_align import parallel  # noqa: E402
from jaxrl_align.agents import ppo  # noqa: E402

# parallel_checks.PPO, whose one-device run is the reference
CONFIG = ppo.PPOConfig(env_id="CartPole-v1", total_timesteps=8 * 16 * 3,
                       num_envs=8, num_steps=16, num_minibatches=2,
                       update_epochs=2, normalize_obs=True, scale_reward=True,
                       target_kl=0.02)


def main():
  record = {"process_index": jax.process_index(),
            "process_count": jax.process_count(),
            "global_devices": len(jax.devices()),
            "local_devices": len(jax.local_devices())}
  with jax.set_mesh(parallel.mesh(data=len(jax.devices()))):
    state, metrics = jax.jit(ppo.train)(CONFIG, jax.random.key(0))
  # the environments this process stepped: the rows of its devices' shards
  record["env_rows"] = sorted(
      [s.index[0].start or 0, s.index[0].stop or CONFIG.num_envs]
      for s in state.rollout.obs.addressable_shards)
  # parameters are replicated: every process holds them whole
  params = {str(i): np.asarray(x.addressable_data(0))
            for i, x in enumerate(jax.tree.leaves(state.params))}
  params["episode_return"] = np.asarray(
      metrics["episode_return"].addressable_data(0))
  np.savez(os.path.join(OUT, f"{WHO}.npz"), **params)
  with open(os.path.join(OUT, f"{WHO}.json"), "w") as f:
    json.dump(record, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
