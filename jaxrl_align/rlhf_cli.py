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
  from jaxrl_align.rlhf import reward_model
  from jaxrl_align.rlhf import sft

  return {
      "sft": [("model", model_lib.TransformerConfig, _MODEL_FIELDS),
              ("pretraining", sft.SFTConfig, None),
              ("run", rlhf_runs.SFTRunSettings, None)],
      "prefs": [("preferences", rlhf_runs.PrefsSettings, None)],
      "rm": [("reward model", reward_model.RMConfig, None),
             ("run", rlhf_runs.RMRunSettings, None)],
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
  names += {"sft": [], "prefs": ["--sft"], "rm": ["--sft", "--prefs"]}[command]
  for _, cls, fields in _groups()[command]:
    names += ["--" + f.name.replace("_", "-") for f in dataclasses.fields(cls)
              if fields is None or f.name in fields]
  return names


def add_parser(sub) -> None:
  """Registers ``rlhf`` and its commands on the top-level subparsers."""
  rlhf = sub.add_parser(
      "rlhf", allow_abbrev=False,
      help="RLHF on a small language model: sft, prefs, rm",
      description="sft: pretrain; prefs: sample continuations and have "
                  "simulated annotators compare them; rm: train the "
                  "reward model.")
  rsub = rlhf.add_subparsers(dest="rlhf_command", required=True)
  commands = {
      "sft": ("train the tokenizer and pretrain the transformer on the corpus",
              "Byte-level BPE and next-token pretraining on the offline news "
              "corpus; keeps the parameters with the lowest validation loss.",
              _sft),
      "prefs": ("sample continuations and collect simulated preferences",
                "Continuations of corpus prefixes by the pretrained model, "
                "compared by annotators built from vaderSentiment's "
                "individual human ratings (Bradley-Terry sampling).", _prefs),
      "rm": ("train the Bradley-Terry reward model on the preferences",
             "Starts from the pretrained model; reports held-out accuracy "
             "against the annotators and the gold reward; saves rewards "
             "normalised on the reference policy's samples.", _rm)}
  for name, (help_text, description, func) in commands.items():
    p = rsub.add_parser(name, allow_abbrev=False, help=help_text,
                        description=description)
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run directory to create")
    if name in ("prefs", "rm"):
      p.add_argument("--sft", required=True, metavar="SFT_RUN",
                     help="a `jaxrl-align rlhf sft` run directory")
    if name == "rm":
      p.add_argument("--prefs", required=True, metavar="PREFS_RUN",
                     help="a `jaxrl-align rlhf prefs` run directory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar")
    for title, cls, names in _groups()[name]:
      _add_dataclass_options(p, title, cls, names)
    p.set_defaults(func=func)


def _percent(x) -> str:
  return "n/a" if x is None else f"{x:.1%}"


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


def _prefs(args: argparse.Namespace) -> int:
  from jaxrl_align import rlhf_runs

  settings = rlhf_runs.PrefsSettings(**_pick(args, rlhf_runs.PrefsSettings))
  summary = rlhf_runs.run_prefs(args.out, args.sft, settings,
                                overwrite=args.overwrite,
                                progress=not args.no_progress)
  print(f"{summary['pairs']} pairs ({summary['valid_pairs']} held out; "
        f"{summary['ties_left_out']} ties left out); two annotators agree on "
        f"{_percent(summary['annotator_agreement'])} of "
        f"pairs; labels agree with the gold reward on "
        f"{_percent(summary['label_agrees_with_gold'])}; generation "
        f"{summary['generated_tokens_per_second']:.0f} tokens/s.")
  print(f"Wrote {args.out}/ (prefs.jsonl, summary.json).")
  return 0


def _rm(args: argparse.Namespace) -> int:
  from jaxrl_align import rlhf_runs
  from jaxrl_align.rlhf import reward_model

  config = reward_model.RMConfig(**_pick(args, reward_model.RMConfig))
  settings = rlhf_runs.RMRunSettings(**_pick(args, rlhf_runs.RMRunSettings))
  summary = rlhf_runs.run_rm(args.out, args.sft, args.prefs, config, settings,
                             overwrite=args.overwrite,
                             progress=not args.no_progress)
  print(f"held-out accuracy: {summary['valid_accuracy_vs_annotators']:.1%} "
        f"against the annotators' labels, "
        f"{_percent(summary['valid_accuracy_vs_gold'])} against the gold "
        f"reward (the labels themselves agree with gold on "
        f"{_percent(summary['annotator_labels_vs_gold'])}); "
        f"parameters of step {summary['best_step']} of {summary['steps']} "
        f"(development accuracy {summary['dev_accuracy']:.1%}); "
        f"{summary['pairs_per_second']:.0f} pairs/s.")
  print(f"Wrote {args.out}/ (model/, metrics.jsonl, summary.json).")
  return 0
