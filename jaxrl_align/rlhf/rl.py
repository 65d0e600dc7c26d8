"""KL-regularised reinforcement learning on the language model: the
iteration every algorithm shares, and its learner. The config, data and
state are in :mod:`.rl_config` (re-exported here), the rollout and sample
metrics in :mod:`.rollout`, the credit stages in :mod:`.credit` (the
summary is the host's: :mod:`jaxrl_align.host.summaries`). An algorithm is
an :class:`Algorithm`: its credit stage, its optimiser's state and its
update; ``make_learner`` makes
it a learner of the runner (:mod:`.ppo` and :mod:`.trpo` are two).

One iteration, for a batch of ``batch_size / group_size`` prompts:

1. **Rollout.** Sample ``group_size`` responses to each prompt (consecutive
   rows of the batch) from the policy with the
   cached sampler (:func:`~jaxrl_align.rlhf.generation.generate`): it stops
   a row at the stop token, which belongs to the response, and pads after it
   with a distinct padding token. The sampling policy's log-probabilities
   are the sampler's own (``behaviour_log_probs="sampler"``, the default)
   or a forward pass's (``"forward"``); every other log-probability
   (reference, and later the updated policy) is taken from one forward pass
   over prompt and response under the distribution actually sampled:
   logits divided by the temperature, restricted to the top k and the
   nucleus (top p) when set, the sampled token always kept (see
   ``rollout.response_outputs``).
2. **Score.** ``data.score_fn`` scores each (truncated) response — the
   reward model of part 1, normalised on the reference's samples — and
   ``missing_eos_penalty`` is subtracted from the score of a response that
   never emitted the stop token.
3. **Rewards** (the algorithm's credit stage, :mod:`.credit`).
   ``reward_t = -β·kl_t``, plus the score at the last response token
   (:func:`jaxrl_align.kl_penalized_rewards`; ``k1`` by default, the only
   estimator that gives an unbiased gradient of the regularised objective);
   optionally whitened (scale only) over the response tokens.
4. **Advantages** (the credit stage). PPO and TRPO (:func:`.credit.critic_gae`):
   :func:`jaxrl_align.gae` with γ = 1, λ = 0.95 over the response, each
   response an episode that terminates at its last token (padding steps
   carry nothing); advantages whitened over response tokens. A critic-free
   algorithm (:func:`.credit.group_baseline`): each response's summed reward
   minus a baseline from the other responses to its prompt.
5. **Update**: the algorithm's (:mod:`.ppo`, :mod:`.trpo`), then the KL
   coefficient's controller sees the mean sequence KL to the reference
   (fixed, or adaptive as in Ziegler et al. 2019).

Values come from a separate critic (by default started from the reward
model), from the policy's own scalar head, or nowhere
(``value_model="none"``); dropout is off in every model.

Where this differs from TRL's ``PPOTrainer`` (``trl/experimental/ppo/
ppo_trainer.py`` in trl 1.12.0, read for the definitions, lines 758–798):
TRL adds the score one position after the stop token (``actual_end =
sequence_lengths_p1``) and keeps the value there (``padding_mask_p1``), an
extra step of zero KL that its GAE bootstraps through; here the score is
the reward of the last response token, the step that ends the episode
(Ziegler et al. 2019, eq. 2). TRL divides logits by ``temperature + 1e-7``;
here by the temperature. ``tests/test_rlhf_rl.py`` has a NumPy port of
TRL's arithmetic that reproduces both variants.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_align import learner
from jaxrl_align import losses
from jaxrl_align import parallel
from jaxrl_align import sgd
from jaxrl_align.rlhf import credit as credit_lib
from jaxrl_align.rlhf import rollout as rollout_lib
from jaxrl_align.rlhf.rl_config import KL_CONTROLS
from jaxrl_align.rlhf.rl_config import RewardModelScore
from jaxrl_align.rlhf.rl_config import RLConfig
from jaxrl_align.rlhf.rl_config import RLData
from jaxrl_align.rlhf.rl_config import RLState
from jaxrl_align.rlhf.rl_config import VALUE_MODELS
from jaxrl_align.rlhf.rl_config import CRITIC_FIELDS
from jaxrl_align.rlhf.rl_config import check_config
from jaxrl_align.rlhf.rl_config import option_names
from jaxrl_align.rlhf.rl_config import kl_controller

Array = jax.Array

__all__ = ("Algorithm", "assess", "check_config", "evaluate", "init",
           "init_adam", "iterate", "KL_CONTROLS", "kl_controller",
           "learning_rate", "make_learner", "minibatch_learn", "optimizer", "RewardModelScore", "RLConfig", "RLData",
           "RLState", "VALUE_MODELS", "value_loss", "CRITIC_FIELDS",
           "option_names")

# ----------------------------------------------------------- the learner


def learning_rate(config: RLConfig, state: RLState) -> Array:
  """This iteration's Adam learning rate (annealed with ``anneal_lr``)."""
  lr = jnp.asarray(config.learning_rate, jnp.float32)
  if config.anneal_lr:
    return sgd.linear_schedule(lr, state.iteration, config.iterations)
  return lr


def optimizer(config: RLConfig):
  """Adam after a global-norm clip at ``max_grad_norm`` (the learning rate
  is given at each step: :func:`learning_rate`)."""
  return sgd.clipped_adam(config.max_grad_norm)


def value_loss(config: RLConfig, vpred: Array, exp) -> tuple[Array, Array]:
  """``(loss, clip fraction)`` of the value on (a minibatch of) experience:
  :func:`jaxrl_align.clipped_value_loss` around the rollout's values at
  ``value_clip``, masked to response tokens, and the fraction of response
  tokens where the clipped term is the larger (TRL's ``val/clipfrac_avg``).
  """
  live = exp.response_mask
  loss = losses.clipped_value_loss(vpred, exp.values, exp.returns,
                                   clip_eps=config.value_clip, mask=live)
  eps = jnp.asarray(config.value_clip, vpred.dtype)
  clipped = exp.values + jnp.clip(vpred - exp.values, -eps, eps)
  larger = (clipped - exp.returns) ** 2 > (vpred - exp.returns) ** 2
  return loss, losses.masked_mean(larger.astype(jnp.float32), live)


def minibatch_learn(config: RLConfig, state: RLState, exp, key: Array,
                    loss: Callable[[Any, Any], tuple[Array, dict]]):
  """Epochs of shuffled minibatches, each one Adam step on ``loss`` over the
  policy and the critic together (the update of PPO and the critic-free
  algorithms).

  Args:
    config: epochs, minibatches, learning rate, ``target_kl`` (if the
      config has one: the epochs stop once a minibatch's
      ``policy/approxkl_avg`` exceeds it).
    state: the iteration's state (parameters, critic, optimiser).
    exp: the iteration's experience after its credit stage.
    key: shuffling key.
    loss: ``((params, critic), minibatch) -> (loss, metrics)``.

  Returns:
    ``(params, critic, opt_state, metrics)``: each metric's mean over the
    steps that ran (``policy/ratio_max`` its maximum) and
    ``policy/epochs_run``.
  """
  tx = optimizer(config)
  lr = learning_rate(config, state)

  def step(carry, mb):
    trainable, opt_state = carry
    grads, aux = jax.grad(lambda t: loss(t, mb), has_aux=True)(trainable)
    trainable, opt_state = sgd.descend(tx, grads, opt_state, trainable, lr)
    return (trainable, opt_state), aux

  def stop(aux):
    target = jnp.asarray(getattr(config, "target_kl", 0.0), jnp.float32)
    return (target > 0) & (aux["policy/approxkl_avg"] > target)

  ((params, critic), opt_state), aux, active = sgd.minibatch_epochs(
      step, ((state.params, state.critic), state.opt_state), exp, key,
      epochs=config.epochs, num_minibatches=config.num_minibatches,
      stop=stop)
  weight = active.astype(jnp.float32)
  metrics = {k: (jnp.max(v) if k == "policy/ratio_max" else
                 jnp.sum(v * weight) / jnp.sum(weight))
             for k, v in aux.items()}
  metrics["policy/epochs_run"] = jnp.sum(weight) / config.num_minibatches
  return params, critic, opt_state, metrics


def init_adam(config: RLConfig, params, critic):
  """The optimiser state of :func:`minibatch_learn` (policy and critic)."""
  with sgd.optax_numerics():
    return optimizer(config).init((params, critic))


class Algorithm(NamedTuple):
  """What an algorithm adds to the shared iteration.

  Attributes:
    init_opt: ``(config, params, critic) -> opt_state``.
    learn: ``(config, state, exp, key) -> (params, critic, opt_state,
      metrics)``: the step on one iteration's experience (after the
      credit stage); the learner's ``update`` is the whole iteration.
    credit: ``(config, exp, kl_coef) -> exp``: how the samples become
      rewards and advantages (:mod:`jaxrl_align.rlhf.credit`; GAE with the
      value model by default).
  """
  init_opt: Callable[..., Any]
  learn: Callable[..., Any]
  credit: Callable[..., Any] = credit_lib.critic_gae


def init(algorithm: Algorithm, config: RLConfig, key: Array,
         data: RLData) -> RLState:
  """The policy starts at the reference (at ``data.init_params`` when
  given); the critic at
  ``data.critic_params`` (``{}`` with ``value_model`` ``"policy"`` or
  ``"none"``)."""
  if config.model is None:
    raise ValueError(f"{type(config).__name__}.model is not set: it comes "
                     f"from the reference model.")
  if data.prompts.shape[0] < prompts_per_iteration(config):
    raise ValueError(f"batch_size / group_size "
                     f"({prompts_per_iteration(config)}) exceeds the "
                     f"{data.prompts.shape[0]} training prompts.")
  p = data.prompts.shape[1]
  if p + config.response_length > config.model.max_len:
    raise ValueError(f"prompts of {p} tokens + response_length "
                     f"{config.response_length} exceed the model's max_len "
                     f"{config.model.max_len}.")
  params = data.ref_params if data.init_params is None else data.init_params
  if jax.tree.structure(params) != jax.tree.structure(data.ref_params):
    raise ValueError("data.init_params must have the reference's structure.")
  critic = data.critic_params if config.value_model == "critic" else {}
  return RLState(params, critic, algorithm.init_opt(config, params, critic),
                 kl_controller(config).init(), key,
                 jnp.zeros((), jnp.int32))


def prompts_per_iteration(config: RLConfig) -> int:
  """Prompts drawn per iteration: ``batch_size / group_size``."""
  return config.batch_size // config.group_size


def iterate(algorithm: Algorithm, config: RLConfig, state: RLState,
            data: RLData):
  """One iteration: ``batch_size / group_size`` training prompts (drawn
  without replacement within the iteration), each repeated ``group_size``
  times in consecutive rows, the rollout, the algorithm's credit stage and
  update, the KL controller."""
  key, k_prompts, k_sample, k_update = jax.random.split(state.key, 4)
  idx = sgd.permutation(k_prompts, data.prompts.shape[0]
                        )[:prompts_per_iteration(config)]
  prompts, mask = data.prompts[idx], data.prompt_mask[idx]
  if config.group_size > 1:
    prompts, mask = (jnp.repeat(x, config.group_size, axis=0)
                     for x in (prompts, mask))
  exp = rollout_lib.rollout(config, state, data, *parallel.shard_batch(
      (prompts, mask)), k_sample, credit=algorithm.credit)
  metrics = rollout_lib.rollout_metrics(config, state, data, exp)
  params, critic, opt_state, update_metrics = algorithm.learn(
      config, state, exp, k_update)
  kl_state = kl_controller(config).update(
      state.kl, metrics.get("objective/kl", 0.0), config.batch_size)
  state = RLState(params, critic, opt_state, kl_state, key,
                  state.iteration + 1)
  metrics = {**metrics, **update_metrics,
             "episodes": (state.iteration * config.batch_size
                          ).astype(jnp.float32)}
  return state, metrics


def assess(config: RLConfig, state: RLState, data: RLData):
  """On the held-out prompts (one sampled response each, a fixed key):
  score, gold score and exact KL to the reference."""
  gen = rollout_lib.sample(config, state.params, data.eval_prompts,
                           data.eval_prompt_mask, jax.random.key(0))
  score, proxy, done = rollout_lib.scores(config, data, gen.tokens, gen.mask,
                                          gen.response, gen.response_mask)
  kl = rollout_lib.exact_kl(config, state.params, data.ref_params,
                            gen.tokens, gen.mask, gen.response_mask)
  return state, {
      "eval/scores": jnp.mean(score),
      "eval/proxy": jnp.mean(proxy),
      "eval/gold": rollout_lib.gold(data, gen.tokens, gen.mask),
      "eval/kl_exact": jnp.mean(kl),
      "eval/stop_fraction": jnp.mean(done.astype(jnp.float32))}


def evaluate(config: RLConfig, state: RLState, key: Array, data: RLData,
             size: int) -> dict[str, Array]:
  """Held-out prompts, policy and reference side by side: scores, gold
  scores and the policy's exact KL (``size`` is ignored: every held-out
  prompt is used once); the KL coefficient the run ended with."""
  del size
  out = {"kl_coef": state.kl.coef}
  for name, params in (("policy", state.params),
                       ("reference", data.ref_params)):
    gen = rollout_lib.sample(config, params, data.eval_prompts,
                             data.eval_prompt_mask, key)
    score, proxy, done = rollout_lib.scores(
        config, data, gen.tokens, gen.mask, gen.response, gen.response_mask)
    out[f"{name}_scores"] = score
    out[f"{name}_proxy"] = proxy
    out[f"{name}_gold"] = (jnp.full(score.shape, jnp.nan) if data.gold_fn is
                           None else data.gold_fn(gen.tokens, gen.mask))
    out[f"{name}_stopped"] = done
    if name == "policy":
      out["policy_kl_exact"] = rollout_lib.exact_kl(
          config, params, data.ref_params, gen.tokens, gen.mask,
          gen.response_mask)
  return out


def make_learner(name: str, config_type: type, algorithm: Algorithm,
                 finite_metrics: tuple[str, ...]) -> learner.Learner:
  """The runner's learner for an algorithm on the language model
  (``finite_metrics``: its own metrics that must stay finite where its
  update reports them)."""
  return learner.Learner(
      name=name, config_type=config_type,
      init=lambda config, key, data: init(algorithm, config, key, data),
      update=lambda config, state, data: iterate(algorithm, config, state,
                                                 data),
      evaluate=evaluate, assess=assess,
      assess_every=lambda config: config.eval_every,
      num_updates=lambda config: config.iterations, units="episodes",
      units_per_update=lambda config: config.batch_size,
      finite_metrics=("objective/kl", "objective/scores") + finite_metrics)


def renamed(module: str, names: dict[str, str], namespace: dict[str, Any]):
  """A module ``__getattr__`` under which each old name in ``names`` still
  resolves, to ``namespace[new name]``, with a ``DeprecationWarning``
  (how an algorithm module keeps a renamed public name working)."""

  def __getattr__(name: str):
    if name in names:
      warnings.warn(f"{module}.{name} is now {names[name]}",
                    DeprecationWarning, stacklevel=2)
      return namespace[names[name]]
    raise AttributeError(f"module {module!r} has no attribute {name!r}")
  return __getattr__
