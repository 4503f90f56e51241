"""Progress over the whole job (requests done/total, rate, ETA), counted at the LM level.

lm_eval hands the model all requests of one type at once and reports each finished
request to the model's `cache_hook` (that is how its request cache saves partial work).
`ProgressMixin` puts a counting hook in front of that one and learns each request's task
from the batch it is given: no fork of lm_eval's request loop. lm_eval's request cache hands
the model only what it lacks, so the job's size is counted from the tasks' instances, and
what the cache already holds counts as done: a resumed run shows where the job stands.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from lm_eval.api.model import CacheHook, hash_args

from adapter.cache import uncacheable

log = logging.getLogger(__name__)

# An ETA from the first answers is noise (warm-up, the shortest requests first): it is shown
# once this run has answered this share of what it had left, over at least ETA_AFTER_S.
ETA_AFTER_SHARE = 0.05
ETA_AFTER_S = 5.0


def _cached(inst: Any, keys: set[str]) -> bool:
    return not uncacheable(inst.request_type, inst.args) and (
        hash_args(inst.request_type, inst.args) in keys
    )


def _key(method: str, args: Any) -> Any:
    """What finds a request again when its answer comes: its args themselves where they can
    be a dict key (a loglikelihood's two strings), else lm_eval's hash of them."""
    try:
        hash(args)
    except TypeError:
        return hash_args(method, args)
    return method, args


class RunProgress:
    """Thread-safe counters; a log line every `interval` s while requests finish."""

    def __init__(
        self,
        tasks: Mapping[str, Any] | None = None,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tasks = tasks or {}  # leaf task name -> lm_eval task (its instances, once built)
        self.interval, self.clock = interval, clock
        self.total: dict[str, int] = defaultdict(int)
        self.done: dict[str, int] = defaultdict(int)
        self.from_cache = 0
        self._counted = False
        self._from_tasks = False  # totals came from the tasks' instances
        self._left = 0  # what this run had to ask for when it started
        self._answered = 0  # answered in this run
        self._first: float | None = None  # when this run's first answer came
        self._pending: dict[Any, list[str]] = defaultdict(list)  # request key -> task names
        self._lock = threading.Lock()
        self._last_log = 0.0

    def _count_job(self, cache: Any) -> None:
        for name, task in self.tasks.items():
            for inst in getattr(task, "instances", None) or []:
                self.total[name] += inst.repeats
                if cache and _cached(inst, cache):
                    self.done[name] += inst.repeats
                    self.from_cache += inst.repeats
        self._from_tasks = bool(self.total)
        self._left = sum(self.total.values()) - self.from_cache
        if self.from_cache:
            log.info(
                "resuming: %d of %d requests are in the request cache; asking for the rest",
                self.from_cache, sum(self.total.values()),
            )  # fmt: skip

    def expect(self, method: str, requests: list[Any], cache: Any = None) -> None:
        """`requests`: what the model is asked for now; `cache`: the request cache's keys."""
        with self._lock:
            if not self._counted:
                self._counted = True
                self._count_job(cache)
                self._last_log = self.clock()  # the first line after one interval
            for req in requests:
                task = req.task_name or "?"
                if not self._from_tasks:
                    self.total[task] += 1
                    self._left += 1
                self._pending[_key(method, req.args)].append(task)

    def finished(self, method: str, args: Any) -> None:
        if args is None:  # an inner call (rolling windows) with no request of its own
            return
        with self._lock:
            tasks = self._pending.get(_key(method, args))
            if not tasks:
                return
            self.done[tasks.pop()] += 1
            now = self.clock()
            self._answered += 1
            if self._first is None:
                self._first = now
            due = now - self._last_log >= self.interval
            if due:
                self._last_log = now
        if due:  # outside the lock: line() takes it again
            log.info(self.line())

    def _eta(self, now: float) -> tuple[float, float | None]:
        """This run's rate and the ETA, None until it means something."""
        if self._first is None:
            return 0.0, None
        elapsed = now - self._first
        rate = self._answered / elapsed if elapsed > 0 else 0.0
        left = sum(self.total.values()) - sum(self.done.values())
        enough = self._answered >= max(1, ETA_AFTER_SHARE * self._left)
        if rate <= 0 or left <= 0 or elapsed < ETA_AFTER_S or not enough:
            return rate, None
        return rate, left / rate

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            rate, eta = self._eta(self.clock())
            return {
                "requests": {
                    "done": sum(self.done.values()),
                    "total": sum(self.total.values()),
                    "from_cache": self.from_cache,
                    "rate_per_s": round(rate, 2),
                    "eta_s": None if eta is None else round(eta),
                },
                "tasks": {t: {"done": self.done[t], "total": n} for t, n in self.total.items()},
            }

    def line(self) -> str:
        s = self.snapshot()
        job = s["requests"]
        share = 100 * job["done"] / job["total"] if job["total"] else 0.0
        cached = f", {job['from_cache']} from the request cache" if job["from_cache"] else ""
        eta = "" if job["eta_s"] is None else f", ETA {job['eta_s']} s"
        tasks = ", ".join(f"{t} {c['done']}/{c['total']}" for t, c in s["tasks"].items())
        return (
            f"requests: {job['done']}/{job['total']} ({share:.0f}%{cached}), "
            f"{job['rate_per_s']}/s{eta} -- {tasks}"
        )


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

    def _request_cache(self) -> Any:
        cache = getattr(self, "request_cache", None)  # adapter.cache.CachingMixin's
        return cache.keys if cache is not None else None

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> Any:
        self.progress.expect("loglikelihood", requests, self._request_cache())
        return super().loglikelihood(requests, disable_tqdm or None)  # type: ignore[misc]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> Any:
        self.progress.expect("loglikelihood_rolling", requests, self._request_cache())
        return super().loglikelihood_rolling(requests, disable_tqdm or None)  # type: ignore[misc]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> Any:
        self.progress.expect("generate_until", requests, self._request_cache())
        return super().generate_until(requests, disable_tqdm or None)  # type: ignore[misc]
