"""common.evalhub_metrics: lm_eval 0.4.13 results of every shape -> the names EvalHub's own
lm_eval adapter reports (main.py of opendatahub-io/lm-evaluation-harness, `incubation`)."""

from __future__ import annotations

import json
import math

import pytest

from common.evalhub_metrics import (
    PrimaryDefinition,
    evalhub_metrics,
    evaluation_results,
    overall_score,
    primary_score,
    task_metrics,
)

ARC = {
    "alias": "arc_easy",
    "acc,none": 0.4,
    "acc_stderr,none": 0.05,
    "acc_norm,none": 0.34,
    "acc_norm_stderr,none": 0.04,
}
GSM8K = {
    "alias": "gsm8k",
    "exact_match,strict-match": 0.1,
    "exact_match_stderr,strict-match": 0.03,
    "exact_match,flexible-extract": 0.2,
    "exact_match_stderr,flexible-extract": 0.04,
}


def test_one_task_keeps_stderrs_and_drops_the_filter_suffix() -> None:
    results = {"results": {"arc_easy": ARC}}
    assert evalhub_metrics(results, "arc_easy", ["arc_easy"]) == {
        "acc": 0.4, "acc_stderr": 0.05, "acc_norm": 0.34, "acc_norm_stderr": 0.04,
    }  # fmt: skip


def test_several_filters_first_in_lm_eval_order_unless_unfiltered() -> None:
    assert task_metrics({"results": {"gsm8k": GSM8K}}, "gsm8k") == {
        "exact_match": 0.1,
        "exact_match_stderr": 0.03,
    }
    # the unfiltered value wins wherever it comes
    mixed = {"exact_match,flexible-extract": 0.2, "exact_match,none": 0.7}
    assert task_metrics({"results": {"t": mixed}}, "t") == {"exact_match": 0.7}


def test_group_with_aggregate_reports_the_aggregate_not_subtasks() -> None:
    results = {
        "results": {
            "mmlu": {"alias": "mmlu", "acc,none": 0.3, "acc_stderr,none": 0.01},
            "mmlu_stem": {"alias": " - stem", "acc,none": 0.9, "acc_stderr,none": 0.02},
        },
        "groups": {"mmlu": {"alias": "mmlu", "acc,none": 0.3, "acc_stderr,none": 0.01}},
        "group_subtasks": {"mmlu": ["mmlu_stem"], "mmlu_stem": []},
    }
    assert evalhub_metrics(results, "mmlu", ["mmlu"]) == {"acc": 0.3, "acc_stderr": 0.01}


def test_group_without_aggregate_is_the_plain_mean_of_its_subtasks_filters_pooled() -> None:
    results = {
        "results": {
            "suite": {"alias": "suite"},
            "a": {"alias": "a", "acc,none": 0.2, "acc_stderr,none": 0.1, "f1,none": "N/A"},
            "b": {"alias": "b", "acc,none": 0.6, "acc_stderr,none": 0.3, "f1,none": 0.5},
            "g": GSM8K,
        },
        "group_subtasks": {"suite": ["a", "b", "g"]},
    }
    got = evalhub_metrics(results, "suite", ["suite"])
    assert got == pytest.approx(
        {"acc": 0.4, "acc_stderr": 0.2, "f1": 0.5, "exact_match": 0.15, "exact_match_stderr": 0.035}
    )


def test_not_a_number_is_left_out_and_the_rest_is_json() -> None:
    results = {
        "results": {
            "t": {"acc,none": 1.0, "acc_stderr,none": "N/A", "bleu,none": math.nan, "x,none": None}
        }
    }
    got = evalhub_metrics(results, "t", ["t"])
    assert got == {"acc": 1.0}
    json.dumps(
        [r.model_dump() for r in evaluation_results({**got, "nan": math.nan, "bad": "text"})],
        allow_nan=False,
    )


def test_other_requested_tasks_are_prefixed_and_a_lone_task_stands_for_its_benchmark() -> None:
    results = {"results": {"arc_easy": ARC, "gsm8k": GSM8K}}
    got = evalhub_metrics(results, "arc_easy", ["arc_easy", "gsm8k"])
    assert got["acc_norm"] == 0.34 and got["gsm8k/exact_match"] == 0.1
    assert "exact_match" not in got
    # a benchmark id that is not an lm_eval name, one task requested: that task's names
    assert evalhub_metrics(results, "my-bench", ["gsm8k"]) == {
        "exact_match": 0.1,
        "exact_match_stderr": 0.03,
    }
    assert set(evalhub_metrics(results, "my-bench", ["arc_easy", "gsm8k"])) == {
        "arc_easy/acc", "arc_easy/acc_stderr", "arc_easy/acc_norm", "arc_easy/acc_norm_stderr",
        "gsm8k/exact_match", "gsm8k/exact_match_stderr",
    }  # fmt: skip


def test_primary_score_as_evalhub_judges_it() -> None:
    metrics = {"acc": 0.4, "acc_norm": 0.34}
    defined = PrimaryDefinition(metric="acc_norm", threshold=0.25, source="evalhub provider")
    assert primary_score(metrics, defined) == {
        "metric": "acc_norm", "value": 0.34, "threshold": 0.25, "pass": True,
        "lower_is_better": False, "source": "evalhub provider",
    }  # fmt: skip
    lower = PrimaryDefinition(metric="acc", threshold=0.3, lower_is_better=True, source="job spec")
    assert primary_score(metrics, lower)["pass"] is False
    # no definition: the first metric, EvalHub's adapter's overall_score
    assert primary_score(metrics, None) == {
        "metric": "acc",
        "value": 0.4,
        "source": "first metric",
        "lower_is_better": False,
    }
    # a defined metric the run did not produce: no value, no pass/fail (the server omits its test too)
    missing = primary_score(
        metrics, PrimaryDefinition(metric="f1", threshold=0.5, source="job spec")
    )
    assert missing is not None and missing["value"] is None and "pass" not in missing
    assert overall_score(missing) is None and overall_score(primary_score(metrics, defined)) == 0.34
    assert primary_score({}, None) is None
