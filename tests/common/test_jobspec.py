import argparse
import json
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.jobspec import (
    EVALHUB_JOB_FIELDS,
    SPEC_FIELDS,
    check_fields,
    parse_job_spec,
    read_spec_file,
)
from sidecar.config import load_job_spec

STANDALONE = {
    "id": "j1",
    "benchmark_id": "arc_easy",
    "model": {"url": "http://m:8000/v1", "name": "tiny"},
}


def test_standalone_spec_gets_evalhub_bookkeeping_defaults() -> None:
    spec = parse_job_spec(dict(STANDALONE))
    assert (spec.provider_id, spec.benchmark_index, spec.callback_url) == (
        "lm_evaluation_harness",
        0,
        "",
    )


def test_the_sidecar_accepts_what_the_adapter_accepts(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(STANDALONE))
    spec = load_job_spec(argparse.Namespace(job_spec=path), {})
    assert spec is not None and spec.id == "j1" and not spec.callback_url


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="benchmark_id"):
        parse_job_spec({"id": "x", "model": {"url": "u", "name": "m"}})
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not readable JSON"):
        read_spec_file(bad)


# What EvalHub 1.0's server writes to job.json (BuildJobSpec), every field set.
EVALHUB_JOB = {
    "id": "a1b2",
    "provider_id": "lm_evaluation_harness",
    "benchmark_id": "arc_easy",
    "benchmark_index": 0,
    "model": {
        "url": "http://m:8000/v1",
        "name": "tiny",
        "auth": {"secret_ref": "model-secret"},
        "parameters": {"temperature": 0},
        "card_url": "https://example.invalid/card",
    },
    "num_examples": 10,
    "parameters": {"num_few_shot": 0},
    "experiment_name": "exp",
    "tags": [{"key": "team", "value": "x"}],
    "callback_url": "http://localhost:8080",
    "exports": {"oci": {"coordinates": {"oci_host": "r.example", "oci_repository": "o/r"}}},
}


def test_every_field_evalhubs_job_json_carries_is_accepted() -> None:
    from evalhub.adapter import JobSpec

    assert set(EVALHUB_JOB) == set(EVALHUB_JOB_FIELDS)
    assert set(SPEC_FIELDS) == set(JobSpec.model_fields)  # the SDK's spec, nothing more
    check_fields(EVALHUB_JOB)
    assert parse_job_spec(EVALHUB_JOB).num_examples == 10


@pytest.mark.parametrize(
    ("field", "guess"),
    [("modle", "model"), ("num_example", "num_examples"), ("callbackurl", "callback_url")],
)
def test_an_unknown_top_level_field_is_refused_with_the_closest_name(
    field: str, guess: str
) -> None:
    data = dict(EVALHUB_JOB) | {field: 1}
    with pytest.raises(ConfigError, match=rf"unknown field '{field}' \(did you mean '{guess}'\?\)"):
        check_fields(data)


def test_an_unknown_model_field_and_one_with_no_close_name() -> None:
    data = dict(EVALHUB_JOB) | {"zzz": 1, "model": {"url": "u", "nmae": "m"}}
    with pytest.raises(ConfigError) as err:
        check_fields(data)
    assert "unknown field 'zzz'" in err.value.message and "zzz' (did" not in err.value.message
    assert "unknown field 'model.nmae' (did you mean 'model.name'?)" in err.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_examples", -1),
        ("num_examples", 0),
        ("num_examples", "ten"),
        ("num_examples", 2.5),
        ("num_examples", True),
        ("benchmark_index", -1),
        ("benchmark_index", "0"),
        ("parameters", [1]),
        ("tags", "a"),
        ("id", 7),
        ("model", "http://m"),
    ],
)
def test_a_bad_value_is_config_naming_its_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"(^|: ){field}: must be"):
        check_fields(dict(EVALHUB_JOB) | {field: value})


# Specs without the SDK-only fields (SDK_CHECKED, model.auth): `run` leaves eval-hub-sdk's
# parse of these until publish, so the light check must refuse all the SDK would (it may
# refuse more: a benchmark_index "1" the SDK coerces). A spec without a model is read_job's.
PLAIN = dict(STANDALONE) | {"num_examples": 3, "parameters": {"limit": 2}}


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"provider_id": "p", "benchmark_index": 2, "callback_url": "", "experiment_name": None},
        {"experiment_name": "exp"},
        {"model": {"url": "u", "name": "m", "parameters": {"t": 0}, "card_url": "c"}},
        {"model": {"name": "m"}},
        {"id": None},
        {"id": 7},
        {"benchmark_id": None},
        {"benchmark_id": ["a"]},
        {"provider_id": None},
        {"callback_url": None},
        {"callback_url": 3},
        {"benchmark_index": None},
        {"benchmark_index": "1"},
        {"parameters": None},
        {"parameters": "x"},
        {"num_examples": "3"},
        {"experiment_name": 1},
        {"model": {"url": "u"}},
        {"model": {"url": "u", "name": ""}},
        {"model": {"url": "u", "name": "  "}},
        {"model": {"url": "u", "name": 5}},
        {"model": {"url": 5, "name": "m"}},
        {"model": {"url": None, "name": "m"}},
    ],
)
def test_a_plain_spec_the_light_check_accepts_the_sdk_accepts(
    change: dict[str, object],
) -> None:
    data = PLAIN | change
    try:
        parse_job_spec(data)
        sdk_ok = True
    except ConfigError:
        sdk_ok = False
    try:
        check_fields(data)
        light_ok = True
    except ConfigError:
        light_ok = False
    assert sdk_ok or not light_ok, change


@pytest.mark.parametrize("missing", ["id", "benchmark_id"])
def test_the_light_check_names_a_missing_required_field(missing: str) -> None:
    data = {k: v for k, v in PLAIN.items() if k != missing}
    with pytest.raises(ConfigError, match=rf"{missing}: required"):
        check_fields(data)
