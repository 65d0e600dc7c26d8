"""Learners composed from the primitives: PPO and TRPO."""

from jaxrl_align.agents import ppo

__all__ = ("ppo",)
