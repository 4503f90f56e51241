"""What EvalHub's collections ask of a benchmark beyond its primary score (their
`parameters`, config/collections/*.yaml): repetitions over seeds, a secondary metric, a
blocking subtask. Plain functions over lm_eval's results dicts; docs/adapter.md#collections.

- `repetitions: N`: N runs, seeds seed, seed+1, ...; each metric's mean is what EvalHub gets
  (and scores), the runs and their spread are reported beside it.
- `secondary_metric` + `secondary_threshold`: "tracked as secondary", "not required to pass"
  (the collections' comments): its value and pass/fail are reported, the job's state and
  score do not depend on it.
- `blocking_subtask` + `blocking_subtask_threshold`: "a score below the threshold on the
  subtask should be treated as a blocking finding": the subtask's primary metric and
  pass/fail are reported, a fail as a `blocking` finding; the run still completes with its
  score (a reviewer, not the adapter, decides what blocks a model).
A metric or subtask lm_eval does not report is said so (`value` null, a `note`), never guessed.
"""

from __future__ import annotations

import difflib
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from common.evalhub_metrics import Metrics, PrimaryDefinition, task_metrics


def seeds(seed: int | None, repetitions: int) -> list[int | None]:
    """One seed per run: none given and one run keeps lm_eval's own defaults."""
    if seed is None and repetitions == 1:
        return [None]
    base = 1234 if seed is None else seed  # lm_eval's default few-shot and sampling seed
    return [base + i for i in range(repetitions)]


def mean_metrics(runs: Sequence[Metrics]) -> Metrics:
    """Each metric's mean over the runs that report it."""
    names = dict.fromkeys(m for run in runs for m in run)
    return {m: statistics.fmean(run[m] for run in runs if m in run) for m in names}


def repetitions_summary(
    runs: Sequence[tuple[int | None, Metrics, list[str]]], mean: Metrics
) -> dict[str, Any]:
    """Every run (seed, metrics, files) and each metric's mean, standard deviation, range."""
    spread: dict[str, dict[str, float]] = {}
    for metric, value in mean.items():
        values = [m[metric] for _, m, _ in runs if metric in m]
        spread[metric] = {
            "mean": value,
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
    return {
        "n": len(runs),
        "runs": [{"seed": s, "metrics": m, "results_files": f} for s, m, f in runs],
        "metrics": spread,
    }


def _subtasks(results: Mapping[str, Any], name: str) -> list[str]:
    """Every task below a group, depth first."""
    groups = results.get("group_subtasks") or {}
    out: list[str] = []
    for sub in groups.get(name) or []:
        out += [sub, *_subtasks(results, sub)]
    return out


def _find_subtask(results: Mapping[str, Any], benchmark: str, subtask: str) -> str | None:
    below = _subtasks(results, benchmark)
    for name in below:
        if name == subtask or name.endswith(f"_{subtask}"):
            return name
    return None


def _not_found(what: str, name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (closest: {close[0]!r})" if close else ""
    listed = ", ".join(known[:20]) or "none"
    return f"lm_eval reports no {what} {name!r}{hint}; it reports: {listed}"


def _judge(value: float, threshold: float | None, lower_is_better: bool) -> bool | None:
    if threshold is None:
        return None
    return value <= threshold if lower_is_better else value >= threshold


def evaluate_criteria(
    runs: Sequence[Mapping[str, Any]],
    benchmark: str,
    metrics: Metrics,
    secondary: tuple[str | None, float | None],
    blocking: tuple[str | None, float | None],
    primary: PrimaryDefinition | None,
) -> list[dict[str, Any]]:
    """The secondary metric and blocking subtask, judged on the (mean) metrics of the runs."""
    out: list[dict[str, Any]] = []
    metric, threshold = secondary
    if metric:
        item: dict[str, Any] = {"kind": "secondary", "metric": metric, "threshold": threshold,
                                "required": False, "value": metrics.get(metric)}  # fmt: skip
        if item["value"] is None:
            item["note"] = _not_found("metric", metric, list(metrics))
        else:
            item["pass"] = _judge(item["value"], threshold, lower_is_better=False)
        out.append(item)
    subtask, threshold = blocking
    if subtask:
        item = {"kind": "blocking_subtask", "subtask": subtask, "threshold": threshold}
        found = _find_subtask(runs[0], benchmark, subtask) if runs else None
        if found is None:
            item["value"] = None
            item["note"] = _not_found(
                f"subtask of {benchmark}", subtask, _subtasks(runs[0], benchmark) if runs else []
            )
            out.append(item)
            return out
        sub_metrics = mean_metrics([task_metrics(r, found) for r in runs])
        name = primary.metric if primary is not None else next(iter(sub_metrics), "")
        item |= {"task": found, "metric": name, "value": sub_metrics.get(name)}
        if item["value"] is None:
            item["note"] = _not_found(f"metric of {found}", name, list(sub_metrics))
        else:
            lower = primary is not None and primary.lower_is_better
            item["pass"] = _judge(item["value"], threshold, lower)
            item["blocking"] = item["pass"] is False
        out.append(item)
    return out


def criteria_line(item: Mapping[str, Any]) -> str:
    """One log line per criterion."""
    what = (
        f"secondary metric {item['metric']}"
        if item["kind"] == "secondary"
        else f"blocking subtask {item['subtask']}"
        + (f" ({item['task']} {item['metric']})" if item.get("task") else "")
    )
    if item.get("value") is None:
        return f"{what}: not evaluated: {item.get('note')}"
    verdict = {True: "pass", False: "FAIL", None: "no threshold"}[item.get("pass")]
    tail = " -- a blocking finding" if item.get("blocking") else ""
    return f"{what}: {item['value']:.4g} (threshold {item['threshold']}): {verdict}{tail}"
