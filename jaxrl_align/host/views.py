"""How the host shows a learner's run: the metric its progress bar follows,
its part of ``summary.json`` and that summary as text, what to say before
it starts, and the defaults ``--help`` shows. None of it is learning: the
:class:`~jaxrl_align.learner.Learner` record stays pure, and a learner
without a view here gets :func:`generic`'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from jaxrl_align import agents
from jaxrl_align import rlhf
from jaxrl_align.agents import on_policy
from jaxrl_align.agents import presets
from jaxrl_align.host import summaries
from jaxrl_align.learner import Learner
from jaxrl_align.rlhf import rl_config


def _no_summary(config, evaluation, last_metrics) -> dict[str, Any]:
  del config, evaluation, last_metrics
  return {}


def _plain_report(summary: dict[str, Any]) -> str:
  """A summary's top-level scalars, one ``key: value`` per line."""
  return "\n".join(f"{k}: {v}" for k, v in summary.items()
                   if isinstance(v, (int, float, str)) or v is None)


@dataclasses.dataclass(frozen=True)
class View:
  """What the host shows of one learner's runs.

  Attributes:
    progress_metric: the metric the progress bar shows and learning curves
      plot by default (recorded in ``config.json``).
    summarize: ``(config, evaluation, last_metrics) -> dict``, the
      learner's part of ``summary.json`` (:mod:`.summaries`).
    report: ``summary -> str``, the summary for the terminal.
    notes: ``config -> [str]``: what a user should know before the run
      starts (the runner prints them), or None.
    defaults: the value of each config field when neither the user nor a
      task preset sets it, for fields whose declared default is ``None``
      (what ``--help`` shows).
  """
  progress_metric: str
  summarize: Callable[..., dict[str, Any]] = _no_summary
  report: Callable[[dict[str, Any]], str] = _plain_report
  notes: Callable[[Any], list[str]] | None = None
  defaults: dict[str, Any] = dataclasses.field(default_factory=dict)


def generic(learner: Learner) -> View:
  """The view of a learner nobody described: progress on its first
  finite metric (else its unit count), no summary fields of its own."""
  return View(progress_metric=(learner.finite_metrics[0]
                               if learner.finite_metrics else learner.units))


def _views() -> dict[str, View]:
  views = {name: View("episode_return", summaries.on_policy,
                      summaries.on_policy_report, on_policy.notes,
                      presets.DEFAULTS[name])
           for name in agents.LEARNERS}
  views["sft"] = View("train_loss", summaries.sft)
  views["rm"] = View("train_loss", summaries.rm)
  views["rlhf-dpo"] = View("loss", summaries.dpo, summaries.dpo_report)
  views.update({name: View("objective/rlhf_reward", summaries.rl,
                           summaries.rl_report)
                for name, learner in rlhf.LEARNERS.items()
                if issubclass(learner.config_type, rl_config.RLConfig)})
  return views


VIEWS: dict[str, View] = _views()


def of(learner: Learner) -> View:
  """The view registered under ``learner``'s name, else :func:`generic`'s."""
  return VIEWS.get(learner.name) or generic(learner)
