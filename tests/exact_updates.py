"""Exact expected updates of the critic-free RL steps on the enumerable toy
of ``test_rlhf_rl.py``, in float64 NumPy, and the fixed points they lead
to.

The policy is tabular over the toy's contexts (one softmax per response
prefix, as expressive as any policy over its 85 responses), so a method's
fixed point is where its expected update vanishes for every context. The
expected update of a method is computed by enumeration, on-policy (ratio 1,
no clipping: what every minibatch step is at a fixed point), with no
sampling:

- the advantage of a response: its reward against the policy's mean
  (``scale="none"``; the leave-one-out baseline gives ``R - E[R]``
  exactly, the group mean including the sample itself ``(G-1)/G`` of it),
  or, for ``G = 2`` and ``scale="group"``, over every pair of responses
  ``(R_1 - R_2)/2 / (|R_1 - R_2|/√2 + 1e-4)``;
- the reward: the score, minus ``β Σ_t kl_t`` with the KL in the reward;
- each token's weight ``1/|y|`` with GRPO's per-sequence aggregation, 1
  with DAPO's, BNPO's or Dr. GRPO's (a constant normaliser scales the step,
  not its direction);
- with the KL in the loss, ``-β ∇kl_t`` per token, the estimator
  differentiated through ``log π`` (``k1``: ``∇log π``, ``k2``: ``(log π -
  log π_ref) ∇log π``, ``k3``: ``(1 - π_ref/π) ∇log π``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrl_align.rlhf import generation
from jaxrl_align.rlhf import model as model_lib


@dataclasses.dataclass(frozen=True)
class Method:
  kl_in: str = "reward"        # "reward" or "loss"
  estimator: str = "k1"
  scale: str = "none"          # "none" or "group" (G = 2 only)
  group: int = 4
  baseline: str = "rloo"       # "rloo" (leave-one-out) or "mean" (GRPO's)
  aggregate: str = "dapo"      # "grpo" (1/|y|) or any constant one


class Toy:
  """The toy's responses, contexts, reference and reward table."""

  def __init__(self, responses, model: model_lib.TransformerConfig, ref,
               reward: np.ndarray, temperature: float = 1.0):
    tokens, mask, _ = responses
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    self.y, self.live = tokens[:, 1:], mask[:, 1:]
    self.vocab = model.vocab_size
    contexts = {}
    self.ctx = np.full(self.y.shape, -1)
    for i, row in enumerate(self.y):
      for t in range(row.shape[0]):
        if self.live[i, t]:
          self.ctx[i, t] = contexts.setdefault(tuple(row[:t]), len(contexts))
    self.num_contexts = len(contexts)
    ref_tokens = np.asarray(generation.sequence_log_probs(
        model_lib.Transformer(model).apply, ref, tokens, mask,
        self.y.shape[1], temperature=temperature), np.float64)
    self.log_ref = np.zeros((self.num_contexts, self.vocab))
    filled = np.zeros_like(self.log_ref, bool)
    for i, t in zip(*np.nonzero(self.live)):
      self.log_ref[self.ctx[i, t], self.y[i, t]] = ref_tokens[i, t]
      filled[self.ctx[i, t], self.y[i, t]] = True
    assert filled.all()  # every (context, token) is some response's
    self.reward = np.asarray(reward, np.float64)
    self.length = self.live.sum(1)
    self._fixed = {}

  def token_log_probs(self, log_pi: np.ndarray) -> np.ndarray:
    """``[R, N]`` per-token log-probabilities of a tabular policy (0 at
    padding)."""
    out = log_pi[np.maximum(self.ctx, 0), self.y]
    return np.where(self.live, out, 0.0)

  def sequence(self, log_pi):
    return self.token_log_probs(log_pi).sum(1)

  def objective(self, log_pi, beta):
    """``(E[r] - β KL, KL)`` of the policy."""
    log_p, log_q = self.sequence(log_pi), self.sequence(self.log_ref)
    p = np.exp(log_p)
    kl = float(np.sum(p * (log_p - log_q)))
    return float(np.sum(p * self.reward)) - beta * kl, kl

  def optimum(self, beta):
    """π* ∝ π_ref exp(r/β), as a tabular policy (its conditionals)."""
    log_q = self.sequence(self.log_ref)
    log_star = log_q + self.reward / beta
    # Conditionals of a sequence distribution: sums over continuations.
    mass = np.full((self.num_contexts, self.vocab), -np.inf)
    for i, t in zip(*np.nonzero(self.live)):
      c, a = self.ctx[i, t], self.y[i, t]
      mass[c, a] = np.logaddexp(mass[c, a], log_star[i])
    return mass - np.logaddexp.reduce(mass, axis=1, keepdims=True)

  def expected_update(self, log_pi, beta, method: Method) -> np.ndarray:
    """``[contexts, V]``: the expected ascent direction on each context's
    logits (per response of the batch)."""
    lp = self.token_log_probs(log_pi)
    lq = self.token_log_probs(self.log_ref)
    p = np.exp(lp.sum(1))
    k1 = np.where(self.live, lp - lq, 0.0)
    kl_t = {"k1": k1, "k2": 0.5 * k1 ** 2,
            "k3": np.where(self.live, np.expm1(-k1) + k1, 0.0)}[
                method.estimator]
    reward = self.reward - (beta * kl_t.sum(1) if method.kl_in == "reward"
                            else 0.0)
    weight = (1.0 / self.length if method.aggregate == "grpo"
              else np.ones_like(p))
    if method.scale == "none":
      factor = 1.0 if method.baseline == "rloo" else (
          (method.group - 1) / method.group)
      coef = factor * (reward - np.sum(p * reward))          # [R]
    else:
      assert method.group == 2 and method.scale == "group"
      diff = reward[:, None] - reward[None, :]
      adv = 0.5 * diff / (np.abs(diff) / np.sqrt(2) + 1e-4)
      coef = adv @ p                                          # E over y_2
    per_token = np.where(self.live, (coef * weight)[:, None], 0.0)
    if method.kl_in == "loss":
      dk = {"k1": np.ones_like(k1), "k2": k1,
            "k3": -np.expm1(-k1)}[method.estimator]
      per_token = per_token - beta * np.where(self.live, dk, 0.0) * \
          weight[:, None]
    # Σ_y p(y) Σ_t per_token(y, t) (e_{y_t} - π(·|c_t)) on context c_t.
    grad = np.zeros((self.num_contexts, self.vocab))
    pi = np.exp(log_pi)
    for t in range(self.y.shape[1]):
      rows = self.live[:, t]
      w = (p * per_token[:, t])[rows]
      c, a = self.ctx[rows, t], self.y[rows, t]
      np.add.at(grad, (c, a), w)
      np.add.at(grad, c, -w[:, None] * pi[c])
    return grad

  def fixed_point(self, beta, method: Method, *, start=None, lr=10.0,
                  steps=40_000, tol=1e-7):
    """The policy where ``method``'s expected update vanishes, by exact
    gradient steps on the tabular logits from ``start`` (the reference);
    ``(log π, max |update|)`` (kept: asked again, the same answer)."""
    memo = (beta, method, start is None, lr, steps, tol)
    if start is None and memo in self._fixed:
      return self._fixed[memo]
    theta = np.array(self.log_ref if start is None else start)
    for _ in range(steps):
      log_pi = theta - np.logaddexp.reduce(theta, axis=1, keepdims=True)
      g = self.expected_update(log_pi, beta, method)
      if np.abs(g).max() < tol:
        break
      theta = theta + lr * g
    log_pi = theta - np.logaddexp.reduce(theta, axis=1, keepdims=True)
    out = log_pi, float(np.abs(self.expected_update(log_pi, beta,
                                                    method)).max())
    if start is None:
      self._fixed[memo] = out
    return out
