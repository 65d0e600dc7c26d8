"""Learners composed from the primitives: PPO and TRPO."""

from jaxrl_align.agents import ppo
from jaxrl_align.agents import trpo

__all__ = ("ppo", "trpo")
