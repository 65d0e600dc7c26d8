"""What the RLHF run commands share: checks of split settings, reading a
finished ``sft`` run back, and the one-seed view of a summary."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxrl_align import _checks
from jaxrl_align import configs
from jaxrl_align.host import checkpoints
from jaxrl_align.host import files
from jaxrl_align.host import runner
from jaxrl_align.rlhf import model as model_lib

MODEL = "model"  # the run's product: the kept parameters, an orbax checkpoint
TOKENIZER = "tokenizer.json"  # an sft run's tokenizer


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
    resumable: offers ``--resume``.
    needs: the modules of the ``rlhf`` extra it imports.
    learner: the name of the learner its runs record (``""``: none).
  """
  help: str
  description: str
  groups: tuple[tuple[str, Any, tuple[str, ...] | None], ...]
  main: Callable[..., int]
  inputs: tuple[tuple[str, str], ...] = ()
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


def check_split_and_seed(settings) -> None:
  _checks.check_scalar_in_range("valid_fraction", settings.valid_fraction, 0,
                                1, low_inclusive=False, high_inclusive=False)
  _checks.check_positive_int("seed", settings.seed, allow_zero=True)


def require_run(run_dir: str, kind: str, option: str) -> dict[str, Any]:
  """The ``config.json`` of a finished ``kind`` run, or a RunError naming
  ``option`` (the command-line flag that gave the directory)."""
  marker = os.path.join(run_dir, files.MARKER)
  found = None
  if os.path.isfile(marker):
    with open(marker) as f:
      found = f.read().strip()
  if found != kind:
    what = f"a {found} run" if found else "not a run directory"
    raise runner.RunError(f"{option} {run_dir!r}: expected a `jaxrl-align rlhf "
                          f"{kind}` run directory, this is {what}.")
  if not os.path.isfile(os.path.join(run_dir, "summary.json")):
    raise runner.RunError(f"{option} {run_dir!r}: the {kind} run has not "
                          f"finished (no summary.json); resume it first.")
  path = os.path.join(run_dir, "config.json")
  return files.read_json(path) if os.path.isfile(path) else {}


def load_model(run_dir: str, kind: str, option: str):
  """``(model_config, params)`` saved by a finished ``kind`` run."""
  stored = require_run(run_dir, kind, option)
  model_config = configs.from_dict(model_lib.TransformerConfig,
                                   stored["config"]["model"])
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
