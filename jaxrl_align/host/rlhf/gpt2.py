"""Load a Hugging Face GPT-2 checkpoint into :class:`~.model.Transformer`,
and export one the other way.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (what
``GPT2LMHeadModel.save_pretrained`` writes). GPT-2's ``Conv1D`` stores
weights as ``[in, out]``, which is Flax's ``Dense`` kernel layout, so the
tensors are only renamed. Nothing is downloaded: point it at a directory.
:func:`config_to_hf` and :func:`state_dict` go back, to a
``GPT2LMHeadModel`` or (with the scalar head) a
``GPT2ForSequenceClassification`` with one label.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from jaxrl_align.rlhf import model as model_lib

_SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")


def config_from_hf(hf: dict[str, Any]) -> model_lib.TransformerConfig:
  """A :class:`TransformerConfig` from a GPT-2 ``config.json`` dict."""
  activation = hf.get("activation_function", "gelu_new")
  if activation not in _SUPPORTED_ACTIVATIONS:
    raise ValueError(f"GPT-2 activation_function {activation!r} is not "
                     f"supported (only {', '.join(_SUPPORTED_ACTIVATIONS)}).")
  width = hf["n_embd"]
  inner = hf.get("n_inner") or 4 * width
  if inner % width:
    raise ValueError(f"GPT-2 n_inner ({inner}) must be a multiple of n_embd "
                     f"({width}).")
  return model_lib.TransformerConfig(
      vocab_size=hf["vocab_size"], max_len=hf["n_positions"],
      num_layers=hf["n_layer"], num_heads=hf["n_head"], width=width,
      mlp_ratio=inner // width,
      layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)))


def load(path: str):
  """``(config, params)`` from a GPT-2 checkpoint directory.

  The scalar head, which GPT-2 does not have, starts at zero.

  Raises:
    FileNotFoundError: ``config.json`` or ``model.safetensors`` is missing.
    ValueError: the checkpoint is not GPT-2 shaped.
  """
  from safetensors.numpy import load_file  # optional dependency (rlhf extra)

  with open(os.path.join(path, "config.json")) as f:
    config = config_from_hf(json.load(f))
  tensors = load_file(os.path.join(path, "model.safetensors"))
  # GPT2LMHeadModel prefixes "transformer."; GPT2Model does not.
  tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}

  def take(name, shape):
    if name not in tensors:
      raise ValueError(f"{path}: tensor {name!r} missing from the checkpoint.")
    value = np.asarray(tensors[name], np.float32)
    if value.shape != shape:
      raise ValueError(f"{path}: tensor {name!r} has shape {value.shape}, "
                       f"expected {shape}.")
    return value

  d, v = config.width, config.vocab_size
  hidden = config.mlp_ratio * d

  def dense(prefix, fan_in, fan_out):
    return {"kernel": take(f"{prefix}.weight", (fan_in, fan_out)),
            "bias": take(f"{prefix}.bias", (fan_out,))}

  def norm(prefix):
    return {"scale": take(f"{prefix}.weight", (d,)),
            "bias": take(f"{prefix}.bias", (d,))}

  params = {
      "wte": {"embedding": take("wte.weight", (v, d))},
      "wpe": {"embedding": take("wpe.weight", (config.max_len, d))},
      "ln_f": norm("ln_f"),
      "score": {"kernel": np.zeros((d, 1), np.float32),
                "bias": np.zeros((1,), np.float32)},
  }
  for i in range(config.num_layers):
    h = f"h.{i}"
    params[f"h_{i}"] = {
        "ln_1": norm(f"{h}.ln_1"),
        "ln_2": norm(f"{h}.ln_2"),
        "attn": {"c_attn": dense(f"{h}.attn.c_attn", d, 3 * d),
                 "c_proj": dense(f"{h}.attn.c_proj", d, d)},
        "c_fc": dense(f"{h}.mlp.c_fc", d, hidden),
        "c_proj": dense(f"{h}.mlp.c_proj", hidden, d),
    }
  return config, {"params": params}


def config_to_hf(config: model_lib.TransformerConfig) -> dict[str, Any]:
  """The GPT-2 ``config.json`` dict of a :class:`TransformerConfig` (no
  dropout: ours is off unless asked for)."""
  return {"model_type": "gpt2", "vocab_size": config.vocab_size,
          "n_positions": config.max_len, "n_layer": config.num_layers,
          "n_head": config.num_heads, "n_embd": config.width,
          "n_inner": config.mlp_ratio * config.width,
          "activation_function": "gelu_new",
          "layer_norm_epsilon": config.layer_norm_eps,
          "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
          "tie_word_embeddings": True}


def state_dict(config: model_lib.TransformerConfig, params, *,
               score: bool = False) -> dict[str, np.ndarray]:
  """Hugging Face GPT-2 tensors (``transformer.``-prefixed names, float32)
  of our parameters, the inverse of :func:`load`'s renaming.

  ``lm_head.weight`` is left out (GPT-2 ties it to ``wte``). With ``score``,
  the scalar head becomes ``score.weight`` ``[1, width]``, the head of a
  ``GPT2ForSequenceClassification`` with ``num_labels=1``, which has no
  bias.

  Raises:
    ValueError: ``score`` and the scalar head's bias is not zero.
  """
  p = params["params"] if "params" in params else params
  out = {"transformer.wte.weight": p["wte"]["embedding"],
         "transformer.wpe.weight": p["wpe"]["embedding"],
         "transformer.ln_f.weight": p["ln_f"]["scale"],
         "transformer.ln_f.bias": p["ln_f"]["bias"]}
  for i in range(config.num_layers):
    h, ours = f"transformer.h.{i}", p[f"h_{i}"]
    pairs = (("ln_1", ours["ln_1"]), ("ln_2", ours["ln_2"]),
             ("attn.c_attn", ours["attn"]["c_attn"]),
             ("attn.c_proj", ours["attn"]["c_proj"]),
             ("mlp.c_fc", ours["c_fc"]), ("mlp.c_proj", ours["c_proj"]))
    for name, leaf in pairs:
      out[f"{h}.{name}.weight"] = leaf["scale" if "scale" in leaf else
                                       "kernel"]
      out[f"{h}.{name}.bias"] = leaf["bias"]
  if score:
    if np.any(np.asarray(p["score"]["bias"]) != 0):
      raise ValueError("GPT2ForSequenceClassification's score head has no "
                       "bias; ours is not zero.")
    out["score.weight"] = np.asarray(p["score"]["kernel"]).T
  return {k: np.array(v, np.float32) for k, v in out.items()}
