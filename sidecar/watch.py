"""How the adapter is doing, read from the shared results dir: finished (terminal status.json or
a `done` marker), dead (stale heartbeat, `done` without a terminal status, never started), or
still running. And the SIGTERM/SIGINT flag the waiting loop checks."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Literal

from common.layout import DONE_MARKER, STATUS_NAME
from common.status import StatusRecord, read_status

Kind = Literal["finished", "died", "never_started", "stopped"]


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    status: StatusRecord | None  # the adapter's record as last read
    exit_code: int | None  # from the `done` marker, when there is one
    reason: str  # one line for logs and the failed event; empty when finished


def read_done(results_dir: Path) -> tuple[bool, int | None]:
    """(marker present, exit code written in it)."""
    try:
        text = (results_dir / DONE_MARKER).read_text().strip()
    except FileNotFoundError:
        return False, None
    except OSError:
        return True, None
    try:
        return True, int(text)
    except ValueError:
        return True, None


def _age(status: StatusRecord, now: datetime) -> float:
    updated = (
        status.updated_at if status.updated_at.tzinfo else status.updated_at.replace(tzinfo=UTC)
    )
    return (now - updated).total_seconds()


def observe(
    results_dir: Path,
    *,
    waited: float,
    stale_after: float,
    start_timeout: float,
    exited: bool = False,
) -> Outcome | None:
    """The adapter's state now; None while it is still running.

    `exited`: the adapter is known to be gone (post-step mode, or after SIGTERM), so a
    non-terminal state means it died. The `done` marker is read before status.json: the
    adapter writes its last status before the marker, so a present marker means the status
    read after it is final.
    """
    done, code = read_done(results_dir)
    status = read_status(results_dir / STATUS_NAME)
    if status is not None and status.state in ("completed", "failed"):
        return Outcome("finished", status, code if code is not None else status.exit_code, "")
    if done:
        return Outcome(
            "died", status, code,
            f"the adapter exited (code {code}) without writing a terminal status.json",
        )  # fmt: skip
    if status is None:
        if exited or waited > start_timeout:
            return Outcome(
                "never_started", None, None,
                f"the adapter wrote no {STATUS_NAME} "
                + ("before it exited" if exited else f"within {start_timeout:g} s"),
            )  # fmt: skip
        return None
    age = _age(status, datetime.now(UTC))
    if exited:
        return Outcome(
            "died", status, None,
            f"the adapter stopped in phase {status.phase!r} without a terminal status "
            f"(last heartbeat {age:.0f} s ago)",
        )  # fmt: skip
    if age > stale_after:
        return Outcome(
            "died", status, None,
            f"no heartbeat from the adapter for {age:.0f} s (limit {stale_after:g} s) in phase "
            f"{status.phase!r}: killed or out of memory?",
        )  # fmt: skip
    return None


class StopFlag:
    """Set by SIGTERM/SIGINT instead of raising: the sidecar then does one last upload."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.at: float | None = None  # time.monotonic() of the first signal

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.at is None:
            self.at = time.monotonic()
        self.event.set()

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def is_set(self) -> bool:
        return self.event.is_set()
