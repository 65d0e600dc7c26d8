"""The RLHF transformer: masking, padding, cached generation, GPT-2 parity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_align.rlhf import generation
from jaxrl_align.rlhf import model as model_lib

CONFIG = model_lib.TransformerConfig(vocab_size=37, max_len=32, num_layers=2,
                                     num_heads=2, width=16)


@pytest.fixture(scope="module")
def net():
  module = model_lib.Transformer(CONFIG)
  params = module.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  # The score head starts at zero; give it weights so its outputs are tested.
  params["params"]["score"]["kernel"] = jax.random.normal(
      jax.random.key(1), (CONFIG.width, 1))
  return module, params


def random_tokens(key, shape):
  return jax.random.randint(key, shape, 1, CONFIG.vocab_size)


def test_config_rejects_bad_fields():
  with pytest.raises(ValueError, match="width"):
    model_lib.TransformerConfig(vocab_size=10, width=10, num_heads=3)
  with pytest.raises(ValueError, match="vocab_size"):
    model_lib.TransformerConfig(vocab_size=0)
  with pytest.raises(ValueError, match="dtype"):
    model_lib.TransformerConfig(vocab_size=10, dtype="int8")
  for rate in (-0.1, 1.0):
    with pytest.raises(ValueError, match="dropout"):
      model_lib.TransformerConfig(vocab_size=10, dropout=rate)


def test_causal_later_tokens_never_change_earlier_outputs(net):
  module, params = net
  tokens = random_tokens(jax.random.key(2), (3, 10))
  changed = tokens.at[:, 6:].set(random_tokens(jax.random.key(3), (3, 4)))
  apply = jax.jit(module.apply)
  logits, score, _ = apply(params, tokens)
  logits2, score2, _ = apply(params, changed)
  np.testing.assert_array_equal(logits[:, :6], logits2[:, :6])
  np.testing.assert_array_equal(score[:, :6], score2[:, :6])
  # ...and the later ones do change (the test can fail).
  assert np.abs(np.asarray(logits[:, 6:] - logits2[:, 6:])).max() > 1e-3


def test_left_padding_gives_the_unpadded_outputs(net):
  module, params = net
  tokens = random_tokens(jax.random.key(4), (2, 7))
  pad = 5
  padded = jnp.concatenate([jnp.zeros((2, pad), tokens.dtype), tokens], 1)
  mask = jnp.concatenate([jnp.zeros((2, pad), bool), jnp.ones((2, 7), bool)],
                         1)
  logits, score, _ = jax.jit(module.apply)(params, tokens)
  logits_p, score_p, _ = jax.jit(module.apply)(params, padded, mask)
  np.testing.assert_allclose(logits_p[:, pad:], logits, atol=1e-5)
  np.testing.assert_allclose(score_p[:, pad:], score, atol=1e-5)
  assert np.all(np.isfinite(np.asarray(logits_p)))


def test_dropout_only_when_asked_seeded_and_causal(net):
  _, params = net
  drop = model_lib.Transformer(
      model_lib.TransformerConfig(**{**CONFIG.__dict__, "dropout": 0.5}))
  tokens = random_tokens(jax.random.key(20), (2, 9))
  plain, _, _ = model_lib.Transformer(CONFIG).apply(params, tokens)
  # Deterministic (the default): the rate changes nothing.
  np.testing.assert_array_equal(drop.apply(params, tokens)[0], plain)

  @jax.jit
  def train_mode(tokens, key):
    return drop.apply(params, tokens, deterministic=False,
                      rngs={"dropout": key})[0]

  a = train_mode(tokens, jax.random.key(1))
  np.testing.assert_array_equal(a, train_mode(tokens, jax.random.key(1)))
  assert np.abs(np.asarray(a - plain)).max() > 1e-2
  assert np.abs(np.asarray(a - train_mode(tokens, jax.random.key(2)))
                ).max() > 1e-2
  # The masks depend on shapes and the key only: a later token still never
  # changes an earlier output.
  changed = tokens.at[:, 5:].set(random_tokens(jax.random.key(21), (2, 4)))
  np.testing.assert_array_equal(train_mode(changed, jax.random.key(1))[:, :5],
                                a[:, :5])


def test_position_ids_count_real_tokens_only():
  mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
  np.testing.assert_array_equal(model_lib.position_ids(mask),
                                [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])


def test_cache_equals_full_forward(net):
  # Feeding tokens one at a time through the cache gives the same logits as
  # one pass over the whole sequence.
  module, params = net
  tokens = random_tokens(jax.random.key(5), (2, 9))
  mask = jnp.ones((2, 9), bool).at[0, :3].set(False)
  full, _, _ = module.apply(params, tokens, mask)
  cache = model_lib.empty_cache(CONFIG, 2, 9)
  logits, _, cache = module.apply(params, tokens[:, :4], mask[:, :4],
                                  cache=cache)
  steps = [logits]
  for t in range(4, 9):
    logits, _, cache = module.apply(params, tokens[:, t:t + 1],
                                    mask[:, t:t + 1], cache=cache)
    steps.append(logits)
  stepped = jnp.concatenate(steps, axis=1)
  np.testing.assert_allclose(stepped[mask], full[mask], atol=1e-5)


def _generate(net, key, **kw):
  module, params = net
  prompt = random_tokens(jax.random.key(6), (4, 5))
  prompt_mask = jnp.ones((4, 5), bool).at[1, :2].set(False).at[3, :4].set(
      False)
  prompt = jnp.where(prompt_mask, prompt, 0)
  fn = jax.jit(lambda p, k: generation.generate(
      module.apply, p, CONFIG, prompt, prompt_mask, k, **kw))
  return fn(params, key), prompt, prompt_mask


def test_generation_log_probs_equal_uncached_scoring(net):
  module, params = net
  for top_k, top_p, temperature in ((0, 1.0, 1.0), (5, 1.0, 0.7),
                                    (0, 0.6, 1.3), (8, 0.8, 0.7)):
    gen, _, _ = _generate(net, jax.random.key(7), max_new_tokens=8,
                          temperature=temperature, top_k=top_k, top_p=top_p,
                          stop_token=3, pad_token=0)
    scored = generation.sequence_log_probs(
        module.apply, params, gen.tokens, gen.mask, 8,
        temperature=temperature, top_k=top_k, top_p=top_p)
    np.testing.assert_allclose(gen.log_probs, scored, atol=1e-5)
    assert np.all(np.asarray(gen.log_probs) <= 0)


def hf_top_p(logits, temperature, top_k, top_p):
  """float64 NumPy port of Hugging Face's warpers, applied in
  ``generate``'s order (transformers 4.x,
  ``src/transformers/generation/logits_process.py``): TemperatureLogitsWarper
  (``scores / temperature``), TopKLogitsWarper (remove ``scores <`` the k-th
  largest), TopPLogitsWarper (sort ascending, remove where the cumulative
  softmax ``<= 1 - top_p``, always keep the most likely)."""
  x = np.asarray(logits, np.float64) / temperature
  if top_k:
    kth = np.sort(x, -1)[..., -top_k][..., None]
    x = np.where(x < kth, -np.inf, x)
  order = np.argsort(x, -1)
  asc = np.take_along_axis(x, order, -1)
  p = np.exp(asc - asc.max(-1, keepdims=True))
  cum = np.cumsum(p / p.sum(-1, keepdims=True), -1)
  remove = cum <= 1 - top_p
  remove[..., -1] = False
  out = x.copy()
  np.put_along_axis(out, order, np.where(remove, -np.inf, asc), -1)
  return out


@pytest.mark.parametrize("top_k, top_p, temperature", [
    (0, 0.9, 1.0), (0, 0.5, 0.6), (0, 0.3, 2.0), (6, 0.7, 0.8), (0, 1e-3, 1.0)])
def test_top_p_keeps_the_nucleus_of_hugging_faces_warpers(top_k, top_p,
                                                          temperature):
  logits = 2.0 * jax.random.normal(jax.random.key(3), (64, 37))
  ours = jax.jit(lambda x: generation.sampling_logits(
      x, temperature, top_k, top_p))(logits)
  ref = hf_top_p(logits, temperature, top_k, top_p)
  np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(ref))
  live = np.isfinite(ref)
  np.testing.assert_allclose(np.asarray(ours)[live], ref[live], rtol=1e-6)
  # The nucleus depends on the temperature: applied after the truncation
  # (a wrong order), the kept sets differ.
  if temperature != 1.0 and top_p < 1.0:
    wrong = generation.sampling_logits(logits, 1.0, top_k, top_p)
    assert not np.array_equal(np.isfinite(wrong), live)


def test_sampling_logits_keep_the_sampled_token():
  logits = jnp.asarray([[3.0, 2.0, 1.0, -4.0]])
  cut = generation.sampling_logits(logits, 1.0, 0, 0.5)
  assert np.isfinite(np.asarray(cut)).tolist() == [[True, False, False, False]]
  kept = generation.sampling_logits(logits, 1.0, 0, 0.5, keep=jnp.asarray([3]))
  assert np.isfinite(np.asarray(kept)).tolist() == [[True, False, False, True]]


def test_stop_token_pads_the_rest(net):
  # Stop token 3 with a vocabulary of 37: over 4 rows x 24 steps some row
  # stops (checked), and after it: padding, mask false, log-prob 0.
  gen, _, _ = _generate(net, jax.random.key(8), max_new_tokens=24,
                        stop_token=3, pad_token=0, temperature=3.0)
  response = np.asarray(gen.response)
  live = np.asarray(gen.response_mask)
  stopped = 0
  for row, alive in zip(response, live):
    hits = np.flatnonzero(row == 3)
    if hits.size:
      stopped += 1
      first = hits[0]
      assert alive[:first + 1].all() and not alive[first + 1:].any()
      assert (row[first + 1:] == 0).all()
    else:
      assert alive.all()
  assert stopped >= 1
  assert np.all(np.asarray(gen.log_probs)[~live] == 0)


def test_tiny_temperature_equals_greedy(net):
  greedy, _, _ = _generate(net, jax.random.key(9), max_new_tokens=6,
                           greedy=True)
  cold, _, _ = _generate(net, jax.random.key(10), max_new_tokens=6,
                         temperature=1e-6)
  np.testing.assert_array_equal(greedy.response, cold.response)


def test_generation_vmaps_and_is_reproducible(net):
  module, params = net
  prompt = random_tokens(jax.random.key(11), (2, 4))
  mask = jnp.ones((2, 4), bool)

  def one(key):
    return generation.generate(module.apply, params, CONFIG, prompt, mask,
                               key, max_new_tokens=5).response

  keys = jax.random.split(jax.random.key(12), 3)
  batched = jax.jit(jax.vmap(one))(keys)
  for i in range(3):
    np.testing.assert_array_equal(batched[i], jax.jit(one)(keys[i]))
  np.testing.assert_array_equal(jax.jit(one)(keys[0]), jax.jit(one)(keys[0]))


@pytest.mark.parametrize("kwargs, field", [
    (dict(max_new_tokens=5, prompt_len=30), "max_len"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=2, top_k=-1), "top_k"),
    (dict(max_new_tokens=2, top_k=99), "top_k"),
    (dict(max_new_tokens=2, temperature=0.0), "temperature"),
    (dict(max_new_tokens=2, top_p=0.0), "top_p"),
    (dict(max_new_tokens=2, top_p=1.5), "top_p"),
])
def test_generation_refuses_bad_arguments(kwargs, field):
  # Refused before tracing: params=None would fail inside the model.
  module = model_lib.Transformer(CONFIG)
  p = kwargs.pop("prompt_len", 4)
  with pytest.raises(ValueError, match=field):
    generation.generate(module.apply, None, CONFIG, jnp.zeros((1, p), int),
                        jnp.ones((1, p), bool), jax.random.key(0), **kwargs)


def test_gpt2_checkpoint_gives_the_same_logits(tmp_path):
  import torch  # the test extra pins torch==2.13.0 (CPU)
  import transformers

  from jaxrl_align.host.rlhf import gpt2

  torch.manual_seed(0)
  hf_config = transformers.GPT2Config(vocab_size=97, n_positions=40, n_embd=32,
                                      n_layer=3, n_head=4)
  hf_model = transformers.GPT2LMHeadModel(hf_config).eval()
  hf_model.save_pretrained(tmp_path, safe_serialization=True)
  config, params = gpt2.load(str(tmp_path))
  assert (config.num_layers, config.num_heads, config.width) == (3, 4, 32)
  tokens = np.random.default_rng(0).integers(0, 97, size=(3, 40))
  with torch.no_grad():
    expected = hf_model(torch.tensor(tokens)).logits.numpy()
  logits, _, _ = jax.jit(model_lib.Transformer(config).apply)(
      params, jnp.asarray(tokens))
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
  # Left padding, as GPT-2 needs an attention mask and position ids for it.
  mask = np.ones((3, 40), bool)
  mask[0, :7] = False
  with torch.no_grad():
    positions = np.clip(np.cumsum(mask, 1) - 1, 0, None)
    expected = hf_model(torch.tensor(tokens),
                        attention_mask=torch.tensor(mask.astype(np.int64)),
                        position_ids=torch.tensor(positions)).logits.numpy()
  logits, _, _ = model_lib.Transformer(config).apply(
      params, jnp.asarray(tokens), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(logits)[mask], expected[mask],
                             atol=1e-4, rtol=1e-4)


def test_export_to_gpt2_gives_the_same_logits_and_score(net):
  """Ours exported (``gpt2.state_dict``) into ``GPT2LMHeadModel`` and, with
  the scalar head, ``GPT2ForSequenceClassification``: the same logits and
  the same score at the last real token; back through ``gpt2.load``, the
  same parameters."""
  import safetensors.numpy
  import torch
  import transformers

  from jaxrl_align.host.rlhf import gpt2

  module, params = net
  tokens = np.random.default_rng(1).integers(2, CONFIG.vocab_size, (3, 20))
  hf_config = transformers.GPT2Config(**gpt2.config_to_hf(CONFIG),
                                      num_labels=1, pad_token_id=1)
  lm = transformers.GPT2LMHeadModel(hf_config).eval()
  missing, unexpected = lm.load_state_dict(
      {k: torch.tensor(v) for k, v in gpt2.state_dict(CONFIG, params).items()},
      strict=False)
  assert not unexpected and all("lm_head" in k or "attn.bias" in k
                                for k in missing), (missing, unexpected)
  lm.tie_weights()
  logits, scalar, _ = module.apply(params, jnp.asarray(tokens))
  with torch.no_grad():
    expected = lm(torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
  head = jax.tree.map(lambda x: x, params)
  head["params"]["score"]["bias"] = jnp.zeros_like(
      head["params"]["score"]["bias"])
  scorer = transformers.GPT2ForSequenceClassification(hf_config).eval()
  scorer.load_state_dict({k: torch.tensor(v) for k, v in gpt2.state_dict(
      CONFIG, head, score=True).items()}, strict=False)
  _, scalar, _ = module.apply(head, jnp.asarray(tokens))
  with torch.no_grad():
    score = scorer(torch.tensor(tokens)).logits.numpy()[:, 0]
  np.testing.assert_allclose(np.asarray(scalar)[:, -1], score, atol=1e-4,
                             rtol=1e-4)
  with pytest.raises(ValueError, match="bias"):
    gpt2.state_dict(CONFIG, jax.tree.map(lambda x: x + 1.0, params),
                    score=True)
  import json
  import tempfile
  with tempfile.TemporaryDirectory() as path:
    safetensors.numpy.save_file(gpt2.state_dict(CONFIG, params),
                                f"{path}/model.safetensors")
    with open(f"{path}/config.json", "w") as f:
      json.dump(gpt2.config_to_hf(CONFIG), f)
    config, back = gpt2.load(path)
  assert config == CONFIG
  for name in ("wte", "h_0", "ln_f"):
    jax.tree.map(np.testing.assert_array_equal, back["params"][name],
                 params["params"][name])


# ------------------------------------------------------ mixed precision


def _bf16(x):
  """float64 of ``x`` rounded to bfloat16 (what the products read)."""
  return np.asarray(jnp.asarray(x, jnp.float32).astype(jnp.bfloat16),
                    np.float64)


@pytest.mark.parametrize("spec, a_shape, b_shape", [
    ("aby,yz->abz", (3, 5, 16), (16, 7)),        # a dense layer
    ("btd,vd->btv", (2, 4, 16), (11, 16))])      # the tied head
def test_mixed_einsum_rounds_operands_and_accumulates_in_float32(
    spec, a_shape, b_shape):
  """Forward and both gradients equal float64 products of the operands
  (and the cotangent) rounded to bfloat16, to float32 accumulation
  (relative 1e-5 of the largest entry), under jit and vmap. Wrong variants
  fail: an output rounded to bfloat16, and float32 gradients."""
  a = jax.random.normal(jax.random.key(0), a_shape)
  b = jax.random.normal(jax.random.key(1), b_shape)
  g = jax.random.normal(jax.random.key(2), jnp.einsum(spec, a, b).shape)
  x, rest = spec.split(",")
  y, z = rest.split("->")
  want = np.einsum(spec, _bf16(a), _bf16(b))
  want_da = np.einsum(f"{z},{y}->{x}", _bf16(g), _bf16(b))
  want_db = np.einsum(f"{x},{z}->{y}", _bf16(a), _bf16(g))

  def close(got, ref):
    return np.max(np.abs(np.asarray(got) - ref)) <= 1e-5 * np.max(
        np.abs(ref))

  f = lambda a, b: model_lib.mixed_einsum(spec, "bfloat16", a, b)  # noqa
  out, vjp = jax.vjp(jax.jit(f), a, b)
  da, db = vjp(g)
  assert out.dtype == da.dtype == db.dtype == jnp.float32
  assert close(out, want) and close(da, want_da) and close(db, want_db)
  batched = jax.vmap(f, in_axes=(0, None))(a[None], b)[0]
  assert close(batched, want)
  # Wrong variants: the output in bfloat16; the gradients in float32.
  rounded = jnp.einsum(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
  assert not close(rounded.astype(jnp.float32), want)
  full = jax.vjp(lambda a, b: jnp.einsum(spec, a, b), a, b)[1](g)
  assert not close(full[0], want_da)


def test_mixed_precision_model_stays_near_float32(net):
  """The whole transformer with ``matmul_dtype="bfloat16"``: the
  language-model loss within 1e-4 (relative; measured 3.9e-5 here, 1.5e-5
  at the default model's size) and its gradient within 2% (relative l2
  over every parameter; 0.7% at the default size) of float32's; the attention's two products stay
  float32 (XLA's CPU runtime has no bfloat16 x bfloat16 -> float32 batched
  product), and float16 or a non-float32 ``dtype`` with it are refused."""
  import dataclasses

  _, params = net
  mixed = dataclasses.replace(CONFIG, matmul_dtype="bfloat16")
  tokens = random_tokens(jax.random.key(3), (4, 12))

  def loss(config):
    def f(p):
      logits, scalar, _ = model_lib.Transformer(config).apply(p, tokens)
      log_p = jax.nn.log_softmax(logits[:, :-1])
      del scalar  # the score head is float32 (and random here)
      return -jnp.mean(jnp.take_along_axis(log_p, tokens[:, 1:, None], -1))
    return jax.jit(jax.value_and_grad(f))

  (l32, g32), (l16, g16) = loss(CONFIG)(params), loss(mixed)(params)
  assert l16 != l32 and abs(float(l16 - l32)) <= 1e-4 * abs(float(l32))
  diff = sum(float(jnp.sum((a - b) ** 2)) for a, b in
             zip(jax.tree.leaves(g32), jax.tree.leaves(g16)))
  norm = sum(float(jnp.sum(a ** 2)) for a in jax.tree.leaves(g32))
  assert 0 < (diff / norm) ** 0.5 <= 0.02, (diff / norm) ** 0.5
  with pytest.raises(ValueError, match="matmul_dtype"):
    dataclasses.replace(CONFIG, matmul_dtype="float16")
  with pytest.raises(ValueError, match="matmul_dtype"):
    dataclasses.replace(CONFIG, matmul_dtype="bfloat16", dtype="bfloat16")
