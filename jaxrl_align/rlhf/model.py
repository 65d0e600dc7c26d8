"""A small decoder-only transformer (GPT-2 layout) for RLHF, in Flax linen.

One module serves as policy, frozen reference, value model and reward model:
``apply`` returns next-token logits and a scalar per position (the value or
reward head). Batches may be left-padded: ``mask`` marks real tokens, position
ids count real tokens only, and no query attends to a padding key, so the
real tokens' outputs equal those of the unpadded sequence.

The layout is GPT-2's (Radford et al. 2019): learned token and position
embeddings; pre-norm blocks ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``; a
fused ``c_attn`` projection to queries, keys and values; a GELU (tanh
approximation) MLP four times wider; a final layer norm; the output
projection tied to the token embedding. Parameter names follow the Hugging
Face checkpoint, so :mod:`jaxrl_align.host.rlhf.gpt2` loads one by renaming only.

Incremental decoding keeps a key-value cache as plain arrays
(:class:`KVCache`), passed in and returned, so generation is a pure
``lax.scan`` that ``jit`` and ``vmap`` take as they are.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrl_align import _checks

Array = jax.Array

_MASKED = -1e9  # finite, so a row with no visible key never gives NaN


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape of the transformer (all fields fix shapes: all static).

  Attributes:
    vocab_size: tokens in the vocabulary.
    max_len: longest sequence (learned positions).
    num_layers: transformer blocks.
    num_heads: attention heads (``width`` must divide by it).
    width: model width ``d``.
    mlp_ratio: MLP hidden width over ``width``.
    layer_norm_eps: layer-norm epsilon (GPT-2: 1e-5).
    dropout: dropout rate where GPT-2 has it (embeddings, attention
      weights, each residual branch), applied only when the model is called
      with ``deterministic=False``; the rate does not change the parameters.
    dtype: computation dtype (of everything: activations, layer norms).
    matmul_dtype: the dtype of the matrix products' operands (the dense
      layers, the attention's two products, the language-model head):
      ``"bfloat16"`` casts both operands to bfloat16 and accumulates and
      returns float32 (mixed precision: parameters, activations, layer
      norms and softmax stay in ``dtype``); ``"float32"`` (default): no
      cast. Only with ``dtype="float32"``.
  """
  vocab_size: int
  max_len: int = 128
  num_layers: int = 4
  num_heads: int = 4
  width: int = 128
  mlp_ratio: int = 4
  layer_norm_eps: float = 1e-5
  dropout: float = 0.0
  dtype: str = "float32"
  matmul_dtype: str = "float32"

  def __post_init__(self):
    for name in ("vocab_size", "max_len", "num_layers", "num_heads", "width",
                 "mlp_ratio"):
      _checks.check_positive_int(f"TransformerConfig.{name}",
                                 getattr(self, name))
    if self.width % self.num_heads:
      raise ValueError(f"TransformerConfig.width ({self.width}) must be "
                       f"divisible by num_heads ({self.num_heads}).")
    _checks.check_scalar_in_range("TransformerConfig.layer_norm_eps",
                                  self.layer_norm_eps, 0, 1,
                                  low_inclusive=False)
    _checks.check_scalar_in_range("TransformerConfig.dropout", self.dropout,
                                  0, 1, high_inclusive=False)
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ValueError(f"TransformerConfig.dtype must be one of float32, "
                       f"bfloat16, float16, got {self.dtype!r}.")
    if self.matmul_dtype not in MATMUL_DTYPES:
      raise ValueError(f"TransformerConfig.matmul_dtype must be one of "
                       f"{', '.join(MATMUL_DTYPES)}, got "
                       f"{self.matmul_dtype!r}.")
    if self.matmul_dtype != "float32" and self.dtype != "float32":
      raise ValueError("TransformerConfig.matmul_dtype other than float32 "
                       "needs dtype float32 (mixed precision).")

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads


class KVCache(NamedTuple):
  """Keys and values of every layer for positions already processed.

  Attributes:
    key: ``[layers, B, S, heads, head_dim]``.
    value: ``[layers, B, S, heads, head_dim]``.
    mask: ``[B, S]`` bool, which cache slots hold a real (non-pad) token.
    position: ``[B]`` int32, position id of the next real token.
    length: ``[]`` int32, slots filled so far (the same for every row).
  """
  key: Array
  value: Array
  mask: Array
  position: Array
  length: Array


def empty_cache(config: TransformerConfig, batch: int, size: int) -> KVCache:
  """A cache with room for ``size`` tokens per row, all empty."""
  shape = (config.num_layers, batch, size, config.num_heads, config.head_dim)
  dtype = jnp.dtype(config.dtype)
  return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype),
                 jnp.zeros((batch, size), bool), jnp.zeros((batch,), jnp.int32),
                 jnp.zeros((), jnp.int32))


def position_ids(mask: Array, start: Array | None = None) -> Array:
  """Position of each token counting real tokens only: ``[B, T]`` int32.

  ``position[b, t] = start[b] + (number of real tokens before t in row b)``;
  pad tokens get the position of the next real token (they are never
  attended to, so any valid id works).
  """
  before = jnp.cumsum(mask, axis=-1, dtype=jnp.int32) - mask.astype(jnp.int32)
  if start is not None:
    before = before + start[:, None]
  return before


MATMUL_DTYPES = ("float32", "bfloat16")


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def mixed_einsum(spec: str, low: str, a: Array, b: Array) -> Array:
  """``einsum(spec, a, b)`` on ``low``-precision operands, accumulated and
  returned in float32; its gradients are products of ``low`` operands too
  (the cotangent cast to ``low``), accumulated in float32. ``spec`` is
  ``"X,Y->Z"`` with every index of X and of Y also in Z or in the other
  operand (a matrix product, batched or not)."""
  return jnp.einsum(spec, a.astype(low), b.astype(low),
                    preferred_element_type=jnp.float32)


def _mixed_fwd(spec, low, a, b):
  a_low, b_low = a.astype(low), b.astype(low)
  out = jnp.einsum(spec, a_low, b_low, preferred_element_type=jnp.float32)
  # dtype objects cannot be residuals: 0-d arrays of the operands' dtypes
  return out, (a_low, b_low, jnp.zeros((), a.dtype), jnp.zeros((), b.dtype))


def _mixed_bwd(spec, low, saved, g):
  a_low, b_low, a_zero, b_zero = saved
  x, rest = spec.split(",")
  y, z = rest.split("->")
  g = g.astype(low)
  da = jnp.einsum(f"{z},{y}->{x}", g, b_low,
                  preferred_element_type=jnp.float32)
  db = jnp.einsum(f"{x},{z}->{y}", a_low, g,
                  preferred_element_type=jnp.float32)
  return da.astype(a_zero.dtype), db.astype(b_zero.dtype)


mixed_einsum.defvjp(_mixed_fwd, _mixed_bwd)


def _dot_general(config: TransformerConfig):
  """The dense layers' ``dot_general`` for ``config.matmul_dtype`` (None:
  Flax's own): ``x[..., K] @ W[K, N]`` by :func:`mixed_einsum`."""
  if config.matmul_dtype == "float32":
    return None

  def dot_general(lhs, rhs, dimension_numbers, precision=None, **unused):
    del precision, unused  # the result is float32 whatever is asked
    n = lhs.ndim
    if (dimension_numbers != (((n - 1,), (0,)), ((), ()))
        or rhs.ndim != 2 or n > 24):
      raise NotImplementedError(f"a dense layer's product, not "
                                f"{dimension_numbers}")
    letters = "abcdefghijklmnopqrstuvwx"[:n - 1]
    return mixed_einsum(f"{letters}y,yz->{letters}z", config.matmul_dtype,
                         lhs, rhs)
  return dot_general


def _einsum(config: TransformerConfig, spec: str, a: Array, b: Array
            ) -> Array:
  """``jnp.einsum(spec, a, b)``, its operands in ``config.matmul_dtype``
  (:func:`mixed_einsum`; as it is in float32)."""
  if config.matmul_dtype == "float32":
    return jnp.einsum(spec, a, b)
  return mixed_einsum(spec, config.matmul_dtype, a, b)


class _Attention(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x, visible, past_k=None, past_v=None,
               deterministic=True):
    """``x [B, T, d]``, ``visible [B, T, S]`` bool over the keys (past keys
    first, then these T); returns ``(y [B, T, d], k, v [B, T, H, Dh])``."""
    c = self.config
    dtype = jnp.dtype(c.dtype)
    b, t, _ = x.shape
    dense = functools.partial(nn.Dense, dtype=dtype,
                              dot_general=_dot_general(c))
    qkv = dense(3 * c.width, name="c_attn")(x)
    q, k, v = jnp.split(qkv.reshape(b, t, 3, c.num_heads, c.head_dim), 3,
                        axis=2)
    q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]
    keys = k if past_k is None else jnp.concatenate([past_k, k], axis=1)
    values = v if past_v is None else jnp.concatenate([past_v, v], axis=1)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, keys) / jnp.sqrt(
        jnp.asarray(c.head_dim, dtype))
    scores = jnp.where(visible[:, None], scores.astype(jnp.float32), _MASKED)
    weights = jax.nn.softmax(scores, axis=-1).astype(dtype)
    weights = nn.Dropout(c.dropout)(weights, deterministic)
    y = jnp.einsum("bhqk,bkhd->bqhd", weights, values).reshape(b, t, c.width)
    return dense(c.width, name="c_proj")(y), k, v


class _Block(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x, visible, past_k=None, past_v=None,
               deterministic=True):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    h, k, v = _Attention(c, name="attn")(
        nn.LayerNorm(c.layer_norm_eps, dtype=dtype, name="ln_1")(x), visible,
        past_k, past_v, deterministic)
    x = x + nn.Dropout(c.dropout)(h, deterministic)
    h = nn.LayerNorm(c.layer_norm_eps, dtype=dtype, name="ln_2")(x)
    dense = functools.partial(nn.Dense, dtype=dtype,
                              dot_general=_dot_general(c))
    h = dense(c.mlp_ratio * c.width, name="c_fc")(h)
    h = dense(c.width, name="c_proj")(nn.gelu(h, approximate=True))
    return x + nn.Dropout(c.dropout)(h, deterministic), k, v


class Transformer(nn.Module):
  """Decoder-only transformer with a language-model head and a scalar head.

  ``apply(params, tokens, mask)`` runs a whole ``[B, T]`` batch (no cache);
  ``apply(params, tokens, mask, cache=cache)`` appends ``T`` tokens to a
  :class:`KVCache` and attends to everything in it.
  """
  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens: Array, mask: Array | None = None,
               cache: KVCache | None = None, *, deterministic: bool = True):
    """Logits and scalars for each position.

    Args:
      tokens: ``[B, T]`` int token ids.
      mask: ``[B, T]`` bool, real tokens (default: all real). Left padding
        is the supported layout for generation; any layout is correct for
        scoring.
      cache: tokens already processed (their keys and values); the new
        tokens follow them.
      deterministic: ``False`` applies dropout (``config.dropout``), which
        then needs ``rngs={"dropout": key}`` in ``apply``.

    Returns:
      ``(logits [B, T, vocab] float32, scalar [B, T] float32, cache)``;
      ``cache`` is the input cache with these tokens appended (``None`` when
      none was given).
    """
    c = self.config
    dtype = jnp.dtype(c.dtype)
    b, t = tokens.shape
    if mask is None:
      mask = jnp.ones((b, t), bool)
    mask = mask.astype(bool)
    causal = jnp.tril(jnp.ones((t, t), bool))
    if cache is None:
      positions = position_ids(mask)
      visible = causal[None] & mask[:, None, :]
    else:
      positions = position_ids(mask, cache.position)
      size = cache.mask.shape[1]
      # Only the filled slots are read; the new tokens go at `length`.
      slot = jnp.arange(size)
      past_visible = cache.mask & (slot[None] < cache.length)
      visible = jnp.concatenate(
          [jnp.broadcast_to(past_visible[:, None, :], (b, t, size)),
           causal[None] & mask[:, None, :]], axis=-1)
    wte = nn.Embed(c.vocab_size, c.width, dtype=dtype, name="wte")
    wpe = nn.Embed(c.max_len, c.width, dtype=dtype, name="wpe")
    x = wte(tokens) + wpe(jnp.minimum(positions, c.max_len - 1))
    x = nn.Dropout(c.dropout)(x, deterministic)
    new_k, new_v = [], []
    for i in range(c.num_layers):
      past_k = None if cache is None else cache.key[i]
      past_v = None if cache is None else cache.value[i]
      x, k, v = _Block(c, name=f"h_{i}")(x, visible, past_k, past_v,
                                         deterministic)
      new_k.append(k)
      new_v.append(v)
    x = nn.LayerNorm(c.layer_norm_eps, dtype=dtype, name="ln_f")(x)
    if c.matmul_dtype == "float32":
      logits = wte.attend(x).astype(jnp.float32)
    else:  # the tied head, its operands in matmul_dtype
      logits = _einsum(c, "btd,vd->btv", x, wte.embedding)
    scalar = nn.Dense(1, dtype=dtype, name="score",
                      kernel_init=nn.initializers.zeros)(x)[..., 0]
    if cache is None:
      return logits, scalar.astype(jnp.float32), None
    new_cache = _append(cache, jnp.stack(new_k), jnp.stack(new_v), mask)
    return logits, scalar.astype(jnp.float32), new_cache


def _append(cache: KVCache, k: Array, v: Array, mask: Array) -> KVCache:
  """Writes ``T`` new slots at ``cache.length``."""
  t = mask.shape[1]
  start = cache.length
  key = jax.lax.dynamic_update_slice_in_dim(cache.key, k.astype(cache.key.dtype),
                                            start, axis=2)
  value = jax.lax.dynamic_update_slice_in_dim(
      cache.value, v.astype(cache.value.dtype), start, axis=2)
  cmask = jax.lax.dynamic_update_slice_in_dim(cache.mask, mask, start, axis=1)
  position = cache.position + jnp.sum(mask, axis=1, dtype=jnp.int32)
  return KVCache(key, value, cmask, position, start + t)
