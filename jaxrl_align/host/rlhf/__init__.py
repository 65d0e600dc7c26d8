"""Host side of RLHF: the run directories behind ``jaxrl-align rlhf ...``.

One module per command: :mod:`.sft_stage` (tokenizer and pretraining),
:mod:`.prefs` (sampled continuations compared by simulated annotators,
written as :mod:`.pair_files`), :mod:`.rm_stage` (the reward model),
:mod:`.rl_stages` (``ppo``, ``trpo`` and every other RL learner of
``rlhf.LEARNERS``: RL against the reward model, optionally from a DPO
run's policy), :mod:`.dpo_stage` (``dpo``: DPO, IPO, conservative DPO on
the preference pairs); each is named apart from
the pure learner it runs (``jaxrl_align.rlhf.sft``, ``.rl``). ``sft``, ``rm``, ``dpo`` and the RL commands are
:class:`.stages.Stage` declarations run by the one stage runner
(:func:`.stages.run_stage`), which builds their learner's data, runs it
through the one runner, writes a run directory and returns its summary;
their commands and run-directory files derive from the declarations. The
offline corpus and tokenizer (:mod:`.corpus`),
the simulated annotators (:mod:`.annotators`) and GPT-2 checkpoints
(:mod:`.gpt2`) are read from files here too. :data:`COMMANDS` describes the
commands to the command line, which builds its ``rlhf`` subcommands from it.
"""

from jaxrl_align.host import files
from jaxrl_align.host.rlhf import dpo_stage
from jaxrl_align.host.rlhf import prefs
from jaxrl_align.host.rlhf import rl_stages
from jaxrl_align.host.rlhf import rm_stage
from jaxrl_align.host.rlhf import sft_stage
from jaxrl_align.host.rlhf import stages
from jaxrl_align.host.rlhf._common import Command
from jaxrl_align.host.rlhf._common import load_sft
from jaxrl_align.host.rlhf.dpo_stage import DPORunSettings
from jaxrl_align.host.rlhf.dpo_stage import run_dpo
from jaxrl_align.host.rlhf.prefs import PrefsSettings
from jaxrl_align.host.rlhf.prefs import run_prefs
from jaxrl_align.host.rlhf.rl_stages import RLRunSettings
from jaxrl_align.host.rlhf.rl_stages import run_rl
from jaxrl_align.host.rlhf.rm_stage import RMRunSettings
from jaxrl_align.host.rlhf.rm_stage import run_rm
from jaxrl_align.host.rlhf.sft_stage import SFTRunSettings
from jaxrl_align.host.rlhf.sft_stage import run_sft

# Every stage that trains a learner, by command name; prefs trains none.
STAGES: dict[str, stages.Stage] = {"sft": sft_stage.STAGE,
                                   "rm": rm_stage.STAGE, **rl_stages.STAGES,
                                   "dpo": dpo_stage.STAGE}
COMMANDS: dict[str, Command] = {"sft": stages.command(sft_stage.STAGE),
                                "prefs": prefs.COMMAND,
                                "rm": stages.command(rm_stage.STAGE),
                                **rl_stages.COMMANDS,
                                "dpo": stages.command(dpo_stage.STAGE)}
# What the run directories of these commands hold besides the runner's.
FILES = frozenset(prefs.FILES).union(*(s.files for s in STAGES.values()))
for _stage in STAGES.values():
  files.declare(_stage.learner.name, _stage.files)

__all__ = ["COMMANDS", "Command", "DPORunSettings", "FILES", "STAGES",
           "load_sft", "run_dpo",
           "PrefsSettings", "run_prefs", "RLRunSettings", "run_rl", "RMRunSettings", "run_rm",
           "SFTRunSettings", "run_sft"]
