"""Learners composed from the primitives: PPO and TRPO."""

from jaxrl_align.agents import ppo
from jaxrl_align.agents import trpo
from jaxrl_align.agents.common import compiler_options

__all__ = ("compiler_options", "ppo", "trpo")
