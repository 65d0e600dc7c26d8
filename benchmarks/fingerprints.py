"""Fingerprints of short runs at fixed keys: a SHA-256 of the final
parameters and of the logged metrics, to show that a change of code that
should not change results did not (compare the output before and after).

    .venv/bin/python benchmarks/fingerprints.py [--only ppo,trpo,rlhf]

PPO and TRPO on CartPole-v1 and Pendulum-v1 (8 updates at each preset, 2
seeds) through the runner and through ``jit(vmap(train))``; ``rlhf sft`` and
``rlhf rm`` at tiny sizes (the parameters they save). Prints one line per
run: name, parameter hash, metrics hash (first 16 hex digits each). The
``rlhf`` runs also include ``rlhf ppo`` and ``rlhf trpo`` (4 iterations of 8
responses, 2 seeds, on the tiny reward model; their first hash is of the
final evaluation, which stands for the parameters).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def _digest(tree) -> str:
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    leaf = np.asarray(leaf)
    h.update(jax.tree_util.keystr(path).encode())
    h.update(str(leaf.dtype).encode() + str(leaf.shape).encode())
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()[:16]


def _rows_digest(rows) -> str:
  return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()
                        ).hexdigest()[:16]


def rl_fingerprints(tmp: str):
  from jaxrl_align import agents
  from jaxrl_align.host import runner

  for algo in ("ppo", "trpo"):
    config_cls = agents.LEARNERS[algo].config_type
    for env_id in ("CartPole-v1", "Pendulum-v1"):
      base = config_cls(env_id=env_id)
      config = base.replace(total_timesteps=8 * base.num_envs * base.num_steps)
      out = os.path.join(tmp, f"{algo}-{env_id}")
      result = runner.run(algo, config, out, runner.RunnerSettings(
          seeds=2, chunk=2, checkpoint_every=4, eval_episodes=2),
                          progress=False)
      rows = runner.read_metrics(out)
      yield (f"runner {algo} {env_id}", _digest(result.states.params),
             _rows_digest(rows) + " eval " + _digest(result.eval_returns))
      keys = jax.random.split(jax.random.key(0), 2)
      train = jax.jit(jax.vmap(getattr(agents, algo).train, in_axes=(None, 0)),
                      compiler_options=agents.compiler_options())
      states, metrics = train(config, keys)
      yield (f"train  {algo} {env_id}", _digest(states.params),
             _digest(dict(metrics)))


def rlhf_fingerprints(tmp: str):
  from jaxrl_align.host import checkpoints
  from jaxrl_align.host import rlhf as rlhf_runs
  from jaxrl_align.host import runner
  from jaxrl_align.host.rlhf import corpus
  from jaxrl_align.rlhf import model
  from jaxrl_align.rlhf import reward_model
  from jaxrl_align.rlhf import sft

  docs = corpus.load_documents()[:40]
  sft_dir, prefs_dir, rm_dir = (os.path.join(tmp, n)
                                for n in ("sft", "prefs", "rm"))
  summary = rlhf_runs.run_sft(
      sft_dir, sft.SFTConfig(
          model=model.TransformerConfig(vocab_size=300, max_len=32,
                                        num_layers=1, num_heads=2, width=32),
          steps=30, batch_size=8, warmup_steps=5, eval_every=10),
      rlhf_runs.SFTRunSettings(num_samples=1), documents=docs,
      progress=False)
  _, params, _ = rlhf_runs.load_sft(sft_dir)
  yield ("rlhf sft", _digest(params),
         f"valid {summary['valid_loss_initial']:.6f} -> "
         f"{summary['valid_loss_best']:.6f}")
  rlhf_runs.run_prefs(prefs_dir, sft_dir, rlhf_runs.PrefsSettings(
      num_prompts=20, prompt_tokens=8, response_tokens=24,
      samples_per_prompt=4, batch_size=8, valid_fraction=0.25),
                      documents=docs, progress=False)
  summary = rlhf_runs.run_rm(
      rm_dir, sft_dir, prefs_dir, reward_model.RMConfig(
          epochs=2, batch_size=5, eval_every=2),
      rlhf_runs.RMRunSettings(dev_fraction=0.25), progress=False)
  store = checkpoints.Checkpoints(os.path.join(rm_dir, "model"), keep=1)
  _, rm_params = store.restore(params)
  store.close()
  yield ("rlhf rm ", _digest(rm_params),
         f"held-out {summary['valid_accuracy_vs_annotators']:.6f}")
  from jaxrl_align.rlhf import ppo
  from jaxrl_align.rlhf import trpo

  for algo, config_type in (("ppo", ppo.RLHFPPOConfig),
                            ("trpo", trpo.RLHFTRPOConfig)):
    out = os.path.join(tmp, f"rlhf-{algo}")
    summary = rlhf_runs.run_rl(algo, out, sft_dir, rm_dir, config_type(
        iterations=4, batch_size=8, response_length=8, eval_every=2),
                     rlhf_runs.RLRunSettings(num_prompts=16, eval_prompts=4,
                                             samples=0),
                     seeds=2, documents=docs, progress=False)
    # No model is saved: the final evaluation (held-out scores and exact KL
    # of the final policy) stands for its parameters.
    yield (f"rlhf {algo}", _rows_digest(summary["per_seed"]),
           _rows_digest(runner.read_metrics(out)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--only", default="ppo,trpo,rlhf")
  only = set(parser.parse_args().only.split(","))
  print(f"jax {jax.__version__}, {jax.default_backend()}")
  with tempfile.TemporaryDirectory() as tmp:
    lines = []
    if only & {"ppo", "trpo"}:
      lines += [l for l in rl_fingerprints(tmp)
                if l[0].split()[1] in only]
    if "rlhf" in only:
      lines += list(rlhf_fingerprints(tmp))
    for name, params, metrics in lines:
      print(f"{name:32s} params {params}  {metrics}")


if __name__ == "__main__":
  main()
