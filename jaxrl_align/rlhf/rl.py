"""KL-regularised reinforcement learning on the language model: what PPO and
TRPO share (config, data, state, iteration, learner; the rollout, rewards,
advantages and sample metrics are in :mod:`jaxrl_align.rlhf.rollout`).

One iteration, for a batch of prompts:

1. **Rollout.** Sample a response for each prompt from the policy with the
   cached sampler (:func:`~jaxrl_align.rlhf.generation.generate`): it stops
   a row at the stop token, which belongs to the response, and pads after it
   with a distinct padding token. Every log-probability (policy, reference,
   and later the updated policy) is taken from one forward pass over prompt
   and response under the distribution actually sampled: logits divided by
   the temperature, restricted to the top k and the nucleus (top p) when
   set, the sampled token always kept (see ``rollout.response_outputs``).
2. **Score.** ``data.score_fn`` scores each (truncated) response — the
   reward model of part 1, normalised on the reference's samples — and
   ``missing_eos_penalty`` is subtracted from the score of a response that
   never emitted the stop token.
3. **Rewards.** ``reward_t = -β·kl_t``, plus the score at the last response
   token (:func:`jaxrl_align.kl_penalized_rewards`; ``k1`` by default, the
   only estimator that gives an unbiased gradient of the regularised
   objective); optionally whitened (scale only) over the response tokens.
4. **Advantages.** :func:`jaxrl_align.gae` with γ = 1, λ = 0.95 over the
   response, each response an episode that terminates at its last token
   (padding steps carry nothing); advantages whitened over response tokens.
5. **Update**: the algorithm's (:mod:`.ppo`, :mod:`.trpo`), then the KL
   coefficient's controller sees the mean sequence KL to the reference
   (fixed, or adaptive as in Ziegler et al. 2019).

Values come from a separate critic (by default started from the reward
model) or from the policy's own scalar head; dropout is off in every model.

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

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxrl_align import _checks
from jaxrl_align import configs
from jaxrl_align import kl_control
from jaxrl_align import learner
from jaxrl_align import parallel
from jaxrl_align import sequences
from jaxrl_align import sgd
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import reward_model
from jaxrl_align.rlhf import rollout as rollout_lib

Array = jax.Array
static = configs.static

VALUE_MODELS = ("critic", "policy")
KL_CONTROLS = ("adaptive", "fixed")


@struct.dataclass
class RLConfig:
  """What PPO and TRPO on the language model share.

  Attributes:
    model: *static* the policy's (and reference's) transformer shape.
    stop_token: *static* the token that ends a response (``None``: none;
      responses then always run to ``response_length``).
    pad_token: *static* written after the stop token (must differ from it).
    iterations: *static* rollouts (each followed by one update).
    batch_size: *static* prompts (one response each) per iteration.
    response_length: *static* new tokens at most.
    top_k: *static* sample among the k most likely tokens (0: all); every
      log-probability is then that of the truncated distribution.
    top_p: *static* sample within the nucleus of this probability, after
      the temperature and top-k (1: all; Hugging Face's order); every
      log-probability is then that of the truncated distribution.
    kl_estimator: *static* the per-token KL in the reward: ``k1`` (the
      unbiased one), ``k2`` or ``k3``.
    kl_control: *static* ``adaptive`` (Ziegler et al.: the coefficient
      follows ``kl_target``) or ``fixed`` (``kl_coef`` throughout).
    whiten_rewards: *static* rescale the per-token rewards to unit variance
      over response tokens (mean kept).
    value_model: *static* ``critic`` (a separate model, started from
      ``data.critic_params``) or ``policy`` (the policy's scalar head).
    epochs: *static* passes over the batch per update (PPO: the policy and
      the value; TRPO: the value).
    num_minibatches: *static* minibatches per pass (divides
      ``batch_size``).
    eval_every: *static* iterations between assessments on the held-out
      prompts.
    anneal_lr: *static* decay the learning rate linearly to 0 over the
      iterations (as TRL's default scheduler does).
    temperature: divides the logits when sampling and in every
      log-probability (> 0).
    kl_coef: β, the KL penalty's (initial) coefficient (≥ 0; the default
      and the horizon's were measured, docs/rlhf.md).
    kl_target: the adaptive controller's target KL per response (nats).
    kl_horizon: the adaptive controller's horizon (responses).
    missing_eos_penalty: subtracted from the score of a response that never
      emitted the stop token (0: no penalty).
    gamma: discount over tokens (1: the return is the regularised
      objective).
    lam: GAE λ.
    value_clip: the clipped value loss's ε, in reward units.
    vf_coef: the value loss's weight in the loss.
    learning_rate: Adam's learning rate (PPO: of the joint policy-and-value
      loss; TRPO: of the value).
    max_grad_norm: global-norm gradient clip.
  """
  model: model_lib.TransformerConfig = static(derived=True)
  stop_token: Any = static(derived=True)
  pad_token: int = static(derived=True)
  iterations: int = static(100)
  batch_size: int = static(64)
  response_length: int = static(48)
  top_k: int = static(0)
  top_p: float = static(1.0)
  kl_estimator: str = static("k1", choices=sequences.KL_ESTIMATORS)
  kl_control: str = static("adaptive", choices=KL_CONTROLS)
  whiten_rewards: bool = static(False)
  value_model: str = static("critic", choices=VALUE_MODELS)
  epochs: int = static(4)
  num_minibatches: int = static(1)
  eval_every: int = static(10)
  anneal_lr: bool = static(True)
  temperature: Any = 1.0
  kl_coef: Any = 0.2
  kl_target: Any = 6.0
  kl_horizon: Any = 1_000.0
  missing_eos_penalty: Any = 1.0
  gamma: Any = 1.0
  lam: Any = 0.95
  value_clip: Any = 0.2
  vf_coef: Any = 0.1
  learning_rate: Any = 1e-4
  max_grad_norm: Any = 1.0

  def __post_init__(self):
    check_config(self, type(self).__name__)


def check_config(config: RLConfig, owner: str) -> None:
  """The shared fields' checks (``ValueError`` naming ``owner.field``)."""
  if config.model is not None and not isinstance(
      config.model, model_lib.TransformerConfig):
    raise ValueError(f"`{owner}.model` must be a TransformerConfig, got "
                     f"{type(config.model).__name__}.")
  configs.check_choices(config)
  for name in ("iterations", "batch_size", "response_length", "epochs",
               "num_minibatches", "eval_every"):
    _checks.check_positive_int(f"{owner}.{name}", getattr(config, name))
  _checks.check_positive_int(f"{owner}.top_k", config.top_k, allow_zero=True)
  _checks.check_scalar_in_range(f"{owner}.top_p", config.top_p, 0, 1,
                                low_inclusive=False)
  if config.batch_size % config.num_minibatches:
    raise ValueError(f"`{owner}.num_minibatches` ({config.num_minibatches}) "
                     f"must divide batch_size ({config.batch_size}).")
  if config.model is not None:
    for name in ("pad_token", "stop_token"):
      token = getattr(config, name)
      if token is not None:
        _checks.check_scalar_in_range(f"{owner}.{name}", token, 0,
                                      config.model.vocab_size - 1)
    if config.top_k > config.model.vocab_size:
      raise ValueError(f"`{owner}.top_k` ({config.top_k}) exceeds the "
                       f"vocabulary ({config.model.vocab_size}).")
  if config.stop_token is not None and config.stop_token == config.pad_token:
    raise ValueError(f"`{owner}.pad_token` must differ from stop_token "
                     f"({config.stop_token}): padding would read as a stop.")
  configs.check_finite_positive(config, "temperature", "kl_target",
                                "kl_horizon", "value_clip", "max_grad_norm")
  configs.check_finite_nonnegative(config, "kl_coef", "missing_eos_penalty",
                                   "vf_coef", "learning_rate")
  configs.check_range(config, "gamma", 0.0, 1.0)
  configs.check_range(config, "lam", 0.0, 1.0)


# ------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class RewardModelScore:
  """``score_fn`` of a transformer reward model: its scalar head at each
  sequence's last real token (:func:`jaxrl_align.rlhf.reward_model.rewards`).
  Equal configs give equal (and equally hashed) scorers, so compiled
  programs are reused."""
  model: model_lib.TransformerConfig

  def __call__(self, params, tokens: Array, mask: Array) -> Array:
    return reward_model.rewards(model_lib.Transformer(self.model).apply,
                                params, tokens, mask)


@struct.dataclass
class RLData:
  """What RL on the language model reads and never changes.

  Attributes:
    prompts: ``[N, P]`` int, left-padded training prompts (each iteration
      draws ``batch_size`` of them).
    prompt_mask: ``[N, P]`` bool, real prompt tokens.
    eval_prompts: ``[M, P]`` held-out prompts (assessments).
    eval_prompt_mask: ``[M, P]``.
    ref_params: the frozen reference; the policy starts from it.
    reward_params: what ``score_fn`` scores with.
    critic_params: the separate critic's starting parameters (a
      transformer of ``model``'s shape; unused with ``value_model="policy"``).
    score_fn: *static* ``(reward_params, tokens [B, T], mask [B, T]) ->
      [B]``, the score of each prompt-and-response.
    gold_fn: *static* ``(tokens, mask) -> [B]`` float32 or None: a score
      reported, never optimised (part 1's gold annotator, through a host
      callback).
  """
  prompts: Array
  prompt_mask: Array
  eval_prompts: Array
  eval_prompt_mask: Array
  ref_params: Any
  reward_params: Any
  critic_params: Any
  score_fn: Callable[..., Array] = struct.field(pytree_node=False)
  gold_fn: Callable[..., Array] | None = struct.field(pytree_node=False,
                                                      default=None)


class RLState(NamedTuple):
  """Everything that changes during RL (arrays only).

  Attributes:
    params: the policy.
    critic: the separate critic's parameters (``{}`` with
      ``value_model="policy"``).
    opt_state: the optimiser's state (PPO: policy and critic; TRPO: the
      value's).
    kl: the KL controller's state (its coefficient).
    key: sampling and shuffling key.
    iteration: int32 iterations done.
  """
  params: Any
  critic: Any
  opt_state: Any
  kl: kl_control.KLControllerState
  key: Array
  iteration: Array


def kl_controller(config: RLConfig) -> kl_control.KLController:
  if config.kl_control == "fixed":
    return kl_control.fixed_kl_controller(config.kl_coef)
  return kl_control.adaptive_kl_controller(
      config.kl_coef, target=config.kl_target, horizon=config.kl_horizon)


# ----------------------------------------------------------- the learner


def learning_rate(config: RLConfig, state: RLState) -> Array:
  """This iteration's Adam learning rate (annealed with ``anneal_lr``)."""
  lr = jnp.asarray(config.learning_rate, jnp.float32)
  if config.anneal_lr:
    return sgd.linear_schedule(lr, state.iteration, config.iterations)
  return lr


class Algorithm(NamedTuple):
  """What PPO and TRPO each add to the shared iteration.

  Attributes:
    init_opt: ``(config, params, critic) -> opt_state``.
    update: ``(config, state, exp, key) -> (params, critic, opt_state,
      metrics)``: the update on one iteration's experience.
  """
  init_opt: Callable[..., Any]
  update: Callable[..., Any]


def init(algorithm: Algorithm, config: RLConfig, key: Array,
         data: RLData) -> RLState:
  """The policy starts at the reference; the critic at
  ``data.critic_params`` (``{}`` with ``value_model="policy"``)."""
  if config.model is None:
    raise ValueError(f"{type(config).__name__}.model is not set: it comes "
                     f"from the reference model.")
  if data.prompts.shape[0] < config.batch_size:
    raise ValueError(f"batch_size ({config.batch_size}) exceeds the "
                     f"{data.prompts.shape[0]} training prompts.")
  p = data.prompts.shape[1]
  if p + config.response_length > config.model.max_len:
    raise ValueError(f"prompts of {p} tokens + response_length "
                     f"{config.response_length} exceed the model's max_len "
                     f"{config.model.max_len}.")
  params = data.ref_params
  critic = {} if config.value_model == "policy" else data.critic_params
  return RLState(params, critic, algorithm.init_opt(config, params, critic),
                 kl_controller(config).init(), key,
                 jnp.zeros((), jnp.int32))


def iterate(algorithm: Algorithm, config: RLConfig, state: RLState,
            data: RLData):
  """One iteration: a batch of training prompts (drawn without replacement
  within the iteration), the rollout, the update, the KL controller."""
  key, k_prompts, k_sample, k_update = jax.random.split(state.key, 4)
  idx = sgd.permutation(k_prompts, data.prompts.shape[0])[:config.batch_size]
  exp = rollout_lib.rollout(config, state, data, *parallel.shard_batch(
      (data.prompts[idx], data.prompt_mask[idx])), k_sample)
  metrics = rollout_lib.rollout_metrics(config, state, data, exp)
  params, critic, opt_state, update_metrics = algorithm.update(
      config, state, exp, k_update)
  kl_state = kl_controller(config).update(
      state.kl, metrics["objective/kl"], config.batch_size)
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
  prompt is used once)."""
  del size
  out = {}
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


def _finite(x) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x[np.isfinite(x)]


def _mean(x) -> float | None:
  x = _finite(x)
  return float(x.mean()) if x.size else None


def _gain(policy, reference) -> float | None:
  """The policy's mean minus the reference's, in reference standard
  deviations (None without values or spread)."""
  p, r = _finite(policy), _finite(reference)
  if not p.size or r.size < 2 or not r.std() > 0:
    return None
  return float((p.mean() - r.mean()) / r.std())


def _summarize(config, states, evaluation, last_metrics) -> dict[str, Any]:
  del config
  per_seed = []
  for i, last in enumerate(last_metrics):
    ev = {k: v[i] for k, v in evaluation.items()}
    row = {key: _mean(ev[key]) for key in (
        "policy_scores", "reference_scores", "policy_proxy",
        "reference_proxy", "policy_gold", "reference_gold",
        "policy_kl_exact")}
    row.update(
        score_gain_in_reference_std=_gain(ev["policy_scores"],
                                          ev["reference_scores"]),
        proxy_gain_in_reference_std=_gain(ev["policy_proxy"],
                                          ev["reference_proxy"]),
        gold_gain_in_reference_std=_gain(ev["policy_gold"],
                                         ev["reference_gold"]),
        policy_stop_fraction=_mean(ev["policy_stopped"]),
        reference_stop_fraction=_mean(ev["reference_stopped"]),
        final_kl_coef=float(np.asarray(states.kl.coef)[i]),
        last_train_kl=last.get("objective/kl"))
    per_seed.append(row)
  return {"per_seed": per_seed}


def _report(summary: dict[str, Any]) -> str:
  def num(x):
    return "n/a" if x is None else f"{x:.3f}"

  def std(x):
    return "" if x is None else f" ({x:+.2f} sd)"
  return "\n".join(
      f"seed {i}: held-out reward-model score {num(s['reference_proxy'])} "
      f"(reference) -> {num(s['policy_proxy'])}"
      f"{std(s['proxy_gain_in_reference_std'])}, with the missing-stop "
      f"penalty {num(s['reference_scores'])} -> {num(s['policy_scores'])}"
      f"{std(s['score_gain_in_reference_std'])}; "
      f"gold {num(s['reference_gold'])} -> {num(s['policy_gold'])}"
      f"{std(s['gold_gain_in_reference_std'])}; KL(policy || reference) "
      f"{num(s['policy_kl_exact'])} nats per response"
      for i, s in enumerate(summary["per_seed"]))


def make_learner(name: str, config_type: type, algorithm: Algorithm,
                 finite_metrics: tuple[str, ...]) -> learner.Learner:
  """The runner's learner for an algorithm on the language model."""
  return learner.Learner(
      name=name, config_type=config_type,
      init=lambda config, key, data: init(algorithm, config, key, data),
      update=lambda config, state, data: iterate(algorithm, config, state,
                                                 data),
      evaluate=evaluate, assess=assess,
      assess_every=lambda config: config.eval_every,
      num_updates=lambda config: config.iterations, units="episodes",
      units_per_update=lambda config: config.batch_size,
      progress_metric="objective/rlhf_reward",
      finite_metrics=("objective/kl", "objective/scores") + finite_metrics,
      summarize=_summarize, report=_report)

