"""The whole RLHF pipeline at a small size, in a few minutes on two cores:
pretraining → preferences → reward model → PPO and TRPO against it, with
the gold annotator's score of the reference and of each policy. The demo
runs it; a test holds it to its claims.

The small settings: a 2-layer, width-64 transformer over a 1,024-token
vocabulary pretrained for 300 steps; 8-token prompts and 24-token
responses; 1,024 prompts × 4 continuations compared by the annotators; the
reward model for 3 epochs; each RL learner for ``iterations`` iterations of
64 responses with the adaptive KL controller (target 2 nats per response,
horizon 100 responses, β starting at 0.3). The missing-stop penalty is off:
the reference ends fewer than one response in ten within 24 tokens, so the
penalty, not the reward model, would dominate the score.
"""

from __future__ import annotations

import os
from typing import Any

from jaxrl_align.host import files
from jaxrl_align.host.rlhf import prefs as prefs_lib
from jaxrl_align.host.rlhf import rl_stages as rl_lib
from jaxrl_align.host.rlhf import rm_stage as rm_lib
from jaxrl_align.host.rlhf import sft_stage as sft_lib
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import ppo
from jaxrl_align.rlhf import reward_model
from jaxrl_align.rlhf import sft
from jaxrl_align.rlhf import trpo

KIND = "rlhf-pipeline"  # its run directory holds one run per step
files.declare(KIND, runner=False, nests=True)
PROMPT, RESPONSE = 8, 24
MODEL = model_lib.TransformerConfig(vocab_size=1024, max_len=PROMPT + RESPONSE,
                                    num_layers=2, num_heads=2, width=64)
SFT = sft.SFTConfig(model=MODEL, steps=300, batch_size=16, warmup_steps=20,
                    eval_every=50)
PREFS = prefs_lib.PrefsSettings(num_prompts=1024, prompt_tokens=PROMPT,
                                response_tokens=RESPONSE, samples_per_prompt=4,
                                batch_size=128)
RM = reward_model.RMConfig(epochs=3, batch_size=32, eval_every=10)
RL = dict(batch_size=64, response_length=RESPONSE, eval_every=10,
          kl_target=2.0, kl_horizon=100.0, kl_coef=0.3,
          missing_eos_penalty=0.0)
RL_RUN = rl_lib.RLRunSettings(num_prompts=256, eval_prompts=128,
                              prompt_tokens=PROMPT, samples=0)


def rl_configs(iterations: int) -> dict[str, Any]:
  return {"ppo": ppo.RLHFPPOConfig(iterations=iterations, learning_rate=3e-4,
                               **RL),
          "trpo": trpo.RLHFTRPOConfig(iterations=iterations, max_kl=0.02, **RL)}


def report(text: str) -> None:
  print(text, flush=True)


def run_small(out: str, *, iterations: int = 40, progress: bool = True,
              overwrite: bool = False) -> dict[str, Any]:
  """Runs the five steps into ``out/{sft,prefs,rm,ppo,trpo}`` (``out`` is a
  run directory of them, replaced as one with ``overwrite``), prints a line
  after each; returns each step's summary."""
  with files.prepare_run_dir(out, KIND, overwrite=overwrite):
    return _steps(out, iterations, progress, overwrite)


def _steps(out, iterations, progress, overwrite) -> dict[str, Any]:
  """:func:`run_small`'s steps, its run directory made."""
  paths = {name: os.path.join(out, name)
           for name in ("sft", "prefs", "rm", "ppo", "trpo")}
  flags = dict(progress=progress, overwrite=overwrite)
  summaries = {}
  summaries["sft"] = sft_lib.run_sft(paths["sft"], SFT,
                                     sft_lib.SFTRunSettings(num_samples=1),
                                     **flags)
  report(f"   pretraining: validation loss "
         f"{summaries['sft']['valid_loss_initial']:.2f} -> "
         f"{summaries['sft']['valid_loss_best']:.2f} nats/token")
  summaries["prefs"] = prefs_lib.run_prefs(paths["prefs"], paths["sft"],
                                           PREFS, **flags)
  report(f"   preferences: {summaries['prefs']['pairs']} pairs; two "
         f"annotators agree on {summaries['prefs']['annotator_agreement']:.0%}")
  summaries["rm"] = rm_lib.run_rm(paths["rm"], paths["sft"], paths["prefs"],
                                  RM, **flags)
  report(f"   reward model: held-out accuracy "
         f"{summaries['rm']['valid_accuracy_vs_annotators']:.0%} against the "
         f"annotators, {summaries['rm']['valid_accuracy_vs_gold']:.0%} "
         f"against gold")
  for algo, config in rl_configs(iterations).items():
    s = summaries[algo] = rl_lib.run_rl(algo, paths[algo], paths["sft"],
                                        paths["rm"], config, RL_RUN, **flags)
    report(f"   {algo.upper()}: reward-model score "
           f"{s['reference_proxy']:+.2f} -> {s['policy_proxy']:+.2f} "
           f"({s['proxy_gain_in_reference_std']:+.1f} sd), gold "
           f"{s['reference_gold']:+.3f} -> {s['policy_gold']:+.3f} "
           f"({s['gold_gain_in_reference_std']:+.1f} sd), KL to the reference "
           f"{s['policy_kl_exact']:.2f} nats (target "
           f"{config.kl_target:g}); {iterations} iterations of "
           f"{config.batch_size}")
  return summaries
