"""Per-task progress (requests done/total, rate, ETA), counted at the LM level.

lm_eval hands the model all requests of one type at once and reports each finished
request to the model's `cache_hook` (that is how its request cache saves partial work).
`ProgressMixin` puts a counting hook in front of that one and learns each request's task
from the batch it is given: no fork of lm_eval's request loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any

from lm_eval.api.model import CacheHook, hash_args

log = logging.getLogger(__name__)


class RunProgress:
    """Thread-safe counters; a log line every `interval` s while requests finish."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.total: dict[str, int] = defaultdict(int)
        self.done: dict[str, int] = defaultdict(int)
        self.started: dict[str, float] = {}
        self._pending: dict[str, list[str]] = defaultdict(list)  # request hash -> task names
        self._lock = threading.Lock()
        self._last_log = 0.0

    def expect(self, method: str, requests: list[Any]) -> None:
        with self._lock:
            now = time.monotonic()
            for req in requests:
                task = req.task_name or "?"
                self.total[task] += 1
                self.started.setdefault(task, now)
                self._pending[hash_args(method, req.args)].append(task)

    def finished(self, method: str, args: Any) -> None:
        if args is None:  # an inner call (rolling windows) with no request of its own
            return
        with self._lock:
            tasks = self._pending.get(hash_args(method, args))
            if not tasks:
                return
            self.done[tasks.pop()] += 1
            due = time.monotonic() - self._last_log >= self.interval
            if due:
                self._last_log = time.monotonic()
        if due:  # outside the lock: line() takes it again
            log.info(self.line())

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            now = time.monotonic()
            out = {}
            for task, total in self.total.items():
                done = self.done[task]
                rate = done / max(now - self.started[task], 1e-6)
                eta = (total - done) / rate if rate > 0 and done < total else None
                out[task] = {
                    "done": done,
                    "total": total,
                    "rate_per_s": round(rate, 2),
                    "eta_s": None if eta is None else round(eta),
                }
            return out

    def line(self) -> str:
        parts = []
        for task, s in self.snapshot().items():
            eta = "-" if s["eta_s"] is None else f"{s['eta_s']}s"
            parts.append(f"{task} {s['done']}/{s['total']} ({s['rate_per_s']}/s, ETA {eta})")
        return "requests: " + "; ".join(parts)


class _CountingHook(CacheHook):
    def __init__(self, inner: CacheHook, progress: RunProgress) -> None:
        self.inner, self.progress = inner, progress
        self.dbdict = inner.dbdict

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        self.inner.add_partial(attr, req, res)
        self.progress.finished(attr, req)


class ProgressMixin:
    """Mixed in front of an lm_eval API model class (see adapter/harness.py).

    lm_eval passes `disable_tqdm=False` to its bars; None lets tqdm drop them when stderr is
    not a terminal (our progress lines above say the same without carriage returns)."""

    progress: RunProgress

    def set_cache_hook(self, cache_hook: CacheHook) -> None:
        super().set_cache_hook(_CountingHook(cache_hook, self.progress))  # type: ignore[misc]

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> Any:
        self.progress.expect("loglikelihood", requests)
        return super().loglikelihood(requests, disable_tqdm or None)  # type: ignore[misc]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> Any:
        self.progress.expect("loglikelihood_rolling", requests)
        return super().loglikelihood_rolling(requests, disable_tqdm or None)  # type: ignore[misc]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> Any:
        self.progress.expect("generate_until", requests)
        return super().generate_until(requests, disable_tqdm or None)  # type: ignore[misc]
