"""Job events through eval-hub-sdk's own callbacks (DefaultCallbacks, JobStatusUpdate,
JobResults): the sidecar sends `persisting_artifacts` and the one terminal event.

DefaultCallbacks logs and swallows HTTP failures, so on its own it cannot tell a 409 (the
server already holds a terminal event: done) from a refused connection (worth a retry). The
subclass below only records the status code of each response through an httpx event hook;
the wire format stays the SDK's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from evalhub.adapter import DefaultCallbacks, JobResults, JobSpec, JobStatusUpdate
from evalhub.adapter.models import EnvironmentCardMetadata, MessageInfo
from evalhub.adapter.settings import AdapterSettings
from evalhub.models.api import JobPhase, JobStatus, MessageOrigin

from common.evalhub_metrics import evaluation_results, overall_score
from common.exports import callback_settings
from common.status import StatusRecord

log = logging.getLogger(__name__)

TERMINAL_SENT = "terminal-event-sent"  # in the state dir: a rerun never sends it twice
_DELAYS = (1.0, 2.0, 4.0)


class _RecordingCallbacks(DefaultCallbacks):
    last_status: int | None = None

    def _create_http_client(self) -> Any:
        http = super()._create_http_client()
        http.event_hooks["response"].append(self._record)
        return http

    def _record(self, response: httpx.Response) -> None:
        self.last_status = response.status_code


class Reporter:
    def __init__(self, spec: JobSpec, state_dir: Path) -> None:
        settings = AdapterSettings.from_env()
        self.spec = spec
        self.sent_marker = state_dir / TERMINAL_SENT
        self.callbacks = _RecordingCallbacks(
            job_id=spec.id,
            benchmark_id=spec.benchmark_id,
            provider_id=spec.provider_id,
            benchmark_index=spec.benchmark_index,
            sidecar_url=spec.callback_url,
            insecure=settings.evalhub_insecure,
            auth_token_path=settings.auth_token_path,
            ca_bundle_path=settings.ca_bundle_path,
            primary_score=spec.primary_score,
            **callback_settings(),  # the OCI and MLflow exports go through these callbacks
        )

    def _post(self, send: Callable[[], None], what: str, deadline: Callable[[], float]) -> bool:
        """True when the server took it, or answered 409 (a terminal event is already there)."""
        for delay in (*_DELAYS, None):
            self.callbacks.last_status = None
            send()
            code = self.callbacks.last_status
            if code is not None and code < 300:
                return True
            if code == 409:
                log.info("%s: the server already holds a terminal event (409): done", what)
                return True
            if code is not None and code < 500 and code != 429:
                log.error(
                    "%s refused by %s (HTTP %s): not retried", what, self.spec.callback_url, code
                )
                return False
            if delay is None or time.monotonic() + delay > deadline():
                break
            time.sleep(delay)
        log.error(
            "%s not delivered to %s (last HTTP status %s)", what, self.spec.callback_url, code
        )
        return False

    def persisting(self) -> None:
        """Sent once, not retried: a lost progress event harms nothing."""
        update = JobStatusUpdate(status=JobStatus.RUNNING, phase=JobPhase.PERSISTING_ARTIFACTS)
        send = lambda: self.callbacks.report_status(update)  # noqa: E731
        self._post(send, "persisting_artifacts event", lambda: 0.0)

    def _terminal(self, send: Callable[[], None], what: str, deadline: Callable[[], float]) -> None:
        if self.sent_marker.exists():
            log.info("terminal event already sent by an earlier run: not sending %s", what)
            return
        if self._post(send, what, deadline):
            self.sent_marker.parent.mkdir(parents=True, exist_ok=True)
            self.sent_marker.write_text(what)

    def completed(self, results: JobResults, deadline: Callable[[], float]) -> None:
        self._terminal(lambda: self.callbacks.report_results(results), "completed event", deadline)

    def failed(
        self, message: str, code: str, origin: MessageOrigin, deadline: Callable[[], float]
    ) -> None:
        update = JobStatusUpdate(
            status=JobStatus.FAILED,
            error_message=MessageInfo(message=message, message_code=code, message_origin=origin),
        )
        self._terminal(lambda: self.callbacks.report_status(update), "failed event", deadline)


def completed_results(spec: JobSpec, status: StatusRecord, results_uri: str) -> JobResults:
    """What EvalHub (and MLflow) receive for a completed job, from the adapter's record."""
    examples = status.progress.get("num_examples_evaluated")
    return JobResults(
        id=spec.id,
        benchmark_id=spec.benchmark_id,
        benchmark_index=spec.benchmark_index,
        model_name=spec.model.name,
        # status.json's metrics are already EvalHub's names (common.evalhub_metrics).
        results=evaluation_results(status.metrics),
        overall_score=overall_score(status.primary_score),
        num_examples_evaluated=examples if isinstance(examples, int) else 0,
        duration_seconds=status.seconds or 0.0,
        evaluation_metadata={
            "artifacts": {"results_s3_uri": results_uri, **status.collection_artifacts()}
        },
        # Set, so the SDK does not capture the sidecar's own environment as the run's.
        env_card=EnvironmentCardMetadata(framework_name="lm-evaluation-harness"),
    )
