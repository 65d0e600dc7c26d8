"""Load a Hugging Face GPT-2 checkpoint into :class:`~.model.Transformer`.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (what
``GPT2LMHeadModel.save_pretrained`` writes). GPT-2's ``Conv1D`` stores
weights as ``[in, out]``, which is Flax's ``Dense`` kernel layout, so the
tensors are only renamed. Nothing is downloaded: point it at a directory.
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
