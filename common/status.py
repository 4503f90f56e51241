"""The status record each component keeps on disk, written atomically, and the short summary
Kubernetes shows from the termination-message file."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from common.atomic import atomic_write
from common.errors import AirgapError
from common.layout import TERMINATION_LOG

State = Literal["running", "completed", "failed"]
_TERMINATION_LIMIT = 4096


def _now() -> datetime:
    return datetime.now(UTC)


class ErrorInfo(BaseModel):
    code: str
    message: str
    hint: str | None = None
    exit_code: int

    @classmethod
    def from_error(cls, err: AirgapError) -> ErrorInfo:
        return cls(code=err.code, message=err.message, hint=err.hint, exit_code=int(err.exit_code))


class StatusRecord(BaseModel):
    component: Literal["sync", "run", "upload", "stage", "verify", "slugs"]
    state: State = "running"
    phase: str | None = None
    job_id: str | None = None
    benchmark_id: str | None = None
    started_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None
    seconds: float | None = None
    exit_code: int | None = None
    # Component-specific counters: files/bytes for sync and upload, requests per task for run.
    progress: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    primary_score: dict[str, Any] | None = None
    # run: EvalHub collection keys (adapter/criteria.py): the runs and spread of
    # `repetitions`, the secondary metric's and blocking subtask's values and pass/fail
    repetitions: dict[str, Any] | None = None
    criteria: list[dict[str, Any]] | None = None
    error: ErrorInfo | None = None

    def collection_artifacts(self) -> dict[str, Any]:
        """`repetitions` and `criteria` as the completed event's artifacts (EvalHub's job view
        shows a benchmark's artifacts), from the adapter or the sidecar alike."""
        found = {"repetitions": self.repetitions, "criteria": self.criteria}
        return {k: v for k, v in found.items() if v}

    def finish(self, error: AirgapError | None = None) -> StatusRecord:
        self.finished_at = self.updated_at = _now()
        self.seconds = round((self.finished_at - self.started_at).total_seconds(), 3)
        self.state = "failed" if error else "completed"
        self.error = ErrorInfo.from_error(error) if error else None
        self.exit_code = int(error.exit_code) if error else 0
        return self

    def write(self, path: Path) -> None:
        """Atomic: readers (the sidecar, kubectl cp) never see a half-written record."""
        self.updated_at = _now()
        atomic_write(path, self.model_dump_json(indent=1))

    def summary(self) -> str:
        """One JSON line under 4 KB for /dev/termination-log."""
        data: dict[str, Any] = {
            "component": self.component,
            "state": self.state,
            "exit_code": self.exit_code,
            "seconds": self.seconds,
        }
        if self.error:
            data["error"] = self.error.model_dump()
        if self.primary_score:
            data["primary_score"] = self.primary_score
        text = json.dumps(data, default=str)
        return text if len(text) <= _TERMINATION_LIMIT else text[: _TERMINATION_LIMIT - 3] + "..."


def read_status(path: Path) -> StatusRecord | None:
    try:
        return StatusRecord.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


def write_termination_message(text: str, path: Path = TERMINATION_LOG) -> None:
    """Kubernetes shows this file in `kubectl describe pod`; absent outside a pod."""
    if path.exists():
        with contextlib.suppress(OSError):
            path.write_text(text[:_TERMINATION_LIMIT])
