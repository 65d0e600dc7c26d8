"""jaxrl_align: pure, jitted policy-gradient primitives and their use for RLHF.

The primitives below take arrays and numbers and return arrays; compose them
in your own jitted code. Time-major ``[T, *B]`` arrays throughout.
"""

from jaxrl_align.advantages import discounted_returns
from jaxrl_align.advantages import gae
from jaxrl_align.advantages import grpo_advantages
from jaxrl_align.advantages import lambda_returns
from jaxrl_align.advantages import rloo_advantages
from jaxrl_align.distributions import categorical_entropy
from jaxrl_align.distributions import categorical_kl
from jaxrl_align.distributions import categorical_log_prob
from jaxrl_align.distributions import categorical_mode
from jaxrl_align.distributions import categorical_sample
from jaxrl_align.distributions import gaussian_entropy
from jaxrl_align.distributions import gaussian_kl
from jaxrl_align.distributions import gaussian_log_prob
from jaxrl_align.distributions import gaussian_mode
from jaxrl_align.distributions import gaussian_sample
from jaxrl_align.distributions import gsde_exploration_matrix
from jaxrl_align.distributions import gsde_log_std
from jaxrl_align.distributions import gsde_noise
from jaxrl_align.kl_control import adaptive_kl_controller
from jaxrl_align.kl_control import fixed_kl_controller
from jaxrl_align.kl_control import KLController
from jaxrl_align.kl_control import KLControllerState
from jaxrl_align.kl_control import ppo_kl_controller
from jaxrl_align.losses import aggregate_tokens
from jaxrl_align.losses import approx_kl
from jaxrl_align.losses import clip_fraction
from jaxrl_align.losses import clipped_surrogate
from jaxrl_align.losses import clipped_value_loss
from jaxrl_align.losses import entropy_loss
from jaxrl_align.losses import kl_k1
from jaxrl_align.losses import kl_k2
from jaxrl_align.losses import kl_k3
from jaxrl_align.losses import masked_mean
from jaxrl_align.losses import ppo_clip_loss
from jaxrl_align.losses import ppo_kl_penalty_loss
from jaxrl_align.losses import value_loss
from jaxrl_align.normalization import normalize
from jaxrl_align.normalization import running_mean_std_init
from jaxrl_align.normalization import running_mean_std_update
from jaxrl_align.normalization import RunningMeanStd
from jaxrl_align.normalization import whiten
from jaxrl_align.preferences import bradley_terry_loss
from jaxrl_align.preferences import dpo_loss
from jaxrl_align.sequences import batch_major
from jaxrl_align.sequences import kl_penalized_rewards
from jaxrl_align.sequences import last_step
from jaxrl_align.sequences import time_major
from jaxrl_align.trust_region import CGInfo
from jaxrl_align.trust_region import conjugate_gradient
from jaxrl_align.trust_region import conjugate_gradient_with_info
from jaxrl_align.fisher import fisher_vector_product
from jaxrl_align.fisher import gauss_newton_vector_product
from jaxrl_align.trust_region import npg_step
from jaxrl_align.trust_region import trpo_step
from jaxrl_align.trust_region import TRPOInfo

__version__ = "0.1.0"

__all__ = (
    "adaptive_kl_controller",
    "aggregate_tokens",
    "approx_kl",
    "batch_major",
    "bradley_terry_loss",
    "categorical_entropy",
    "categorical_kl",
    "categorical_log_prob",
    "categorical_mode",
    "categorical_sample",
    "CGInfo",
    "clip_fraction",
    "clipped_surrogate",
    "clipped_value_loss",
    "conjugate_gradient",
    "conjugate_gradient_with_info",
    "discounted_returns",
    "dpo_loss",
    "entropy_loss",
    "fisher_vector_product",
    "gauss_newton_vector_product",
    "fixed_kl_controller",
    "gae",
    "gaussian_entropy",
    "gaussian_kl",
    "gaussian_log_prob",
    "gaussian_mode",
    "gaussian_sample",
    "gsde_exploration_matrix",
    "gsde_log_std",
    "gsde_noise",
    "grpo_advantages",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_penalized_rewards",
    "KLController",
    "KLControllerState",
    "lambda_returns",
    "last_step",
    "masked_mean",
    "normalize",
    "npg_step",
    "ppo_clip_loss",
    "ppo_kl_controller",
    "ppo_kl_penalty_loss",
    "rloo_advantages",
    "running_mean_std_init",
    "running_mean_std_update",
    "RunningMeanStd",
    "time_major",
    "trpo_step",
    "TRPOInfo",
    "value_loss",
    "whiten",
)
