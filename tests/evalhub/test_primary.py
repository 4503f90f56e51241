"""adapter.events.primary_definition when EvalHub's server cannot say: the spec's
`primary_score` (no threshold), else nothing (the first metric stands in). The server's own
definitions are read in test_server.py."""

from __future__ import annotations

from typing import Any

from evalhub.adapter import DefaultCallbacks, JobSpec

from adapter.events import primary_definition
from common.jobspec import parse_job_spec
from testbed.localservers import free_port


def _spec(**fields: Any) -> JobSpec:
    base = {
        "id": "job-1", "provider_id": "airgap_eval", "benchmark_id": "arc_easy",
        "benchmark_index": 0, "model": {"url": "http://127.0.0.1:1/v1", "name": "tiny"},
        "parameters": {},
    }  # fmt: skip
    return parse_job_spec(base | fields, "test spec")


def _callbacks(spec: JobSpec) -> DefaultCallbacks:
    return DefaultCallbacks(
        job_id=spec.id, provider_id=spec.provider_id, benchmark_id=spec.benchmark_id,
        benchmark_index=spec.benchmark_index, sidecar_url=spec.callback_url,
    )  # fmt: skip


def test_server_unreachable_falls_back_to_the_spec() -> None:
    spec = _spec(
        callback_url=f"http://127.0.0.1:{free_port()}",
        primary_score={"metric": "acc_norm", "lower_is_better": False},
    )
    got = primary_definition(spec, _callbacks(spec))
    assert got is not None
    assert (got.metric, got.source, got.threshold) == ("acc_norm", "job spec", None)


def test_stand_alone_without_a_definition_is_none() -> None:
    spec = _spec()
    assert primary_definition(spec, _callbacks(spec)) is None
