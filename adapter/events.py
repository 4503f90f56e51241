"""Status events and results to EvalHub through eval-hub-sdk's `DefaultCallbacks`.

The rule (shared with the sidecar, docs/adapter.md): with AIRGAP_EVAL_TERMINAL_EVENTS=sidecar
the adapter sends only the non-terminal phases and the sidecar sends completed/failed after
the upload; with the default `adapter` the adapter also sends the terminal event (results
through `report_results`). No event is sent twice. Without a `callback_url` nothing is sent.
The SDK logs and swallows delivery failures: a lost event never fails the job.

The terminal event's owner also does the job's exports (common.exports): with the default
`adapter` (alone, e.g. under EvalHub's own init container and sidecar proxy) the adapter pushes
the OCI artifact and logs the MLflow run before its terminal event; with `sidecar` ours does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from evalhub.adapter import (
    AdapterSettings,
    DefaultCallbacks,
    FrameworkAdapter,
    JobCallbacks,
    JobPhase,
    JobResults,
    JobSpec,
    JobStatus,
    JobStatusUpdate,
    MessageInfo,
)

from common.atomic import TMP_SUFFIX
from common.evalhub_metrics import PrimaryDefinition, evaluation_results, overall_score
from common.exports import Exports
from common.layout import DONE_MARKER, UPLOADED_MARKER
from common.manifest import iter_tree
from common.status import StatusRecord

log = logging.getLogger(__name__)

TerminalOwner = Literal["adapter", "sidecar"]
_PHASES = {p.value: p for p in JobPhase}


class SdkAdapter(FrameworkAdapter):
    """eval-hub-sdk's provider contract: what `DefaultCallbacks.from_adapter` wires the SDK's
    own settings (TLS, OCI, MLflow, tracing) from. The spec is the one we parsed (stand-alone
    defaults, flag overrides) rather than the SDK's strict re-read. adapter.run runs the job's
    steps itself, so that the SDK is imported only when the job needs it (at publish when it
    has no callback URL)."""

    def __init__(self, spec: JobSpec) -> None:
        self._parsed_spec = spec
        super().__init__(settings=AdapterSettings.from_env())

    def _load_job_spec(self) -> JobSpec:
        return self._parsed_spec

    def run_benchmark_job(self, config: JobSpec, callbacks: JobCallbacks) -> JobResults:
        raise NotImplementedError("adapter.run.Run runs the job's steps")


class Events:
    def __init__(self, adapter: SdkAdapter, terminal: TerminalOwner) -> None:
        self.terminal = terminal
        self.spec = adapter.job_spec
        self.callbacks = DefaultCallbacks.from_adapter(adapter)
        self.enabled = bool(adapter.job_spec.callback_url)  # else nothing is sent

    def phase(self, phase: str) -> None:
        if self.enabled and phase in _PHASES:
            self.callbacks.report_status(
                JobStatusUpdate(status=JobStatus.RUNNING, phase=_PHASES[phase])
            )

    def finish(self, status: StatusRecord, results: JobResults | None, output_dir: Path) -> None:
        if self.terminal != "adapter":
            return
        exports = Exports(self.spec, self.callbacks)
        files = result_files(output_dir) if self.spec.exports else {}
        completed = results if status.state == "completed" else None
        if completed is not None:
            exports.apply(completed, files)
        else:
            exports.oci(files)
        if not self.enabled:
            return
        if completed is not None:
            self.callbacks.report_results(completed)
        elif status.error is not None:
            self.callbacks.report_status(
                JobStatusUpdate(
                    status=JobStatus.FAILED,
                    error_message=MessageInfo(
                        message=status.error.message
                        + (f" -- fix: {status.error.hint}" if status.error.hint else ""),
                        message_code=status.error.code.lower(),
                    ),
                )
            )


def result_files(output_dir: Path) -> dict[str, Path]:
    """What the run left for people (results, samples, logs, status.json), not the markers."""
    return {
        p.relative_to(output_dir).as_posix(): p
        for p in iter_tree(output_dir)
        if not (p.parent == output_dir and p.name in (DONE_MARKER, UPLOADED_MARKER))
        and not p.name.endswith(TMP_SUFFIX)
    }


def primary_definition(spec: JobSpec, callbacks: DefaultCallbacks) -> PrimaryDefinition | None:
    """The benchmark's primary metric and threshold as EvalHub's server picks them
    (computeBenchmarkTestResult): the job's benchmark entry (`primary_score`, `pass_criteria`),
    else the provider's entry for the benchmark, read from the server through the callback URL
    with the SDK's client (its TLS and token); else the spec's `primary_score` (1.0.x writes the
    provider's there, without the threshold); else None (the caller takes the first metric)."""
    from_spec = (
        PrimaryDefinition(
            metric=spec.primary_score.metric,
            lower_is_better=spec.primary_score.lower_is_better,
            source="job spec",
        )
        if spec.primary_score is not None and spec.primary_score.metric
        else None
    )
    http = getattr(callbacks, "_http_client", None)
    if not spec.callback_url or http is None:
        return from_spec
    base = f"{spec.callback_url.rstrip('/')}/api/v1/evaluations"

    def get(path: str) -> dict[str, Any]:
        headers = callbacks._request_headers()  # the SDK's bearer token and tenant
        response = http.get(f"{base}/{path}", headers=headers, timeout=10.0)
        response.raise_for_status()
        return dict(response.json())

    try:
        job = get(f"jobs/{spec.id}")
        benchmarks = job.get("benchmarks") or []
        if not benchmarks and (job.get("collection") or {}).get("id"):
            benchmarks = get(f"collections/{job['collection']['id']}").get("benchmarks") or []
        bench = _entry(benchmarks, spec.benchmark_id, spec.provider_id)
        primary, source = (bench.get("primary_score") or {}), "evalhub job"
        threshold = (bench.get("pass_criteria") or {}).get("threshold")
        if not primary.get("metric") and spec.provider_id:
            provider = get(f"providers/{spec.provider_id}")
            entry = _entry(provider.get("benchmarks") or [], spec.benchmark_id, None)
            primary, source = (entry.get("primary_score") or {}), "evalhub provider"
            if threshold is None:
                threshold = (entry.get("pass_criteria") or {}).get("threshold")
    except Exception as e:  # a lost lookup never fails the job
        log.info("primary metric: EvalHub's definitions not readable (%s)", e)
        return from_spec
    if not primary.get("metric"):
        return from_spec
    return PrimaryDefinition(
        metric=primary["metric"],
        lower_is_better=bool(primary.get("lower_is_better", False)),
        threshold=threshold,
        source=source,
    )


def _entry(benchmarks: list[Any], bench_id: str, provider_id: str | None) -> dict[str, Any]:
    for b in benchmarks:
        if b.get("id") == bench_id and provider_id in (None, b.get("provider_id")):
            return dict(b)
    return {}


def job_results(
    spec: JobSpec,
    metrics: Mapping[str, Any],
    primary: Mapping[str, Any] | None,
    num_examples: int,
    seconds: float,
    extra: dict[str, Any],
) -> JobResults:
    """What EvalHub receives on completion (adapter and sidecar alike): the metrics under
    EvalHub's names (common.evalhub_metrics) and the primary metric's value as overall_score,
    as EvalHub's adapter sends it."""
    return JobResults(
        id=spec.id,
        benchmark_id=spec.benchmark_id,
        benchmark_index=spec.benchmark_index,
        model_name=spec.model.name,
        results=evaluation_results(metrics),
        overall_score=overall_score(primary),
        num_examples_evaluated=num_examples,
        duration_seconds=seconds,
        evaluation_metadata=extra,
    )
