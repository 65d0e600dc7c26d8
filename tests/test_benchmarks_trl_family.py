"""benchmarks/rlhf_trl_family.py without training: TRL 1.16.0's GRPO, RLOO
and DPO configs built from ours hold the same settings, settings TRL cannot
express are refused, and TRL's tokenizer reads our token ids back from the
text the script hands it."""

import os
import sys

import numpy as np
import pytest

pytest.importorskip("trl")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..",
                                "benchmarks"))
import rlhf_trl_family as bench  # noqa: E402
import trl_common  # noqa: E402
from jaxrl_align.rlhf import model as model_lib  # noqa: E402


@pytest.fixture(scope="module")
def args():
  return bench.parse_args(["--size", "small", "--epochs", "2"])


@pytest.fixture(scope="module")
def model(args):
  return model_lib.TransformerConfig(
      vocab_size=args.vocab, max_len=args.max_len, num_layers=args.layers,
      num_heads=args.heads, width=args.width)


@pytest.mark.parametrize("method", ["grpo", "rloo", "dpo"])
def test_trl_config_holds_our_settings(method, args, model, tmp_path):
  ours = bench.our_config(method, args, model, epochs=2)
  theirs = bench.trl_config(method, ours, args, str(tmp_path))
  pairs = bench.setting_pairs(method, ours, theirs)
  assert {k: a for k, (a, b) in pairs.items() if a != b} == {}
  if method == "dpo":
    assert theirs.max_steps == args.warmup + args.iterations
  else:  # one of our iterations is `epochs` of TRL's optimizer steps
    assert theirs.max_steps == ours.iterations * 2
    assert ours.batch_size == args.prompts * args.group


def test_settings_trl_lacks_are_refused(args, model, tmp_path):
  rloo = bench.our_config("rloo", args, model).replace(ratio="token")
  with pytest.raises(ValueError, match="sequence ratios"):
    bench.trl_config("rloo", rloo, args, str(tmp_path))
  grpo = bench.our_config("grpo", args, model).replace(kl_in="reward")
  with pytest.raises(ValueError, match="in the loss only"):
    bench.trl_config("grpo", grpo, args, str(tmp_path))


def test_text_round_trip_gives_our_ids(args):
  tok = trl_common.tokenizer(args.vocab)
  rows = np.random.default_rng(0).integers(0, args.vocab, (3, 7))
  texts = bench._text(tok, rows)
  assert tok(texts)["input_ids"] == rows.tolist()
