"""EvalHub's collection parameters (config/collections/*.yaml): every key any collection sets
is understood; repetitions, secondary metrics and blocking subtasks as plain functions over
lm_eval's results dicts; the chat template check on a tokenizer dir."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from adapter import criteria
from adapter.parameters import parse_parameters
from adapter.preflight import chat_template_names, check_chat_template
from common.errors import ConfigError, MissingDataError
from common.evalhub_metrics import PrimaryDefinition

# Every `parameters` block the lm_evaluation_harness and lighteval entries of EvalHub's
# collections carry (eval-hub/eval-hub config/collections at ba127125), verbatim.
COLLECTION_PARAMETERS: list[dict[str, Any]] = [
    {"num_fewshot": 0},
    {"num_fewshot": 5, "apply_chat_template": True, "fewshot_as_multiturn": True},
    {"num_fewshot": 0, "apply_chat_template": True},
    {"num_fewshot": 0, "apply_chat_template": True, "repetitions": 3},
    {"num_fewshot": 0, "apply_chat_template": True, "pass_at_k": 1, "num_samples": 3},
    {"num_fewshot": 0, "secondary_metric": "accuracy_ambig", "secondary_threshold": 0.70},
    {"num_fewshot": 0, "secondary_metric": "mc2_acc", "secondary_threshold": 0.7},
    {"num_fewshot": 0, "blocking_subtask": "harmless", "blocking_subtask_threshold": 0.70},
]


@pytest.mark.parametrize("raw", COLLECTION_PARAMETERS)
def test_every_collection_parameter_block_parses(raw: dict[str, Any]) -> None:
    params = parse_parameters(raw)
    assert params.num_fewshot == raw["num_fewshot"]
    assert params.repetitions == raw.get("repetitions", 1)
    assert params.apply_chat_template == raw.get("apply_chat_template", False)


def test_lighteval_keys_are_accepted_with_one_warning_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        parse_parameters({"num_fewshot": 0, "pass_at_k": 1, "num_samples": 3})
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1
    assert "num_samples, pass_at_k" in lines[0] and "lighteval" in lines[0]


def test_a_misspelled_key_is_refused_naming_the_closest_known_one() -> None:
    with pytest.raises(ConfigError) as e:
        parse_parameters({"secondary_treshold": 0.7, "secondary_metric": "acc"})
    assert "unknown field 'parameters.secondary_treshold'" in e.value.message
    assert "did you mean 'secondary_threshold'" in (e.value.hint or "")
    with pytest.raises(ConfigError) as e:
        parse_parameters({"repetition": 3})
    assert "did you mean 'repetitions'" in (e.value.hint or "")


def test_a_threshold_without_its_metric_is_refused() -> None:
    with pytest.raises(ConfigError, match="blocking_subtask's threshold is set without"):
        parse_parameters({"blocking_subtask_threshold": 0.7})
    with pytest.raises(ConfigError, match=r"parameters.repetitions"):
        parse_parameters({"repetitions": 0})


def test_a_chat_template_name_is_kept_as_lm_eval_takes_it() -> None:
    assert parse_parameters({"apply_chat_template": "tool_use"}).apply_chat_template == "tool_use"


def test_repetition_seeds() -> None:
    assert criteria.seeds(None, 1) == [None]  # lm_eval's own defaults
    assert criteria.seeds(42, 1) == [42]
    assert criteria.seeds(42, 3) == [42, 43, 44]
    assert criteria.seeds(None, 2) == [1234, 1235]


def test_mean_and_spread_over_runs() -> None:
    runs = [{"acc": 0.5, "f1": 0.2}, {"acc": 0.7, "f1": 0.4}, {"acc": 0.6}]
    mean = criteria.mean_metrics(runs)
    assert mean == pytest.approx({"acc": 0.6, "f1": 0.3})
    summary = criteria.repetitions_summary(
        [(1, runs[0], ["a.json"]), (2, runs[1], ["b.json"]), (3, runs[2], ["c.json"])], mean
    )
    assert summary["n"] == 3
    assert [r["seed"] for r in summary["runs"]] == [1, 2, 3]
    assert summary["metrics"]["acc"] == pytest.approx(
        {"mean": 0.6, "stdev": 0.1, "min": 0.5, "max": 0.7}
    )


def _results(harmless: float) -> dict[str, Any]:
    """lm_eval's results for a group with two subtasks, as simple_evaluate returns them."""
    return {
        "results": {
            "hhh": {"alias": "hhh"},
            "hhh_harmless": {"acc,none": harmless, "acc_stderr,none": 0.1},
            "hhh_helpful": {"acc,none": 0.9, "acc_stderr,none": 0.1},
        },
        "group_subtasks": {"hhh": ["hhh_harmless", "hhh_helpful"]},
    }


def test_blocking_subtask_is_judged_on_the_primary_metric_mean() -> None:
    runs = [_results(0.6), _results(0.7)]
    primary = PrimaryDefinition(metric="acc", source="evalhub job")
    (item,) = criteria.evaluate_criteria(
        runs, "hhh", {"acc": 0.75}, (None, None), ("harmless", 0.7), primary
    )
    assert item == {
        "kind": "blocking_subtask", "subtask": "harmless", "threshold": 0.7,
        "task": "hhh_harmless", "metric": "acc", "value": pytest.approx(0.65),
        "pass": False, "blocking": True,
    }  # fmt: skip
    assert "a blocking finding" in criteria.criteria_line(item)


def test_secondary_metric_is_reported_not_required() -> None:
    (item,) = criteria.evaluate_criteria(
        [_results(0.9)], "hhh", {"acc": 0.8, "mc2": 0.75}, ("mc2", 0.7), (None, None), None
    )
    assert item == {"kind": "secondary", "metric": "mc2", "threshold": 0.7, "required": False,
                    "value": 0.75, "pass": True}  # fmt: skip


def test_what_lm_eval_does_not_report_is_said_so_never_guessed() -> None:
    secondary, blocking = criteria.evaluate_criteria(
        [_results(0.9)], "hhh", {"acc": 0.8}, ("acc_ambig", 0.7), ("honest", 0.7), None
    )
    assert secondary["value"] is None and "pass" not in secondary
    assert "no metric 'acc_ambig'" in secondary["note"] and "acc" in secondary["note"]
    assert blocking["value"] is None
    assert "no subtask of hhh 'honest'" in blocking["note"]
    assert "hhh_harmless, hhh_helpful" in blocking["note"]
    assert "not evaluated" in criteria.criteria_line(blocking)


def _tokenizer(tmp_path: Path, config: dict[str, Any], files: dict[str, str]) -> Path:
    d = tmp_path / "tokenizer"
    d.mkdir()
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    for name, text in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    return d


@pytest.mark.parametrize(
    ("config", "files", "names"),
    [
        ({"chat_template": "{{ messages }}"}, {}, ["default"]),
        ({}, {"chat_template.jinja": "{{ messages }}"}, ["default"]),
        ({"chat_template": [{"name": "default", "template": "a"},
                            {"name": "rag", "template": "b"}]}, {}, ["default", "rag"]),
        ({}, {"chat_template.jinja": "a", "additional_chat_templates/tool_use.jinja": "b"},
         ["default", "tool_use"]),
        ({}, {}, []),
    ],
)  # fmt: skip
def test_chat_template_names_from_the_files_transformers_reads(
    tmp_path: Path, config: dict[str, Any], files: dict[str, str], names: list[str]
) -> None:
    assert chat_template_names(_tokenizer(tmp_path, config, files)) == names


def test_a_tokenizer_without_the_asked_template_fails_naming_its_dir(tmp_path: Path) -> None:
    bare = _tokenizer(tmp_path, {"tokenizer_class": "PreTrainedTokenizerFast"}, {})
    with pytest.raises(MissingDataError) as e:
        check_chat_template(bare, True)
    assert f"the tokenizer {bare} has no chat template" in e.value.message
    (bare / "chat_template.jinja").write_text("{{ messages }}")
    check_chat_template(bare, True)
    with pytest.raises(MissingDataError, match="no chat template named 'rag'; it has: default"):
        check_chat_template(bare, "rag")


def test_the_status_record_hands_repetitions_and_criteria_to_the_completed_event() -> None:
    from common.status import StatusRecord

    assert StatusRecord(component="run").collection_artifacts() == {}
    item = {"kind": "secondary", "metric": "acc", "value": 0.5, "threshold": 0.7, "pass": False}
    record = StatusRecord(component="run", criteria=[item])
    restored = StatusRecord.model_validate_json(record.model_dump_json())  # the sidecar's read
    assert restored.collection_artifacts() == {"criteria": [item]}
