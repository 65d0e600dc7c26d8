"""Annotators, Bradley–Terry loss and the reward model."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_align as jra
from jaxrl_align.host.rlhf import annotators
from jaxrl_align.rlhf import model as model_lib
from jaxrl_align.rlhf import reward_model


def test_bradley_terry_loss_by_hand():
  # margins 2, 0, -1: -log σ(2) = log(1 + e^-2) = 0.126928,
  # -log σ(0) = log 2 = 0.693147, -log σ(-1) = log(1 + e) = 1.313262;
  # mean 0.711113; accuracy: only the first margin is > 0 -> 1/3.
  chosen, rejected = jnp.array([3.0, 1.0, 0.0]), jnp.array([1.0, 1.0, 1.0])
  loss = jax.jit(jra.bradley_terry_loss)(chosen, rejected)
  np.testing.assert_allclose(loss, (math.log1p(math.exp(-2)) + math.log(2)
                                    + math.log1p(math.e)) / 3, rtol=1e-6)
  np.testing.assert_allclose(loss, 0.711113, atol=1e-6)
  np.testing.assert_allclose(reward_model.accuracy(chosen, rejected), 1 / 3,
                             rtol=1e-6)
  batched = jax.vmap(jra.bradley_terry_loss)(
      jnp.array([[3.0], [0.0]]), jnp.array([[1.0], [1.0]]))
  np.testing.assert_allclose(batched, [math.log1p(math.exp(-2)),
                                       math.log1p(math.e)], rtol=1e-6)


def test_rewards_read_the_last_real_token():
  config = model_lib.TransformerConfig(vocab_size=9, max_len=8, num_layers=1,
                                       num_heads=1, width=8)
  module = model_lib.Transformer(config)
  params = module.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
  # A random head: the initial (zero) head, or a head of ones on the final
  # LayerNorm's zero-sum features, reads 0 at every token, so reading the
  # wrong token would pass unnoticed.
  params["params"]["score"]["kernel"] = jax.random.normal(jax.random.key(3),
                                                          (8, 1))
  tokens = jnp.array([[0, 0, 3, 4, 5], [3, 4, 5, 0, 0]])
  left = jnp.array([[0, 0, 1, 1, 1]], bool)
  right = jnp.array([[1, 1, 1, 0, 0]], bool)
  r = reward_model.rewards(module.apply, params, tokens,
                           jnp.concatenate([left, right]))
  _, scalar, _ = module.apply(params, tokens[1:, :3])
  # Left- and right-padded copies of one sequence: the same reward, equal to
  # the unpadded sequence's scalar at its last token.
  np.testing.assert_allclose(r[0], r[1], atol=1e-5)
  np.testing.assert_allclose(r[1], scalar[0, -1], atol=1e-5)
  assert np.min(np.abs(np.asarray(scalar[0, :-1]) - float(r[1]))) > 1e-2


def test_normalize_head_is_affine():
  config = model_lib.TransformerConfig(vocab_size=9, max_len=8, num_layers=1,
                                       num_heads=1, width=8)
  module = model_lib.Transformer(config)
  params = module.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
  params["params"]["score"]["kernel"] = jax.random.normal(jax.random.key(1),
                                                          (8, 1))
  tokens = jax.random.randint(jax.random.key(2), (16, 6), 0, 9)
  mask = jnp.ones((16, 6), bool)
  r = reward_model.rewards(module.apply, params, tokens, mask)
  normed = reward_model.normalize_head(params, float(r.mean()), float(r.std()))
  r2 = reward_model.rewards(module.apply, normed, tokens, mask)
  np.testing.assert_allclose(r2, (r - r.mean()) / r.std(), atol=1e-5)
  np.testing.assert_allclose([r2.mean(), r2.std()], [0, 1], atol=1e-5)


def test_body_learns_at_a_fraction_of_the_head_rate():
  # With the same gradient g twice, Adam's bias-corrected moments are g and
  # g², so the second update is -lr_t g / (|g| + eps) (params are zero, so
  # weight decay adds nothing): the body's update is exactly
  # body_learning_rate_scale times what it would be at the head's rate.
  config = model_lib.TransformerConfig(vocab_size=9, max_len=8, num_layers=1,
                                       num_heads=1, width=8)
  params = model_lib.Transformer(config).init(jax.random.key(0),
                                              jnp.zeros((1, 2), jnp.int32))
  params = jax.tree.map(jnp.zeros_like, params)
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)

  def second_update(scale):
    tx = reward_model.optimizer(reward_model.RMConfig(
        learning_rate=1e-2, body_learning_rate_scale=scale, warmup_steps=1))
    state = tx.init(params)
    with jax.numpy_dtype_promotion("standard"):  # optax's count arithmetic
      _, state = tx.update(grads, state, params)
      updates, _ = tx.update(grads, state, params)
    return updates["params"]

  full, scaled = second_update(1.0), second_update(0.25)
  head = full["score"]["kernel"]
  # 0.5 is clipped by the global norm to g = 0.5 / norm(all); |update| =
  # lr * g / (g + 1e-8) ≈ lr.
  np.testing.assert_allclose(head, -1e-2, rtol=1e-4)
  np.testing.assert_array_equal(scaled["score"]["kernel"], head)
  for name in ("wte", "h_0", "ln_f"):
    for a, b in zip(jax.tree.leaves(full[name]), jax.tree.leaves(scaled[name])):
      np.testing.assert_allclose(b, 0.25 * a, rtol=1e-6)
  with pytest.raises(ValueError, match="body_learning_rate_scale"):
    reward_model.RMConfig(body_learning_rate_scale=0.0)
  with pytest.raises(ValueError, match="dropout"):
    reward_model.RMConfig(dropout=1.0)


def test_step_is_seeded_by_its_dropout_key():
  # The head starts at zero and a head of ones reads a LayerNorm output,
  # whose features sum to zero: either gives every reward 0 and the loss
  # ln 2 whatever the masks. A random head gives rewards of order 1, so a
  # different dropout mask moves the loss by far more than rounding.
  config = model_lib.TransformerConfig(vocab_size=9, max_len=8, num_layers=1,
                                       num_heads=1, width=8)
  params = model_lib.Transformer(config).init(jax.random.key(0),
                                              jnp.zeros((1, 2), jnp.int32))
  params["params"]["score"]["kernel"] = 2.0 * jax.random.normal(
      jax.random.key(2), (8, 1))
  rm_config = reward_model.RMConfig(model=config, dropout=0.5,
                                    warmup_steps=0)
  opt_state = reward_model.optimizer(rm_config).init(params)
  step = jax.jit(functools.partial(reward_model.step, rm_config))
  tokens = jax.random.randint(jax.random.key(1), (4, 6), 0, 9)
  mask = jnp.ones((4, 6), bool)
  runs = [step(params, opt_state, tokens, mask, tokens[::-1], mask,
               jax.random.key(k)) for k in (7, 7, 8)]
  losses = [float(r[2]) for r in runs]
  assert abs(losses[0] - np.log(2)) > 0.05  # the rewards are not all 0
  for a, b in zip(jax.tree.leaves(runs[0][0]), jax.tree.leaves(runs[1][0])):
    np.testing.assert_array_equal(a, b)  # same key: bit for bit
  assert losses[0] == losses[1]
  assert abs(losses[0] - losses[2]) > 1e-3  # the key draws the masks
  no_dropout = reward_model.RMConfig(model=config, dropout=0.0,
                                     warmup_steps=0)
  plain = [float(reward_model.step(no_dropout, params, opt_state, tokens,
                                   mask, tokens[::-1], mask,
                                   jax.random.key(k))[2]) for k in (7, 8)]
  assert plain[0] == plain[1]  # without dropout the key changes nothing


def test_reward_model_recovers_a_known_linear_reward():
  # True reward: a fixed weight per token, summed over the sequence. Pairs
  # labelled by it; a held-out accuracy >= 0.9 means the ranking is learned.
  # 4,000 training pairs, 400 held out; with the default dropout (0.1)
  # measured 0.87 / 0.92 / 0.95 after epochs 1 / 2 / 3 (0.945 without).
  config = model_lib.TransformerConfig(vocab_size=16, max_len=8, num_layers=2,
                                       num_heads=2, width=32)
  rng = np.random.default_rng(0)
  weights = rng.normal(size=16)
  seqs = rng.integers(0, 16, size=(8800, 8))
  true = weights[seqs].sum(axis=1)
  a, b = seqs[:4400], seqs[4400:]
  a_better = true[:4400] > true[4400:]
  chosen = np.where(a_better[:, None], a, b)
  rejected = np.where(a_better[:, None], b, a)
  module = model_lib.Transformer(config)
  params = module.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
  rm_config = reward_model.RMConfig(model=config, learning_rate=1e-3,
                                    batch_size=50)
  opt_state = reward_model.optimizer(rm_config).init(params)
  step = jax.jit(functools.partial(reward_model.step, rm_config))
  mask = jnp.ones((50, 8), bool)
  for epoch in range(rm_config.epochs):
    for i in range(0, 4000, 50):
      params, opt_state, _, _ = step(
          params, opt_state, jnp.asarray(chosen[i:i + 50]), mask,
          jnp.asarray(rejected[i:i + 50]), mask,
          jax.random.key(epoch * 4000 + i))
  held = slice(4000, 4400)
  full = jnp.ones((400, 8), bool)
  r_c = reward_model.rewards(module.apply, params,
                             jnp.asarray(chosen[held]), full)
  r_r = reward_model.rewards(module.apply, params,
                             jnp.asarray(rejected[held]), full)
  accuracy = reward_model.accuracy(r_c, r_r)
  assert float(accuracy) >= 0.9, float(accuracy)


def test_annotators_score_with_their_own_ratings(tmp_path):
  # A two-word lexicon: rater j rates "good" j - 4 ... written out below.
  path = tmp_path / "lex.txt"
  good = list(range(-4, 6))  # ten ratings: -4..5
  path.write_text("good\t0.5\t2.9\t" + str(good) + "\n"
                  "bad\t-2.0\t0.0\t" + str([-2] * 10) + "\n"
                  "bad\t9\t0\t" + str([9] * 10) + "\n")  # repeat: ignored
  lex = annotators.load_lexicon(str(path))
  s = annotators.scores(lex, ["Good, good and BAD.", "nothing here"])
  raw = 2 * np.array(good, float) - 2  # two "good", one "bad"
  np.testing.assert_allclose(s[0], raw / np.sqrt(raw ** 2 + 15))
  np.testing.assert_allclose(s[1], 0)
  gold = annotators.gold_scores(lex, ["Good, good and BAD."])
  np.testing.assert_allclose(gold, (2 * 0.5 - 2) / np.sqrt(1 + 15))


def test_bradley_terry_sampling_frequency_and_agreement():
  rng = np.random.default_rng(0)
  n = 20000
  # σ(2 * (0.5 - 0)) = σ(1) = 0.731059
  picks = annotators.prefer_first(np.full(n, 0.5), np.zeros(n), 2.0, rng)
  assert abs(picks.mean() - 0.731059) < 0.01
  with pytest.raises(ValueError, match="beta"):
    annotators.prefer_first(np.zeros(2), np.zeros(2), 0.0, rng)
  labels = np.array([[1, 1, 0], [0, 0, 0]], bool)
  # Pairs (0,1) agree 2/2, (0,2) 1/2, (1,2) 1/2 -> mean 2/3.
  np.testing.assert_allclose(annotators.agreement_rate(labels), 2 / 3)


def test_real_lexicon_has_ten_raters_per_word():
  lex = annotators.load_lexicon()
  assert lex.ratings.shape[1] == 10 and len(lex.index) > 7000
  assert lex.ratings[lex.index["good"]].mean() > 1
  assert lex.ratings[lex.index["killed"]].mean() < -2


def test_preference_pairs_keep_the_prompt_response_boundary():
  """``from_ids``: prompts left-padded, responses right-padded, so each
  side's sequence is prompt ids then response ids with the padding
  outside them, as the sampler lays out its output."""
  from jaxrl_align.rlhf import pairs

  p = pairs.from_ids([[5, 6], [7]], [[1, 2, 3], [4]], [[8], [9, 9]], pad=0)
  np.testing.assert_array_equal(p.prompt, [[5, 6], [0, 7]])
  np.testing.assert_array_equal(p.chosen_mask, [[1, 1, 1], [1, 0, 0]])
  tokens, mask = p.sequence("rejected")
  np.testing.assert_array_equal(tokens, [[5, 6, 8, 0, 0], [0, 7, 9, 9, 0]])
  assert [np.asarray(t)[np.asarray(m)].tolist() for t, m in
          zip(tokens, mask)] == [[5, 6, 8], [7, 9, 9]]
  with pytest.raises(ValueError, match="one of each"):
    pairs.from_ids([[1]], [[1]], [], pad=0)
  with pytest.raises(ValueError, match="side"):
    p.sequence("prompt")
