"""What the RLHF run commands share: JSON output, split settings, reading
an ``sft`` run back."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_align import _checks
from jaxrl_align import checkpoints
from jaxrl_align.rlhf import corpus
from jaxrl_align.rlhf import model as model_lib


def check_split_and_seed(settings) -> None:
  _checks.check_scalar_in_range("valid_fraction", settings.valid_fraction, 0,
                                1, low_inclusive=False, high_inclusive=False)
  _checks.check_positive_int("seed", settings.seed, allow_zero=True)


def mean_or_none(x) -> float | None:
  """Mean of a possibly empty array (None when empty: JSON has no NaN)."""
  x = np.asarray(x, np.float64)
  return float(x.mean()) if x.size else None


def write_json(path: str, value: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)


def load_sft(run_dir: str):
  """``(model_config, params, tokenizer)`` of an ``sft`` run."""
  with open(os.path.join(run_dir, "config.json")) as f:
    stored = json.load(f)
  model_config = model_lib.TransformerConfig(**stored["model"])
  tokenizer = corpus.load_tokenizer(os.path.join(run_dir, "tokenizer.json"))
  template = model_lib.Transformer(model_config).init(
      jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
  store = checkpoints.Checkpoints(os.path.join(run_dir, "model"), keep=1)
  _, params = store.restore(template)
  store.close()
  return model_config, params, tokenizer
