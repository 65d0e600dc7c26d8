"""Host side of RLHF: the run directories behind ``jaxrl-align rlhf ...``.

One module per command: :mod:`.sft` (tokenizer and pretraining),
:mod:`.prefs` (sampled continuations compared by simulated annotators),
:mod:`.rm` (the reward model). Each writes a run directory and returns its
summary; the pure pieces they drive live in :mod:`jaxrl_align.rlhf`.
"""

from jaxrl_align.rlhf_runs._common import load_sft
from jaxrl_align.rlhf_runs.prefs import PrefsSettings
from jaxrl_align.rlhf_runs.prefs import run_prefs
from jaxrl_align.rlhf_runs.rm import RMRunSettings
from jaxrl_align.rlhf_runs.rm import run_rm
from jaxrl_align.rlhf_runs.sft import SFTRunSettings
from jaxrl_align.rlhf_runs.sft import run_sft

__all__ = ["load_sft", "PrefsSettings", "run_prefs", "RMRunSettings",
           "run_rm",
           "SFTRunSettings", "run_sft"]
