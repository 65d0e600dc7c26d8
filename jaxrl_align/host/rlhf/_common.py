"""What the RLHF run commands share: checks of split settings, reading a
finished ``sft`` run back, and the one-seed view of a summary."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxrl_align import _checks
from jaxrl_align.host import checkpoints
from jaxrl_align.host import files
from jaxrl_align.host import options
from jaxrl_align.host import records
from jaxrl_align.host import runner
from jaxrl_align.host.errors import RunFileError
from jaxrl_align.rlhf import model as model_lib

MODEL = "model"  # the run's product: the kept parameters, an orbax checkpoint
TOKENIZER = "tokenizer.json"  # an sft run's tokenizer
PREFS = "prefs.jsonl"  # a prefs run's pairs (host.rlhf.pair_files)
# The marker of a command's runs where it is not the command's name: the
# learner's name (``rlhf dpo`` runs the learner ``rlhf-dpo``).
MARKERS = {"dpo": "rlhf-dpo"}


@dataclasses.dataclass(frozen=True)
class Command:
  """An ``rlhf`` subcommand as the command line sees it.

  Attributes:
    help: one line for the command list.
    description: the command's ``--help`` text.
    groups: ``(title, class or default instance, field names or None)``:
      option groups (an instance's values are the defaults shown).
    main: ``(out, inputs, options, **flags) -> exit code``: runs and prints
      the result; ``inputs`` maps an input's name to a run directory,
      ``options`` a group's title to the fields the user gave; flags are
      ``overwrite``, ``progress`` and, if resumable, ``resume`` and
      ``tensorboard``.
    inputs: ``(name, help)`` of the run directories it reads
      (``--NAME RUN_DIR``).
    optional: the names of the inputs that may be left out.
    resumable: offers ``--resume``.
    needs: the modules of the ``rlhf`` extra it imports.
    learner: the name of the learner its runs record (``""``: none).
  """
  help: str
  description: str
  groups: tuple[tuple[str, Any, tuple[str, ...] | None], ...]
  main: Callable[..., int]
  inputs: tuple[tuple[str, str], ...] = ()
  optional: tuple[str, ...] = ()
  resumable: bool = True
  needs: tuple[str, ...] = ("tokenizers",)
  learner: str = ""


def rate(per_second, what: str) -> str:
  """``"1234 pairs/s"``, or that none was measured (no update ran)."""
  if per_second is None:
    return f"no {what}/s measured (no update ran in this session)"
  return f"{per_second:.0f} {what}/s"


def percent(x) -> str:
  return "n/a" if x is None else f"{x:.1%}"


def ending(name: str, out: str, summary: dict[str, Any],
           report: Callable[[dict[str, Any]], str]) -> tuple[str, int]:
  """``(text, exit code)`` at a run's end: its report, or, for an
  interrupted run (empty summary), how to resume it."""
  if not summary:
    return (f"Stopped; checkpoint saved. Resume with: jaxrl-align rlhf {name} "
            f"--resume {out}", 130)
  return f"{report(summary)}\nrun directory: {out}", 0


def check_seed(seed) -> None:
  """A seed the run's keys can be made from: an integer in [0, 2**31)."""
  _checks.check_positive_int("seed", seed, allow_zero=True)
  if seed > options.MAX_INT:
    raise ValueError(f"`seed` must be at most {options.MAX_INT}, got "
                     f"{seed}.")


def check_split_and_seed(settings) -> None:
  _checks.check_scalar_in_range("valid_fraction", settings.valid_fraction, 0,
                                1, low_inclusive=False, high_inclusive=False)
  check_seed(settings.seed)


def require_run(run_dir: str, kind: str, option: str) -> dict[str, Any]:
  """The ``config.json`` of a finished ``kind`` run (``{}`` for a kind
  that writes none), or a RunError naming ``option`` (the command-line
  flag that gave the directory)."""
  found = files.kind_of(run_dir)
  if found != MARKERS.get(kind, kind):
    what = f"a {found} run" if found else "not a run directory"
    raise runner.RunError(f"{option} {run_dir!r}: expected a `jaxrl-align rlhf "
                          f"{kind}` run directory, this is {what}.")
  if not files.is_file(os.path.join(run_dir, "summary.json")):
    raise runner.RunError(f"{option} {run_dir!r}: the {kind} run has not "
                          f"finished (no summary.json); resume it first.")
  if files.is_file(os.path.join(run_dir, "config.json")):
    return files.read_run(run_dir)
  return {}


def sft_split(sft_dir: str) -> tuple[float, int]:
  """``(valid_fraction, seed)`` of a finished sft run: how it split the
  documents (its prompts come from the same split), checked."""
  run = files.read_run(sft_dir)
  where = f"{records.path_of(sft_dir)}: `run_settings`"
  settings = run.get("run_settings")
  if "run_settings" not in run:
    raise RunFileError(f"{where} is missing; the file was edited.")
  if not isinstance(settings, dict):
    raise RunFileError(f"{where} must be a JSON object, got "
                       f"{files.describe(settings)}.")
  missing = [k for k in ("valid_fraction", "seed") if k not in settings]
  if missing:
    raise RunFileError(f"{where} has no `{missing[0]}`; the file was edited.")
  split = types.SimpleNamespace(valid_fraction=settings["valid_fraction"],
                                seed=settings["seed"])
  try:
    check_split_and_seed(split)
  except ValueError as e:
    raise RunFileError(f"{where}: {e}") from None
  return split.valid_fraction, split.seed


def stored_model(run_dir: str, kind: str, option: str):
  """The model's config of a finished ``kind`` run, from its record
  (nothing loaded)."""
  return records.section(require_run(run_dir, kind, option), run_dir,
                         "config.model", model_lib.TransformerConfig)


def load_model(run_dir: str, kind: str, option: str):
  """``(model_config, params)`` saved by a finished ``kind`` run."""
  model_config = stored_model(run_dir, kind, option)
  if not os.path.isdir(os.path.join(run_dir, MODEL)):
    raise runner.RunError(f"{option} {run_dir!r}: the {kind} run saved no "
                          f"model (see its summary.json).")
  template = model_lib.Transformer(model_config).init(
      jax.random.key(0), jnp.zeros((1, 2), jnp.int32))
  store = checkpoints.Checkpoints(os.path.join(run_dir, MODEL), keep=1)
  try:
    _, params = store.restore(template)
  finally:
    store.close()
  return model_config, params


def load_sft(run_dir: str, option: str = "--sft"):
  """``(model_config, params, tokenizer)`` of a finished ``sft`` run."""
  from jaxrl_align.host.rlhf import corpus

  model_config, params = load_model(run_dir, "sft", option)
  tokenizer = corpus.load_tokenizer(os.path.join(run_dir, TOKENIZER))
  return model_config, params, tokenizer


def save_model(out: str, step: int, params) -> None:
  """The run's product: ``params`` kept at ``step`` in ``out/model``. A
  finished run resumed has it already (the same step, the same parameters:
  nothing trains after the last update), so it is left as it is."""
  store = checkpoints.Checkpoints(os.path.join(out, MODEL), keep=1)
  try:
    if step not in store.steps():
      store.save(step, params)
  finally:
    store.close()


def one_seed(summary: dict[str, Any], **more) -> dict[str, Any]:
  """A one-seed run's summary with its seed's entries at the top level."""
  flat = {k: v for k, v in summary.items() if k != "per_seed"}
  return {**flat, **(summary.get("per_seed") or [{}])[0], **more}


# ------------------------------------------------------------- provenance
#
# A run made from other runs (its inputs) records each input's identity: a
# SHA-256 of the input's products, the files a later run reads (an sft
# run's tokenizer and model, a prefs run's pairs, an rm run's model). A
# copied run directory has its original's identity; another run, even of
# the same shapes, has another. So an rm run made from one sft run is
# refused beside another (its token ids would be read with the wrong
# tokenizer), and a run resumed after one of its inputs was replaced is
# refused too.

IDENTITIES = "input_identities"  # {input name: identity}, in a run's record
PRODUCTS = {"sft": (TOKENIZER, MODEL), "rm": (MODEL,), "prefs": (PREFS,),
            "dpo": (MODEL,)}


def identity(run_dir: str, kind: str, option: str) -> str:
  """The identity of the finished ``kind`` run in ``run_dir`` (given by
  the flag ``option``): SHA-256 over its products' relative paths and
  bytes."""
  require_run(run_dir, kind, option)
  digest = hashlib.sha256()
  for name in PRODUCTS[kind]:
    top = os.path.join(run_dir, name)
    paths = [top] if os.path.isfile(top) else sorted(
        os.path.join(d, f) for d, _, names in os.walk(top) for f in names)
    for path in paths:
      digest.update(os.path.relpath(path, run_dir).encode() + b"\0")
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
  return digest.hexdigest()


def _record(run_dir: str) -> dict[str, Any]:
  """What a finished run records of its inputs: its ``config.json`` (a
  stage's run) or its ``summary.json`` (a prefs run)."""
  if files.is_file(os.path.join(run_dir, "config.json")):
    return files.read_run(run_dir)
  return files.read_summary(run_dir) or {}


def check_inputs(inputs: dict[str, str], identities: dict[str, str]) -> None:
  """Refuses inputs of which one was made from another run of a kind
  that is also an input, but not from that one (an rm run made from
  another sft run than ``--sft``), or cannot tell (made before runs
  recorded their inputs' identities).

  Args:
    inputs: ``{name: run directory}``; an input's name is its kind.
    identities: ``{name: identity}`` of the same inputs.
  """
  for name, path in inputs.items():
    record = _record(path)
    made_from = record.get(IDENTITIES)
    for other, other_path in inputs.items():
      if other == name or f"{other}_run" not in record:
        continue  # not made from a run of that kind
      what = (f"{options.flag(name)} {path!r} was made from the {other} "
              f"run {record[f'{other}_run']!r}")
      if not isinstance(made_from, dict) or other not in made_from:
        raise runner.RunError(
            f"{what}, and records no identity of it (it was made before runs "
            f"recorded them), so it cannot be checked against "
            f"{options.flag(other)} {other_path!r}: make it again.")
      if made_from[other] != identities[other]:
        raise runner.RunError(
            f"{what}, not from {options.flag(other)} {other_path!r} (another "
            f"run, not a copy of it: its {' or '.join(PRODUCTS[other])} "
            f"differs); give the "
            f"{other} run it was made from, or make a new {name} run from "
            f"this one.")


def check_unchanged(out: str, stored: dict[str, Any],
                    identities: dict[str, str]) -> None:
  """Refuses to resume the run in ``out`` (its record ``stored``) when an
  input it was made from now holds another run (a run that records no
  identities, made before they were recorded, is not checked)."""
  made_from = stored.get(IDENTITIES)
  if not isinstance(made_from, dict):
    return
  for name, value in identities.items():
    if made_from.get(name) != value:
      raise runner.RunError(
          f"{out!r} was made from the {name} run in "
          f"{stored.get(f'{name}_run')!r}, which now holds another run (its "
          f"{' or '.join(PRODUCTS[name])} differs): resuming would mix the "
          f"two; start a new run instead.")
