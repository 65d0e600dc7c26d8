"""The RLHF configs (RL, pretraining, reward model, transformer) and the
sampler refuse, when built, the combinations that passed their checks and
then failed inside JAX or were misread there (issue 28, point 3): a token
that is None where an int is written, a float or bool token, a string,
None or bool hyperparameter, a string where a bool is meant, a response
that leaves no room for a prompt, a pretraining window with no next token.
Each message names the field. A stop token of None with the default pad
token, the issue's example, now runs: nothing is padded without a stop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_align.rlhf import generation
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import ppo
from jaxrl_align.rlhf import reward_model
from jaxrl_align.rlhf import rl
from jaxrl_align.rlhf import sft
from jaxrl_align.rlhf import trpo

V, N, STOP, PAD = 5, 3, 4, 0
MODEL = model_lib.TransformerConfig(vocab_size=V, max_len=1 + N,
                                    num_layers=1, num_heads=2, width=16)
BASE = dict(model=MODEL, stop_token=STOP, pad_token=PAD, response_length=N,
            batch_size=4, iterations=1, epochs=1, kl_control="fixed")


def _ppo(**kw):
  return ppo.RLHFPPOConfig(**{**BASE, **kw})


def _trpo(**kw):
  return trpo.RLHFTRPOConfig(**{**BASE, **kw})


RL = [
    ("stop set, pad None", lambda: _ppo(pad_token=None), "RLHFPPOConfig.pad_token"),
    ("pad equals stop", lambda: _ppo(pad_token=STOP), "RLHFPPOConfig.pad_token"),
    ("float stop", lambda: _ppo(stop_token=4.0), "RLHFPPOConfig.stop_token"),
    ("float pad", lambda: _ppo(pad_token=0.0), "RLHFPPOConfig.pad_token"),
    ("bool pad", lambda: _ppo(pad_token=True), "RLHFPPOConfig.pad_token"),
    ("string stop", lambda: _ppo(stop_token="4"), "RLHFPPOConfig.stop_token"),
    ("stop outside the vocabulary", lambda: _ppo(stop_token=V),
     "RLHFPPOConfig.stop_token"),
    ("response_length = max_len", lambda: _ppo(response_length=1 + N),
     "RLHFPPOConfig.response_length"),
    ("string gamma", lambda: _ppo(gamma="1.0"), "gamma"),
    ("None kl_coef", lambda: _ppo(kl_coef=None), "kl_coef"),
    ("bool lam", lambda: _ppo(lam=True), "lam"),
    ("string temperature", lambda: _ppo(temperature="1"), "temperature"),
    ("string learning_rate", lambda: _ppo(learning_rate="1e-3"),
     "learning_rate"),
    ("None max_grad_norm", lambda: _ppo(max_grad_norm=None), "max_grad_norm"),
    ("string whiten_rewards", lambda: _ppo(whiten_rewards="no"),
     "RLHFPPOConfig.whiten_rewards"),
    ("int anneal_lr", lambda: _ppo(anneal_lr=0), "RLHFPPOConfig.anneal_lr"),
    ("bool epochs", lambda: _ppo(epochs=True), "RLHFPPOConfig.epochs"),
    ("None clip_eps", lambda: _ppo(clip_eps=None), "clip_eps"),
    ("string max_kl", lambda: _trpo(max_kl="0.01"), "max_kl"),
    ("list cg_damping", lambda: _trpo(cg_damping=[0.1]), "cg_damping"),
    ("trpo float stop", lambda: _trpo(stop_token=4.0),
     "RLHFTRPOConfig.stop_token"),
]

PRETRAINING = [
    ("max_len 1", lambda: sft.SFTConfig(model=dataclasses.replace(
        MODEL, max_len=1)), "SFTConfig.model.max_len"),
    ("bool steps", lambda: sft.SFTConfig(steps=True), "SFTConfig.steps"),
    ("string learning_rate", lambda: sft.SFTConfig(learning_rate="1e-3"),
     "SFTConfig.learning_rate"),
    ("None weight_decay", lambda: sft.SFTConfig(weight_decay=None),
     "SFTConfig.weight_decay"),
]

REWARD_MODEL = [
    ("bool epochs", lambda: reward_model.RMConfig(epochs=True),
     "RMConfig.epochs"),
    ("string dropout", lambda: reward_model.RMConfig(dropout="0.1"),
     "RMConfig.dropout"),
    ("None body_learning_rate_scale", lambda: reward_model.RMConfig(
        body_learning_rate_scale=None), "body_learning_rate_scale"),
    ("string learning_rate", lambda: reward_model.RMConfig(
        learning_rate="3e-4"), "RMConfig.learning_rate"),
    ("float train_pairs", lambda: reward_model.RMConfig(train_pairs=10.0),
     "RMConfig.train_pairs"),
]

TRANSFORMER = [
    ("bool vocab_size", lambda: model_lib.TransformerConfig(vocab_size=True),
     "TransformerConfig.vocab_size"),
    ("string dropout", lambda: model_lib.TransformerConfig(
        vocab_size=8, dropout="0.1"), "TransformerConfig.dropout"),
    ("None layer_norm_eps", lambda: model_lib.TransformerConfig(
        vocab_size=8, layer_norm_eps=None), "TransformerConfig.layer_norm_eps"),
]


def _generate(**kw):
  module = model_lib.Transformer(MODEL)
  params = module.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  return generation.generate(module.apply, params, MODEL,
                             jnp.ones((2, 1), jnp.int32), jnp.ones((2, 1), bool),
                             jax.random.key(1), max_new_tokens=N, **kw)


SAMPLER = [
    ("stop set, pad None", lambda: _generate(stop_token=STOP, pad_token=None),
     "pad_token"),
    ("pad equals stop", lambda: _generate(stop_token=STOP, pad_token=STOP),
     "pad_token"),
    ("float stop", lambda: _generate(stop_token=4.0), "stop_token"),
    ("stop outside the vocabulary", lambda: _generate(stop_token=V),
     "stop_token"),
]

CASES = {"rl": RL, "sft": PRETRAINING, "rm": REWARD_MODEL,
         "transformer": TRANSFORMER, "sampler": SAMPLER}


@pytest.mark.parametrize("make, name", [
    pytest.param(make, name, id=f"{group}: {label}")
    for group, rows in CASES.items() for label, make, name in rows])
def test_refused_when_built_naming_the_field(make, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    make()


def _toy_data(batch):
  ref = model_lib.Transformer(MODEL).init(jax.random.key(1),
                                          jnp.zeros((1, 2), jnp.int32))
  table = jax.random.uniform(jax.random.key(2), (V ** N,))

  def score(table, tokens, mask):
    del mask
    response = tokens[:, -N:]
    return table[sum(response[:, i] * V ** (N - 1 - i) for i in range(N))]

  prompts = jnp.full((batch, 1), 1, jnp.int32)
  mask = jnp.ones((batch, 1), bool)
  return rl.RLData(prompts, mask, prompts, mask, ref, table, ref, score)


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_no_stop_token_with_the_default_pad_runs(algo):
  """Issue 28's example: ``stop_token=None`` and the default ``pad_token``
  (None) failed at the first update with a JAX ``TypeError``; without a
  stop nothing is padded, so it runs, every response full length."""
  make, learner = {"ppo": (_ppo, ppo.LEARNER),
                   "trpo": (_trpo, trpo.LEARNER)}[algo]
  config = make(stop_token=None, pad_token=None)
  data = _toy_data(config.batch_size)
  state = learner.init(config, jax.random.key(0), data)
  state, metrics = jax.jit(lambda s: learner.update(config, s, data))(state)
  assert int(state.iteration) == 1
  assert np.isfinite(float(metrics["objective/kl"]))
  gen = _generate(stop_token=None, pad_token=None)
  assert bool(jnp.all(gen.response_mask))


def test_sweeps_and_derived_fields_still_build():
  """Hyperparameters as arrays (a ``vmap`` sweep's batched config) or
  tracers pass; a config before the run fills its model and tokens in
  (``model=None``) builds, and then refuses the missing pad token."""
  swept = _ppo(kl_coef=jnp.asarray([0.1, 0.2]), gamma=np.float32(1.0))
  assert swept.kl_coef.shape == (2,)
  lams = jax.vmap(lambda lam: _ppo(lam=lam).lam)(jnp.asarray([0.9, 0.95]))
  np.testing.assert_allclose(lams, [0.9, 0.95])
  bare = ppo.RLHFPPOConfig()
  assert bare.model is None and bare.pad_token is None
  with pytest.raises(ValueError, match="`RLHFPPOConfig.pad_token`"):
    bare.replace(model=MODEL, stop_token=STOP, response_length=N)
  assert bare.replace(model=MODEL, stop_token=STOP, pad_token=PAD,
                      response_length=N).pad_token == PAD
