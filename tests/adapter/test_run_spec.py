"""Job spec parsing: EvalHub-native fields, typed parameters, aliases, URL normalisation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from adapter.config import MODEL_AUTH_MOUNT, merge_overrides, parser, read_job, resolve_config
from adapter.parameters import (
    api_base,
    endpoint_url,
    parse_parameters,
    task_names,
)
from common.errors import ConfigError
from common.jobspec import parse_job_spec, read_spec_file

EVALHUB_SPEC = {
    "id": "job-7",
    "provider_id": "lm_evaluation_harness",
    "benchmark_id": "arc_easy",
    "benchmark_index": 2,
    "model": {"url": "http://vllm:8000", "name": "granite"},
    "num_examples": 50,
    "callback_url": "http://localhost:8080",
    "primary_score": {"metric": "acc_norm"},
    "parameters": {
        "num_few_shot": 5,
        "random_seed": 42,
        "timeout_seconds": 120,
        "batch_size": 1,
        "num_concurrent": 8,
        "tokenizer": "ibm-granite/granite-3.1-8b-instruct",
        "parameters": {"temperature": 0.0},
    },
}


def test_an_evalhub_spec_parses_with_its_adapters_names_as_aliases() -> None:
    spec = parse_job_spec(EVALHUB_SPEC)
    assert (spec.id, spec.benchmark_index, spec.model.name) == ("job-7", 2, "granite")
    params = parse_parameters(spec.parameters)
    assert params.num_fewshot == 5
    assert params.seed == 42
    assert params.timeout == 120
    assert params.gen_kwargs == {"temperature": 0.0}
    assert params.num_concurrent == 8
    assert task_names(spec.benchmark_id, params) == ["arc_easy"]


def test_an_unknown_parameter_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError) as e:
        parse_parameters({"num_fewshot": 1, "num_fewshots": 5})
    assert "unknown field 'parameters.num_fewshots'" in e.value.message
    assert "num_fewshot" in (e.value.hint or "")


def test_a_wrong_type_is_an_error_naming_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        parse_parameters({"num_concurrent": "many"})
    assert "parameters.num_concurrent" in e.value.message


def test_a_standalone_spec_needs_no_evalhub_bookkeeping() -> None:
    spec = parse_job_spec({"id": "x", "benchmark_id": "gsm8k", "model": {"url": "u", "name": "m"}})
    assert spec.callback_url == "" and spec.benchmark_index == 0 and spec.parameters == {}


def test_a_spec_without_model_name_names_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        parse_job_spec({"id": "x", "benchmark_id": "gsm8k", "model": {"url": "u"}})
    assert "model.name" in e.value.message


def test_unreadable_spec_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        read_spec_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        read_spec_file(bad)


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://h:8000", "http://h:8000/v1"),
        ("http://h:8000/", "http://h:8000/v1"),
        ("http://h:8000/v1", "http://h:8000/v1"),
        ("http://h:8000/v1/", "http://h:8000/v1"),
        ("http://h:8000/v1/completions", "http://h:8000/v1"),
        ("http://h:8000/v1/chat/completions", "http://h:8000/v1"),
        ("https://gw/ns/model/v1", "https://gw/ns/model/v1"),
    ],
)
def test_model_url_normalisation(url: str, base: str) -> None:
    assert api_base(url) == base
    assert endpoint_url(url, "completions") == f"{base}/completions"
    assert endpoint_url(url, "chat") == f"{base}/chat/completions"


def _args(*argv: str) -> argparse.Namespace:
    return parser("airgap-eval run").parse_args(list(argv))


def test_flags_beat_env_beat_defaults(tmp_path: Path) -> None:
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(EVALHUB_SPEC))
    env = {
        "EVALHUB_JOB_SPEC_PATH": str(spec),
        "AIRGAP_EVAL_TEST_DATA": "/env/data",
        "AIRGAP_EVAL_OUTPUT_DIR": "/env/out",
        "AIRGAP_EVAL_TERMINAL_EVENTS": "sidecar",
    }
    cfg = resolve_config(_args("--output-dir", "/flag/out"), env)
    assert cfg.job_spec == spec
    assert cfg.test_data == Path("/env/data")
    assert cfg.output_dir == Path("/flag/out")
    assert cfg.terminal_events == "sidecar"
    assert cfg.request_cache_dir("/spec/cache") == Path("/spec/cache")
    assert resolve_config(_args("--cache-dir", "/c"), env).request_cache_dir("/spec/cache") == Path(
        "/c"
    )


def test_a_bad_env_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="AIRGAP_EVAL_TERMINAL_EVENTS"):
        resolve_config(
            _args("--tasks", "a", "--model-url", "u"), {"AIRGAP_EVAL_TERMINAL_EVENTS": "both"}
        )


def test_flag_overrides_merge_into_the_spec() -> None:
    cfg = resolve_config(
        _args(
            "--tasks",
            "arc_easy,gsm8k",
            "--model-url",
            "http://m/v1",
            "--model-name",
            "tiny",
            "--param",
            "max_length=512",
            "--param",
            "tokenizer=/t",
        ),
        {},
    )
    data = merge_overrides(
        {"id": "x", "model": {"url": "old", "name": "n"}, "parameters": {"batch_size": 2}},
        cfg.overrides,
    )
    spec = parse_job_spec(data)
    params = parse_parameters(spec.parameters)
    assert spec.model.url == "http://m/v1" and spec.model.name == "tiny"
    assert params.tasks == ["arc_easy", "gsm8k"]
    assert (params.max_length, params.tokenizer, params.batch_size) == (512, "/t", 2)


@pytest.mark.parametrize(
    ("change", "first"),
    [
        ({}, False),  # a stand-alone spec: eval-hub-sdk waits for publish
        ({"callback_url": ""}, False),
        ({"callback_url": "http://localhost:8080"}, True),  # phase events to send
        ({"model": {"url": "u", "name": "m", "auth": {"secret_ref": "s"}}}, True),  # credentials
        ({"tags": []}, True),  # values only the SDK's parse checks
        ({"exports": None}, True),
        ({"primary_score": {"metric": "acc"}}, True),
    ],
)
def test_the_sdk_comes_first_only_when_the_job_needs_it_there(
    change: dict[str, object], first: bool, tmp_path: Path
) -> None:
    spec = tmp_path / "job.json"
    base = {"id": "x", "benchmark_id": "arc_easy", "model": {"url": "u", "name": "m"}}
    spec.write_text(json.dumps(base | change))
    job = read_job(resolve_config(_args("--job-spec", str(spec)), {}))
    assert job.sdk_first is (first or MODEL_AUTH_MOUNT.exists())


def test_the_model_secret_mount_is_the_sdks() -> None:
    from evalhub.adapter import auth

    assert auth._MODEL_AUTH_DIR == MODEL_AUTH_MOUNT
