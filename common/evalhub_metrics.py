"""lm_eval's results -> the metrics EvalHub shows, and the job's primary score.

One mapping for the adapter (its completed event and status.json) and the sidecar (its
completed event): the names and values are those EvalHub's own lm_eval adapter reports (the
`main.py` of opendatahub-io/lm-evaluation-harness, `incubation` branch), so EvalHub's server
finds the provider's primary metric (`acc_norm` for arc_easy) among them and scores the job.
docs/adapter.md#what-evalhub-shows has the table.

EvalHub's rule, for the benchmark's entry in lm_eval's `results`:
- each key `metric,filter` becomes `metric` (stderrs too: `acc_stderr,none` -> `acc_stderr`);
  keys without a comma (`alias`, `sample_len`) are not metrics;
- when a metric has several filters, the unfiltered (`none`) value wins, else the first filter
  in lm_eval's order (gsm8k: `strict-match`, not `flexible-extract`);
- a group with no aggregate of its own (no `metric,filter` key) gets the plain mean over its
  direct subtasks of each metric name, all filters pooled; a group with an
  `aggregate_metric_list` (mmlu, blimp) reports its aggregate; subtasks are not reported;
- `N/A` and null values are skipped. Unlike EvalHub's adapter we also skip NaN and infinities
  (lm_eval's stderr of a one-doc run): they are not JSON, and the server would refuse the event.

Our extension: tasks requested beside the benchmark (`parameters.tasks`) are reported as
`<task>/<metric>` by the same rule; the name EvalHub looks up never has a `/`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from evalhub.models.api import EvaluationResult

Metrics = dict[str, float]


def _number(value: Any) -> float | None:
    if value is None or value == "N/A" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _group_mean(all_results: Mapping[str, Any], subtasks: Sequence[str]) -> dict[str, float]:
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for subtask in subtasks:
        for key, raw in (all_results.get(subtask) or {}).items():
            value = _number(raw) if "," in key else None
            if value is None:
                continue
            metric = key.rpartition(",")[0]
            sums[metric] = sums.get(metric, 0.0) + value
            counts[metric] = counts.get(metric, 0) + 1
    return {f"{m},none": sums[m] / counts[m] for m in sums}


def task_metrics(results: Mapping[str, Any], name: str) -> Metrics:
    """One task's or group's metrics as EvalHub's adapter names them: {"acc": 0.4, ...}."""
    all_results = results.get("results") or {}
    values: Mapping[str, Any] = all_results.get(name) or {}
    if not any("," in key for key in values):
        subtasks = (results.get("group_subtasks") or {}).get(name) or []
        if subtasks:
            values = _group_mean(all_results, subtasks)
    out: Metrics = {}
    for key, raw in values.items():
        if "," not in key:
            continue
        metric, _, filter_name = key.rpartition(",")
        value = _number(raw)
        if value is not None and (metric not in out or filter_name == "none"):
            out[metric] = value
    return out


def _known(results: Mapping[str, Any], name: str) -> bool:
    return name in (results.get("results") or {}) or name in (results.get("group_subtasks") or {})


def evalhub_metrics(results: Mapping[str, Any], benchmark_id: str, tasks: Sequence[str]) -> Metrics:
    """lm_eval's results dict -> the flat name -> value map sent to EvalHub.

    The benchmark's metrics carry EvalHub's plain names. When the benchmark id is not an lm_eval
    name (a job running `parameters.tasks` under its own id) and one task was requested, that
    task stands for the benchmark; every other requested task is prefixed `<task>/`.
    """
    if _known(results, benchmark_id):
        main: str | None = benchmark_id
    else:
        main = tasks[0] if len(tasks) == 1 else None
    out = task_metrics(results, main) if main else {}
    for name in tasks:
        if name != main:
            out |= {f"{name}/{m}": v for m, v in task_metrics(results, name).items()}
    return out


def evaluation_results(metrics: Mapping[str, Any]) -> list[EvaluationResult]:
    """The `results` of eval-hub-sdk's JobResults (its `metrics` on the wire); only finite
    numbers, whatever a status.json holds."""
    from evalhub.models.api import EvaluationResult  # eval-hub-sdk: at publish, not at start

    return [
        EvaluationResult(metric_name=k, metric_value=v)
        for k, raw in metrics.items()
        if (v := _number(raw)) is not None
    ]


def overall_score(primary: Mapping[str, Any] | None) -> float | None:
    """JobResults.overall_score: the primary metric's value (EvalHub's adapter sends one)."""
    return _number((primary or {}).get("value"))


class PrimaryDefinition(BaseModel):
    """Where the primary metric comes from and how EvalHub judges it (its BenchmarkTest)."""

    metric: str
    source: str  # "job spec", "evalhub job", "evalhub provider", "first metric"
    lower_is_better: bool = False
    threshold: float | None = None


def primary_score(
    metrics: Mapping[str, float], definition: PrimaryDefinition | None
) -> dict[str, Any] | None:
    """status.json's `primary_score`: the defined metric's value and, with a threshold, the
    pass/fail EvalHub's server computes (computeBenchmarkTestResult). Without a definition,
    the first metric: what EvalHub's adapter sends as `overall_score`."""
    if definition is None:
        first = next(iter(metrics), None)
        if first is None:
            return None
        definition = PrimaryDefinition(metric=first, source="first metric")
    score: dict[str, Any] = definition.model_dump(exclude_none=True)
    score["value"] = value = metrics.get(definition.metric)
    if value is not None and definition.threshold is not None:
        t = definition.threshold
        score["pass"] = value <= t if definition.lower_is_better else value >= t
    return score
