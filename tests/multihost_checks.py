"""Two processes on 127.0.0.1 (two CPU devices each, one ``jax.distributed``
job); run by ``test_parallel.py``, which compares what they wrote with
``parallel_checks.py``'s runs of the same configs in one process.
Usage: ``multihost_checks.py OUT_DIR PROCESS_ID PORT HOST_ARGS``
(``PROCESS_ID`` 0 or 1). In order, every process:

1. joins the job through the command (``jaxrl-align train --coordinator
   ... --num-processes 2 --process-id I``), which first refuses
   ``--devices 2`` (a run spans every process's devices), then trains four
   seeds spread over the four devices into ``OUT_DIR/cli`` (process 0
   writes the files, both write their checkpoint shards), then refuses to
   write into that run directory again (process 0's error, on both);
2. trains the same run through ``runner.run`` into ``OUT_DIR/resumed``,
   stopped after two updates and resumed, and compares its final states
   with the command's last checkpoint, bit for bit; then again into
   ``OUT_DIR/ctrl_c`` with a Ctrl-C that only process 1 receives;
3. trains PPO data-parallel over the four devices with the recipe of
   docs/devices.md (``jax.set_mesh`` and ``jit(ppo.train)``);
4. trains a task stepped on the host (``HOST_ARGS``, JSON in ``argv[4]``)
   through the command into ``OUT_DIR/host``, its four seeds spread over
   the two processes (two each, on one device of each), after refusing
   seeds that do not divide over them and a device count other than one
   of each; then refuses ``--processes 2`` on a JAX-native task.

Writes ``OUT_DIR/<id>.npz`` (step 3's parameters), ``OUT_DIR/<id>.json``
(the devices, which environments this process stepped, the command's exit
codes and messages, the resume comparison) and, from process 0,
``OUT_DIR/cli_params.npz`` (the command run's final parameters).
"""

import contextlib
import io
import json
import os
import sys

import numpy as np

OUT, WHO, PORT = sys.argv[1:4]
HOST_ARGS = json.loads(sys.argv[4])  # test_parallel.HOST_TRAIN
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=2")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")  # as in conftest.py
jax.config.update("jax_numpy_dtype_promotion", "strict")

# the command's entry point: nothing imported so far has started JAX's
# backend, so the command can join the job (its first call below)
from jaxrl_align.host import launch  # noqa: E402

JOB = ["--coordinator", f"127.0.0.1:{PORT}", "--num-processes", "2",
       "--process-id", WHO]
# parallel_checks.runner_checks's "single4": 4 updates, 4 seeds, chunk 1
TRAIN = ["train", "--env", "CartPole-v1", "--total-timesteps", str(8 * 16 * 4),
         "--num-envs", "8", "--num-steps", "16", "--num-minibatches", "2",
         "--update-epochs", "2", "--normalize-obs", "true", "--scale-reward",
         "true", "--target-kl", "0.02", "--seeds", "4", "--chunk", "1",
         "--checkpoint-every", "1", "--no-progress", *JOB]


def command(args):
  """``(exit code, stderr)`` of ``jaxrl-align ARGS`` in this process."""
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    code = launch.main(args)
  return code, err.getvalue()


def main():
  record = {}
  cli_dir = os.path.join(OUT, "cli")
  # 1. the command: it joins the job, then refuses a device count before
  # anything is made; the run; a refusal that only process 0 can see (the
  # run directory is taken)
  record["devices_2"] = command([*TRAIN, "--devices", "2", "--out",
                                 os.path.join(OUT, "never")])
  from jaxrl_align import parallel
  from jaxrl_align.agents import ppo
  from jaxrl_align.host import checkpoints
  from jaxrl_align.host import distributed
  from jaxrl_align.host import runner

  # parallel_checks.PPO, whose one-process runs are the references
  config_3 = ppo.PPOConfig(env_id="CartPole-v1", total_timesteps=8 * 16 * 3,
                           num_envs=8, num_steps=16, num_minibatches=2,
                           update_epochs=2, normalize_obs=True,
                           scale_reward=True, target_kl=0.02)
  record["devices_2_dir"] = os.path.exists(os.path.join(OUT, "never"))
  record["run"] = command([*TRAIN, "--out", cli_dir])
  record["again"] = command([*TRAIN, "--out", cli_dir])
  record.update(process_index=jax.process_index(),
                process_count=jax.process_count(),
                global_devices=len(jax.devices()),
                local_devices=len(jax.local_devices()))

  # 2. the same run stopped and resumed through the runner, against the
  # command's last checkpoint
  learner, config, settings = runner.load_config(cli_dir)
  resumed_dir = os.path.join(OUT, "resumed")
  runner.run(learner, config, resumed_dir, settings, progress=False,
             stop_after=2)
  resumed = runner.run(learner, config, resumed_dir, resume=True,
                       progress=False)
  with jax.set_mesh(runner.device_mesh(settings)):
    store = checkpoints.Checkpoints(os.path.join(cli_dir, "checkpoints"),
                                    settings.keep)
    step, last = store.restore(resumed.states)
    store.close()
  a, b = distributed.to_host(last), distributed.to_host(resumed.states)
  record["resumed_step"] = step
  record["resumed_bitwise"] = all(
      np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a),
                                           jax.tree.leaves(b)))
  record["params_spec"] = list(
      jax.tree.leaves(resumed.states.params)[0].sharding.spec)
  # a Ctrl-C that only process 1 receives (during the first chunk): both
  # stop after that chunk, with one checkpoint
  from jaxrl_align.host import monitor

  class CtrlC(monitor.Interrupt):
    def __enter__(self):
      super().__enter__()
      self.requested = WHO == "1"
      return self

  real, monitor.Interrupt = monitor.Interrupt, CtrlC
  try:
    stopped = runner.run(learner, config, os.path.join(OUT, "ctrl_c"),
                         settings, progress=False)
  finally:
    monitor.Interrupt = real
  store = checkpoints.Checkpoints(os.path.join(OUT, "ctrl_c", "checkpoints"),
                                  settings.keep)
  record["ctrl_c"] = {"interrupted": stopped.interrupted,
                      "checkpoints": store.steps(),
                      "metrics_rows": len(runner.read_metrics(
                          os.path.join(OUT, "ctrl_c")))}
  store.close()
  if distributed.is_primary():
    np.savez(os.path.join(OUT, "cli_params.npz"),
             **{str(i): x for i, x in enumerate(jax.tree.leaves(a.params))})

  # 3. the recipe of docs/devices.md: one run's environments split over
  # both processes' devices
  with jax.set_mesh(parallel.mesh(data=len(jax.devices()))):
    state, metrics = jax.jit(ppo.train)(config_3, jax.random.key(0))
  # the environments this process stepped: the rows of its devices' shards
  record["env_rows"] = sorted(
      [s.index[0].start or 0, s.index[0].stop or config_3.num_envs]
      for s in state.rollout.obs.addressable_shards)
  # parameters are replicated: every process holds them whole
  params = {str(i): np.asarray(x.addressable_data(0))
            for i, x in enumerate(jax.tree.leaves(state.params))}
  params["episode_return"] = np.asarray(
      metrics["episode_return"].addressable_data(0))
  np.savez(os.path.join(OUT, f"{WHO}.npz"), **params)

  # 4. a task stepped on the host: its seeds over the processes
  host = [*HOST_ARGS, *JOB]
  record["host_seeds_3"] = command([*host, "--seeds", "3", "--out",
                                    os.path.join(OUT, "never")])
  record["host_devices_4"] = command([*host, "--devices", "4", "--out",
                                      os.path.join(OUT, "never")])
  record["host_refused_dir"] = os.path.exists(os.path.join(OUT, "never"))
  record["host_run"] = command([*host, "--out", os.path.join(OUT, "host")])
  # --processes 2 in this job of two (as `launch` makes it) on a JAX-native
  # task: refused, its seeds spread over devices
  record["native_processes"] = command([*TRAIN, "--processes", "2", "--out",
                                        os.path.join(OUT, "never")])
  record["native_dir"] = os.path.exists(os.path.join(OUT, "never"))
  with open(os.path.join(OUT, f"{WHO}.json"), "w") as f:
    json.dump(record, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
