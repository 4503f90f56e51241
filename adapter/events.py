"""Status events and results to EvalHub through eval-hub-sdk's `DefaultCallbacks`.

The rule (shared with the sidecar, docs/adapter.md): with AIRGAP_EVAL_TERMINAL_EVENTS=sidecar
the adapter sends only the non-terminal phases and the sidecar sends completed/failed after
the upload; with the default `adapter` the adapter also sends the terminal event (results
through `report_results`). No event is sent twice. Without a `callback_url` nothing is sent.
The SDK logs and swallows delivery failures: a lost event never fails the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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
from evalhub.models.api import EvaluationResult

from common.status import StatusRecord

log = logging.getLogger(__name__)

TerminalOwner = Literal["adapter", "sidecar"]
_PHASES = {p.value: p for p in JobPhase}


JobBody = Callable[[JobSpec, JobCallbacks], JobResults]


class SdkAdapter(FrameworkAdapter):
    """eval-hub-sdk's provider contract around our job body. The spec is the one we parsed
    (stand-alone defaults, flag overrides) rather than the SDK's strict re-read; in return
    `DefaultCallbacks.from_adapter` wires the SDK's own settings (TLS, OCI, MLflow, tracing)."""

    def __init__(self, spec: JobSpec, body: JobBody) -> None:
        self._parsed_spec, self._body = spec, body
        super().__init__(settings=AdapterSettings.from_env())

    def _load_job_spec(self) -> JobSpec:
        return self._parsed_spec

    def run_benchmark_job(self, config: JobSpec, callbacks: JobCallbacks) -> JobResults:
        return self._body(config, callbacks)


class Events:
    def __init__(self, adapter: SdkAdapter, terminal: TerminalOwner) -> None:
        self.terminal = terminal
        self.callbacks = DefaultCallbacks.from_adapter(adapter)
        self.enabled = bool(adapter.job_spec.callback_url)  # else nothing is sent

    def phase(self, phase: str) -> None:
        if self.enabled and phase in _PHASES:
            self.callbacks.report_status(
                JobStatusUpdate(status=JobStatus.RUNNING, phase=_PHASES[phase])
            )

    def finish(self, status: StatusRecord, results: JobResults | None) -> None:
        if not self.enabled or self.terminal != "adapter":
            return
        if status.state == "completed" and results is not None:
            self.callbacks.report_results(results)
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


def job_results(
    spec: JobSpec, metrics: dict[str, Any], num_examples: int, seconds: float, extra: dict[str, Any]
) -> JobResults:
    return JobResults(
        id=spec.id,
        benchmark_id=spec.benchmark_id,
        benchmark_index=spec.benchmark_index,
        model_name=spec.model.name,
        results=[
            EvaluationResult(metric_name=k, metric_value=v)
            for k, v in metrics.items()
            if isinstance(v, int | float | str | bool)
        ],
        num_examples_evaluated=num_examples,
        duration_seconds=seconds,
        evaluation_metadata=extra,
    )
