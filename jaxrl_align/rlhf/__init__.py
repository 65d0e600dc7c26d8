"""RLHF on a small language model: the transformer, generation, GPT-2
weights, corpus and tokenizer, simulated annotators, pretraining, the
reward model, KL-regularised PPO, TRPO, RLOO and GRPO against a frozen
reference (:mod:`.rl`, :mod:`.ppo`, :mod:`.trpo`, :mod:`.rloo`,
:mod:`.grpo`), and DPO on preference pairs (:mod:`.dpo`).

``LEARNERS`` is the registry of the pure RLHF learners the runner drives
(see :class:`jaxrl_align.learner.Learner`). Other submodules are imported
explicitly (``from jaxrl_align.rlhf import model``); the corpus, tokenizer
and annotator modules need the ``rlhf`` extra.
"""

from jaxrl_align.rlhf import dpo
from jaxrl_align.rlhf import grpo
from jaxrl_align.rlhf import ppo
from jaxrl_align.rlhf import reward_model
from jaxrl_align.rlhf import rloo
from jaxrl_align.rlhf import sft
from jaxrl_align.rlhf import trpo

LEARNERS = {learner.name: learner
            for learner in (sft.LEARNER, reward_model.LEARNER, ppo.LEARNER,
                            trpo.LEARNER, rloo.LEARNER, grpo.LEARNER,
                            dpo.LEARNER)}

__all__ = ("LEARNERS",)
