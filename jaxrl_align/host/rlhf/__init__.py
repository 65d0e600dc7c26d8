"""Host side of RLHF: the run directories behind ``jaxrl-align rlhf ...``.

One module per command: :mod:`.sft` (tokenizer and pretraining),
:mod:`.prefs` (sampled continuations compared by simulated annotators),
:mod:`.rm` (the reward model), :mod:`.rl` (``ppo`` and ``trpo``: RL
against the reward model). ``sft``, ``rm``, ``ppo`` and ``trpo`` build their learner's
data and run it through the one runner; each writes a run directory and
returns its summary. The offline corpus and tokenizer (:mod:`.corpus`),
the simulated annotators (:mod:`.annotators`) and GPT-2 checkpoints
(:mod:`.gpt2`) are read from files here too. :data:`COMMANDS` describes the
commands to the command line, which builds its ``rlhf`` subcommands from it.
"""

from jaxrl_align.host.rlhf import prefs
from jaxrl_align.host.rlhf import rl
from jaxrl_align.host.rlhf import rm
from jaxrl_align.host.rlhf import sft
from jaxrl_align.host.rlhf._common import Command
from jaxrl_align.host.rlhf._common import load_sft
from jaxrl_align.host.rlhf.prefs import PrefsSettings
from jaxrl_align.host.rlhf.prefs import run_prefs
from jaxrl_align.host.rlhf.rl import RLRunSettings
from jaxrl_align.host.rlhf.rl import run_rl
from jaxrl_align.host.rlhf.rm import RMRunSettings
from jaxrl_align.host.rlhf.rm import run_rm
from jaxrl_align.host.rlhf.sft import SFTRunSettings
from jaxrl_align.host.rlhf.sft import run_sft

COMMANDS: dict[str, Command] = {"sft": sft.COMMAND, "prefs": prefs.COMMAND,
                                "rm": rm.COMMAND, **rl.COMMANDS}

__all__ = ["COMMANDS", "Command", "load_sft", "PrefsSettings", "run_prefs",
           "RLRunSettings", "run_rl", "RMRunSettings", "run_rm",
           "SFTRunSettings", "run_sft"]
