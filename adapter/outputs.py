"""What the run leaves in --output-dir for the sidecar and for people:

- `status.json` (common.status.StatusRecord, component "run"), rewritten atomically on each
  phase change and every `heartbeat_s` seconds while running (the sidecar's liveness signal);
- lm_eval's results JSON and samples JSONL (written by its EvaluationTracker, then redacted);
- `logs/adapter.log`;
- `done`, holding the exit code, once everything else is written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.atomic import atomic_write
from common.layout import DONE_MARKER, STATUS_NAME, UPLOADED_MARKER
from common.logs import redact
from common.status import StatusRecord

log = logging.getLogger(__name__)

LOG_NAME = "logs/adapter.log"


class StatusWriter:
    """Keeps status.json fresh: on demand and from a heartbeat thread."""

    def __init__(
        self,
        output_dir: Path,
        status: StatusRecord,
        heartbeat_s: float = 5.0,
        progress: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.path = output_dir / STATUS_NAME
        self.status = status
        self.heartbeat_s = heartbeat_s
        self.progress = progress
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self) -> None:
        with self._lock:
            if self.progress is not None:
                self.status.progress = self.progress()
            try:
                self.status.write(self.path)
            except OSError as e:
                log.warning("could not write %s: %s", self.path, e)

    def phase(self, name: str) -> None:
        self.status.phase = name
        log.info("phase: %s", name)
        self.write()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.write()

    def start(self) -> None:
        self.write()
        self._thread = threading.Thread(target=self._beat, name="status-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.progress is not None:
            self.status.progress = self.progress()


def redact_files(paths: list[Path]) -> None:
    """Belt and braces: no registered secret survives in a result file."""
    for p in paths:
        text = p.read_text(encoding="utf-8")
        clean = redact(text)
        if clean != text:
            p.write_text(clean, encoding="utf-8")
            log.info("redacted a secret from %s", p.name)


def write_done(output_dir: Path, exit_code: int) -> None:
    atomic_write(output_dir / DONE_MARKER, f"{exit_code}\n")


def wait_uploaded(output_dir: Path, timeout_s: float, poll_s: float = 0.2) -> bool:
    """Bounded wait for the sidecar's `uploaded` marker (a native sidecar is stopped only
    after we exit, so the upload must finish while we are still alive)."""
    marker = output_dir / UPLOADED_MARKER
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker.exists():
            return True
        time.sleep(poll_s)
    log.warning("no %s marker after %.0f s; exiting anyway", marker, timeout_s)
    return False
