"""A small, self-contained demonstration of the primitives (pure functions).

Two experiments, both jitted end to end and vmapped over seeds:

1. ``time_limit_advantages``: a task that pays 1 per step forever, cut by a
   time limit. With the true value ``V = 1/(1-γ)`` everywhere, the correct
   advantages are 0; treating the cut as a termination makes them large and
   negative near every cut. This is why :func:`jaxrl_align.gae` keeps
   ``terminated`` and ``truncated`` apart.
2. ``train_bandit``: a linear softmax policy on a contextual bandit (the
   reward of action ``a`` in context ``x`` is ``(x W*)_a`` plus noise),
   trained by TRPO (:func:`trpo_step`) or PPO (:func:`ppo_clip_loss` with
   Adam), ``lax.scan`` over updates.

The host-side printing lives in :mod:`jaxrl_align.host.demo`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxrl_align import advantages
from jaxrl_align import distributions
from jaxrl_align import losses
from jaxrl_align import trust_region
from jaxrl_align import sgd

OBS_DIM = 6
NUM_ACTIONS = 4


def time_limit_advantages(num_steps: int = 200, time_limit: int = 50,
                          gamma: float = 0.99) -> tuple[jax.Array, jax.Array]:
  """Mean |advantage| with correct truncation handling and with the cut as a
  termination, on a constant-reward task whose true value is known.

  Returns:
    ``(correct, wrong)`` scalars.
  """
  t = jnp.arange(num_steps)
  reward = jnp.ones(num_steps)
  value = jnp.full(num_steps, 1.0 / (1.0 - gamma))
  cut = (t + 1) % time_limit == 0
  never = jnp.zeros(num_steps, bool)
  correct, _ = advantages.gae(reward, value, value, never, cut, gamma=gamma,
                              lam=0.95)
  wrong, _ = advantages.gae(reward, value, value, cut, never, gamma=gamma,
                            lam=0.95)
  return jnp.mean(jnp.abs(correct)), jnp.mean(jnp.abs(wrong))


class BanditMetrics(NamedTuple):
  """Per-update metrics, each ``[num_updates]``."""
  mean_reward: jax.Array
  optimal_reward: jax.Array
  kl: jax.Array
  accepted: jax.Array


def _batch(key, w_true, batch_size):
  k_obs, k_act, k_noise = jax.random.split(key, 3)
  obs = jax.random.normal(k_obs, (batch_size, OBS_DIM))
  q = obs @ w_true
  return obs, q, k_act, k_noise


def train_bandit(key: jax.Array, *, algo: str, num_updates: int = 60,
                 batch_size: int = 512, max_kl: float = 0.02,
                 learning_rate: float = 0.05, clip_eps: float = 0.2,
                 epochs: int = 4) -> BanditMetrics:
  """Trains a linear softmax policy on a random contextual bandit.

  Args:
    key: PRNG key; it also draws the bandit.
    algo: ``"trpo"`` or ``"ppo"`` (static).
    num_updates: number of policy updates (static).
    batch_size: contexts per update (static).
    max_kl: TRPO's trust region.
    learning_rate: PPO's Adam step size.
    clip_eps: PPO's clip range.
    epochs: PPO's full-batch epochs per update (static).

  Returns:
    :class:`BanditMetrics`.
  """
  if algo not in ("trpo", "ppo"):
    raise ValueError(f"`algo` must be 'trpo' or 'ppo', got {algo!r}.")
  k_bandit, k_train = jax.random.split(key)
  w_true = jax.random.normal(k_bandit, (OBS_DIM, NUM_ACTIONS))
  theta = jnp.zeros((OBS_DIM, NUM_ACTIONS))
  optimiser = optax.adam(learning_rate, eps=1e-5)

  def _update(carry, key):
    theta, opt_state = carry
    obs, q, k_act, k_noise = _batch(key, w_true, batch_size)
    old_logits = obs @ theta
    action = distributions.categorical_sample(k_act, old_logits)
    reward = (jnp.take_along_axis(q, action[:, None], axis=1)[:, 0]
              + 0.5 * jax.random.normal(k_noise, (batch_size,)))
    advantage = (reward - reward.mean()) / (reward.std() + 1e-8)
    old_log_prob = distributions.categorical_log_prob(old_logits, action)

    def loss_fn(p):
      log_prob = distributions.categorical_log_prob(obs @ p, action)
      return losses.ppo_clip_loss(log_prob, old_log_prob, advantage,
                                  clip_eps=clip_eps if algo == "ppo" else 1e9)

    def kl_fn(p):
      return jnp.mean(distributions.categorical_kl(old_logits, obs @ p))

    if algo == "trpo":
      new_theta, info = trust_region.trpo_step(loss_fn, kl_fn, theta,
                                               max_kl=max_kl)
      accepted = info.accepted.astype(jnp.float32)
    else:
      def _epoch(c, _):
        p, s = c
        grads = jax.grad(loss_fn)(p)
        with sgd.optax_numerics():
          updates, s = optimiser.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), None
      (new_theta, opt_state), _ = jax.lax.scan(
          _epoch, (theta, opt_state), None, length=epochs)
      accepted = jnp.ones(())
    metrics = (reward.mean(), q.max(axis=1).mean(), kl_fn(new_theta),
               accepted)
    return (new_theta, opt_state), metrics

  keys = jax.random.split(k_train, num_updates)
  _, metrics = jax.lax.scan(_update, (theta, optimiser.init(theta)), keys)
  return BanditMetrics(*metrics)
