"""Logging for all images: one format, secrets redacted, progress readable in `kubectl logs`."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import AnyStr, TextIO

_secrets: set[str] = set()
_MIN_SECRET = 4  # shorter values would mask ordinary words


def register_secret(value: str | None) -> bool:
    """Mask this value in every log line from now on; False when it is too short to mask."""
    if value and len(value) >= _MIN_SECRET:
        _secrets.add(value)
        return True
    return False


def redact(text: AnyStr, secrets: Iterable[AnyStr] | None = None) -> AnyStr:
    """Each secret (by default every registered one) in `text` masked as ***."""
    mask = "***" if isinstance(text, str) else b"***"
    if secrets is None:
        secrets = _secrets if isinstance(text, str) else {s.encode() for s in _secrets}
    for s in secrets:
        text = text.replace(s, mask)
    return text


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


# Third-party noise, silenced through each library's own switch. They read it when first
# imported, so it is set here, before that; a value already in the env wins.
_QUIET_ENV = {
    # "PyTorch was not found": the adapter and stage never need torch (OpenAI-compatible models)
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # a warning per HTTP retry: our network steps report each failure once (staging.network)
    "HF_HUB_VERBOSITY": "error",
}
# Without a terminal a progress bar is carriage-return noise in `kubectl logs` and log files;
# our own progress is a log line (Progress below).
_NO_BARS_ENV = {
    "TQDM_DISABLE": "1",  # tqdm >= 4.66 reads TQDM_<ARG> defaults: lm_eval's bars
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}


def quiet_libraries(verbose: bool = False, tty: bool | None = None) -> None:
    env = {} if verbose else dict(_QUIET_ENV)
    if not (sys.stderr.isatty() if tty is None else tty):
        env |= _NO_BARS_ENV
    for key, value in env.items():
        os.environ.setdefault(key, value)


def setup_logging(
    verbose: bool = False, stream: TextIO | None = None, log_file: Path | None = None
) -> None:
    """Log to `stream` (stderr), and also to `log_file` when given (e.g. results/logs/)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    formatter = _RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = handlers
    debug = verbose or bool(os.environ.get("AIRGAP_EVAL_DEBUG"))
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    quiet_libraries(debug)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


class Progress:
    """Items and bytes done, rate and ETA: a tqdm bar on a TTY, else a log line every
    `interval` seconds (no carriage-return noise in `kubectl logs`)."""

    def __init__(
        self,
        what: str,
        total_items: int,
        total_bytes: int,
        interval: float = 5.0,
        logger: logging.Logger | None = None,
        unit: str = "files",
    ) -> None:
        self.what, self.unit = what, unit
        self.total_items, self.total_bytes = total_items, total_bytes
        self.items = self.bytes = 0
        self.interval = interval
        self.log = logger or logging.getLogger(what)
        self.start = self._last = time.monotonic()
        self._lock = threading.Lock()
        self._bar = None
        if sys.stderr.isatty() and total_bytes:
            from tqdm import tqdm  # only a TTY gets a bar; saves ~50 ms of start-up otherwise

            self._bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=what)

    def advance(self, items: int = 1, nbytes: int = 0) -> None:
        with self._lock:
            self.items += items
            self.bytes += nbytes
            if self._bar is not None:
                self._bar.update(nbytes)
            elif time.monotonic() - self._last >= self.interval:
                self._last = time.monotonic()
                self.log.info(self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = self.bytes / elapsed
        left = self.total_bytes - self.bytes
        eta = f"{left / rate:.0f}s" if rate > 0 and left > 0 else "-"
        return (
            f"{self.items}/{self.total_items} {self.unit}, {_mb(self.bytes)}/{_mb(self.total_bytes)}, "
            f"{_mb(rate)}/s, ETA {eta}"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
