"""Learners composed from the primitives: PPO and TRPO.

``LEARNERS`` is the registry the runner and the command line read (see
:class:`jaxrl_align.learner.Learner`); adding an algorithm is adding its
entry here.
"""

from jaxrl_align.agents import ppo
from jaxrl_align.agents import trpo
from jaxrl_align.compiler import compiler_options
from jaxrl_align.compiler import unroll_threefry_on_cpu

LEARNERS = {learner.name: learner for learner in (ppo.LEARNER, trpo.LEARNER)}

__all__ = ("compiler_options", "LEARNERS", "ppo", "trpo",
           "unroll_threefry_on_cpu")
