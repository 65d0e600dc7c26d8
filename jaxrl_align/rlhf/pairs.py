"""Preference pairs as token ids, with the boundary between prompt and
response kept: what the reward model learns from, and what an offline
preference learner (DPO) reads.

A pair is one prompt and two responses to it, the chosen and the rejected,
each exactly as the policy sampled it (the stop token included where it
was emitted). Prompts are left-padded and responses right-padded, so
``prompt ++ response`` is the sequence the sampler produced
(:func:`jaxrl_align.rlhf.generation.generate` lays out its output the same
way), and the response mask says which tokens the preference is about.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
SIDES = ("chosen", "rejected")


class PreferencePairs(NamedTuple):
  """``N`` preference pairs.

  Attributes:
    prompt: ``[N, P]`` int32 prompt tokens, left-padded.
    prompt_mask: ``[N, P]`` bool, real prompt tokens.
    chosen: ``[N, R]`` int32 the preferred response, right-padded.
    chosen_mask: ``[N, R]`` bool, real response tokens.
    rejected: ``[N, R]`` int32 the other response, right-padded.
    rejected_mask: ``[N, R]`` bool.
  """
  prompt: Array
  prompt_mask: Array
  chosen: Array
  chosen_mask: Array
  rejected: Array
  rejected_mask: Array

  def sequence(self, side: str) -> tuple[Array, Array]:
    """``(tokens [N, P + R], mask [N, P + R])``: the prompt then the
    ``side`` (``"chosen"`` or ``"rejected"``) response."""
    if side not in SIDES:
      raise ValueError(f"`side` must be one of {SIDES}, got {side!r}.")
    response, mask = getattr(self, side), getattr(self, f"{side}_mask")
    return (jnp.concatenate([self.prompt, response], axis=1),
            jnp.concatenate([self.prompt_mask, mask], axis=1))


def from_ids(prompts: Sequence[Sequence[int]],
             chosen: Sequence[Sequence[int]],
             rejected: Sequence[Sequence[int]], pad: int) -> PreferencePairs:
  """Pairs from lists of token ids, padded to the longest prompt and the
  longest response (each at least one token wide).

  Args:
    prompts, chosen, rejected: ``N`` lists of token ids each (no padding).
    pad: the padding token.

  Returns:
    :class:`PreferencePairs` of device arrays.
  """
  if not len(prompts) == len(chosen) == len(rejected):
    raise ValueError(f"{len(prompts)} prompts, {len(chosen)} chosen and "
                     f"{len(rejected)} rejected responses: one of each per "
                     f"pair.")
  p = max([len(x) for x in prompts] + [1])
  r = max([len(x) for x in (*chosen, *rejected)] + [1])
  out = [*_padded(prompts, p, pad, left=True)]
  for side in (chosen, rejected):
    out += _padded(side, r, pad, left=False)
  return PreferencePairs(*(jnp.asarray(x) for x in out))


def _padded(rows, length: int, pad: int, *, left: bool):
  tokens = np.full((len(rows), length), pad, np.int32)
  mask = np.zeros((len(rows), length), bool)
  for i, row in enumerate(rows):
    n = len(row)
    at = slice(length - n, length) if left else slice(0, n)
    tokens[i, at] = row
    mask[i, at] = True
  return tokens, mask
