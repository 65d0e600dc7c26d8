"""The configuration, data and state of RL on the language model (what
every algorithm of :mod:`jaxrl_align.rlhf.rl`'s iteration shares)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
from flax import struct

from jaxrl_align import _checks
from jaxrl_align import configs
from jaxrl_align import kl_control
from jaxrl_align import sequences
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import reward_model

Array = jax.Array
static = configs.static

VALUE_MODELS = ("critic", "policy", "none")
BEHAVIOUR_LOG_PROBS = ("sampler", "forward")
KL_CONTROLS = ("adaptive", "fixed")
# The fields only a value model reads: a config whose ``value_model`` can
# only be ``"none"`` (RLOO, GRPO) has no use for them (:func:`option_names`).
CRITIC_FIELDS = ("value_model", "gamma", "lam", "value_clip", "vf_coef")


@struct.dataclass
class RLConfig:
  """What every RL algorithm on the language model shares (PPO, TRPO and
  the critic-free ones).

  Attributes:
    model: *static* the policy's (and reference's) transformer shape.
    stop_token: *static* the token that ends a response (``None``: none;
      responses then always run to ``response_length``).
    pad_token: *static* written after the stop token (must differ from it;
      required with a stop token once ``model`` is set, unused without
      one).
    iterations: *static* rollouts (each followed by one update).
    batch_size: *static* responses per iteration: ``batch_size /
      group_size`` prompts, each answered ``group_size`` times.
    group_size: *static* responses to each prompt (G; divides
      ``batch_size``); the G responses of a prompt are consecutive rows of
      the iteration's batch, where a group baseline
      (:func:`jaxrl_align.rlhf.credit.group_baseline`) finds them.
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
      ``data.critic_params``), ``policy`` (the policy's scalar head) or
      ``none`` (no value pass and no value loss; values are 0, for the
      critic-free algorithms).
    epochs: *static* passes over the batch per update (PPO: the policy and
      the value; TRPO: the value).
    num_minibatches: *static* minibatches per pass (divides
      ``batch_size``).
    eval_every: *static* iterations between assessments on the held-out
      prompts.
    anneal_lr: *static* decay the learning rate linearly to 0 over the
      iterations (as TRL's default scheduler does).
    behaviour_log_probs: *static* where the sampling policy's
      log-probabilities (the ratio's denominator, the KL's first term) come
      from: ``sampler``, the cached sampler's own, of the distribution it
      drew from (no second policy pass; they differ from a forward pass
      over the whole sequence by rounding, about 1e-6), or ``forward``, a
      forward pass of the policy over prompt and response after sampling
      (TRL's PPO trainer). With ``value_model="policy"`` that pass runs
      anyway (it gives the values) and its log-probabilities are used.
    matmul_dtype: *static* the operands' dtype of the matrix products in
      every pass of the policy, the reference and the critic (sampling,
      log-probabilities, values, the update): ``bfloat16`` is mixed
      precision (operands rounded to bfloat16, products accumulated in
      float32, parameters, optimiser and everything else float32; see
      :class:`~jaxrl_align.rlhf.model.TransformerConfig`), ``float32``
      none. The reward model scores in float32.
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
  group_size: int = static(1)
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
  behaviour_log_probs: str = static("sampler", choices=BEHAVIOUR_LOG_PROBS)
  matmul_dtype: str = static("float32", choices=model_lib.MATMUL_DTYPES)
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


def option_names(config_type: type) -> tuple[str, ...] | None:
  """The fields of ``config_type`` (an :class:`RLConfig`) that change what
  its learner does, for a command's options: all (None) but
  :data:`CRITIC_FIELDS` when its ``value_model`` can only be ``"none"``."""
  value_model = config_type.__dataclass_fields__["value_model"]
  if value_model.metadata.get("choices") != ("none",):
    return None
  return tuple(f.name for f in dataclasses.fields(config_type)
               if f.name not in CRITIC_FIELDS)


def check_config(config: RLConfig, owner: str) -> None:
  """The shared fields' checks (``ValueError`` naming ``owner.field``)."""
  if config.model is not None and not isinstance(
      config.model, model_lib.TransformerConfig):
    raise ValueError(f"`{owner}.model` must be a TransformerConfig, got "
                     f"{type(config.model).__name__}.")
  configs.check_choices(config)
  for name in ("iterations", "batch_size", "group_size", "response_length",
               "epochs", "num_minibatches", "eval_every"):
    _checks.check_positive_int(f"{owner}.{name}", getattr(config, name))
  _checks.check_positive_int(f"{owner}.top_k", config.top_k, allow_zero=True)
  _checks.check_scalar_in_range(f"{owner}.top_p", config.top_p, 0, 1,
                                low_inclusive=False)
  if config.batch_size % config.group_size:
    raise ValueError(f"`{owner}.group_size` ({config.group_size}) must "
                     f"divide batch_size ({config.batch_size}).")
  if config.batch_size % config.num_minibatches:
    raise ValueError(f"`{owner}.num_minibatches` ({config.num_minibatches}) "
                     f"must divide batch_size ({config.batch_size}).")
  configs.check_types(config, owner)
  for name in ("pad_token", "stop_token"):
    if getattr(config, name) is not None:
      _checks.check_positive_int(f"{owner}.{name}", getattr(config, name),
                                 allow_zero=True)
  if config.model is not None:
    for name in ("pad_token", "stop_token"):
      token = getattr(config, name)
      if token is not None:
        _checks.check_scalar_in_range(f"{owner}.{name}", token, 0,
                                      config.model.vocab_size - 1)
    if config.stop_token is not None and config.pad_token is None:
      raise ValueError(f"`{owner}.pad_token` must be set with stop_token "
                       f"({config.stop_token}): it is written after a stop.")
    if config.top_k > config.model.vocab_size:
      raise ValueError(f"`{owner}.top_k` ({config.top_k}) exceeds the "
                       f"vocabulary ({config.model.vocab_size}).")
    if config.response_length >= config.model.max_len:
      raise ValueError(f"`{owner}.response_length` ({config.response_length})"
                       f" leaves no room for a prompt in the model's max_len "
                       f"({config.model.max_len}).")
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
    ref_params: the frozen reference; the policy starts from it unless
      ``init_params`` is given.
    reward_params: what ``score_fn`` scores with.
    critic_params: the separate critic's starting parameters (a
      transformer of ``model``'s shape; unused with ``value_model="policy"``).
    score_fn: *static* ``(reward_params, tokens [B, T], mask [B, T]) ->
      [B]``, the score of each prompt-and-response.
    gold_fn: *static* ``(tokens, mask) -> [B]`` float32 or None: a score
      reported, never optimised (part 1's gold annotator, through a host
      callback).
    init_params: where the policy starts instead of the reference (a
      transformer of ``model``'s shape: a DPO run's policy), or None.
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
  init_params: Any = None


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


def policy_pass(config: RLConfig) -> bool:
  """Whether the rollout runs the policy over prompt and response after
  sampling: for the log-probabilities (``behaviour_log_probs="forward"``)
  or for the values (``value_model="policy"``)."""
  return (config.behaviour_log_probs == "forward"
          or config.value_model == "policy")


def uses_reference(config: RLConfig) -> bool:
  """Whether an iteration runs the reference at all: not when β is a
  concrete 0 under the fixed controller (the KL then enters neither the
  reward nor the loss, and no KL is reported: it was not measured; the
  held-out assessment still measures it). A traced β (a sweep) always
  runs it."""
  return not (config.kl_control == "fixed"
              and configs.is_python_number(config.kl_coef)
              and float(config.kl_coef) == 0.0)


def kl_controller(config: RLConfig) -> kl_control.KLController:
  if config.kl_control == "fixed":
    return kl_control.fixed_kl_controller(config.kl_coef)
  return kl_control.adaptive_kl_controller(
      config.kl_coef, target=config.kl_target, horizon=config.kl_horizon)
