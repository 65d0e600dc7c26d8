"""``jaxrl-align rlhf ...``: the RLHF commands (host side).

Each settings dataclass becomes a group of options: every field is
``--field-name VALUE`` with its docstring and default in ``--help``. The
work is done by :mod:`jaxrl_align.rlhf_runs`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from jaxrl_align import cli

# TransformerConfig fields a user sets (vocab_size comes from the tokenizer).
_MODEL_FIELDS = ("max_len", "num_layers", "num_heads", "width", "mlp_ratio")


def _groups():
  from jaxrl_align import rlhf_runs
  from jaxrl_align.rlhf import model as model_lib
  from jaxrl_align.rlhf import sft

  return {
      "sft": [("model", model_lib.TransformerConfig, _MODEL_FIELDS),
              ("pretraining", sft.SFTConfig, None),
              ("run", rlhf_runs.SFTRunSettings, None)],
  }


def _add_dataclass_options(parser, title, cls, names) -> None:
  group = parser.add_argument_group(title)
  docs = cli._field_docs(cls)
  for f in dataclasses.fields(cls):
    if names is not None and f.name not in names:
      continue
    group.add_argument(
        "--" + f.name.replace("_", "-"), dest=f.name,
        default=argparse.SUPPRESS,
        help=(docs.get(f.name, "") + f" [default: {f.default}]").replace(
            "%", "%%"),
        **cli._field_kwargs(f.name, f.default))


def option_names(command: str) -> list[str]:
  """Every ``--option`` of ``jaxrl-align rlhf COMMAND``."""
  names = ["--out", "--overwrite", "--no-progress"]
  for _, cls, fields in _groups()[command]:
    names += ["--" + f.name.replace("_", "-") for f in dataclasses.fields(cls)
              if fields is None or f.name in fields]
  return names


def add_parser(sub) -> None:
  """Registers ``rlhf`` and its commands on the top-level subparsers."""
  rlhf = sub.add_parser("rlhf", help="RLHF on a small language model: "
                        "pretrain (sft), ...", allow_abbrev=False)
  rsub = rlhf.add_subparsers(dest="rlhf_command", required=True)
  sft_parser = rsub.add_parser(
      "sft", allow_abbrev=False,
      help="train the tokenizer and pretrain the transformer on the corpus",
      description="Byte-level BPE and next-token pretraining on the offline "
                  "news corpus; keeps the parameters with the lowest "
                  "validation loss.")
  sft_parser.add_argument("--out", required=True, metavar="RUN_DIR",
                          help="run directory to create")
  sft_parser.add_argument("--overwrite", action="store_true",
                          help="replace a non-empty --out")
  sft_parser.add_argument("--no-progress", action="store_true",
                          help="no progress bar")
  for title, cls, names in _groups()["sft"]:
    _add_dataclass_options(sft_parser, title, cls, names)
  sft_parser.set_defaults(func=_sft)


def _pick(args, cls, names=None) -> dict[str, Any]:
  return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
          if hasattr(args, f.name) and (names is None or f.name in names)}


def _sft(args: argparse.Namespace) -> int:
  from jaxrl_align import rlhf_runs
  from jaxrl_align.rlhf import model as model_lib
  from jaxrl_align.rlhf import sft

  model = _pick(args, model_lib.TransformerConfig, _MODEL_FIELDS)
  config = sft.SFTConfig(**_pick(args, sft.SFTConfig))
  settings = rlhf_runs.SFTRunSettings(**_pick(args, rlhf_runs.SFTRunSettings))
  summary = rlhf_runs.run_sft(args.out, model, config, settings,
                              overwrite=args.overwrite,
                              progress=not args.no_progress)
  print(f"validation loss {summary['valid_loss_initial']:.3f} -> "
        f"{summary['valid_loss_best']:.3f} nats/token (best at step "
        f"{summary['best_step']}); {summary['train_tokens_per_second']:.0f} "
        f"training tokens/s")
  for text in summary["samples"]:
    print("  sample: " + json.dumps(text)[:200])
  print(f"Wrote {args.out}/ (model/, tokenizer.json, metrics.jsonl, "
        f"samples.txt, summary.json).")
  return 0
