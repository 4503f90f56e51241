import argparse
import json
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.jobspec import parse_job_spec, read_spec_file
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
