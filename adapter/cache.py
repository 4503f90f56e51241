"""The request cache: finished answers survive a crash, and a rerun of the same job asks the
endpoint only for what is missing.

The file is lm_eval's own (`<cache>_rank0.db`: SqliteDict's table, keyed by lm_eval's
`hash_args`, pickled answers; plain `lm_eval --use_cache` reads it), but we read and write it
instead of lm_eval's `CachingLM`, which asks sqlite (through SqliteDict's thread, a ~36 us
round trip) once per request whether it holds the answer, and writes every answer twice (from
the model's hook as it arrives, again when the batch ends), each write a queue hop to that
thread and its own transaction, which creates and deletes a journal file. That was ~140 us of
CPU a request: 8 s of a full MMLU in EvalHub's 0.5-CPU pod, a quarter of the job. Here the
keys are read once, each answer is kept once, as it arrives, and written with the others of
the last `COMMIT_EVERY_S` in one transaction to a write-ahead log: a killed adapter loses at
most that much of its answers; a stopped or failing one writes them all (`close`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from lm_eval.api.model import CacheHook, hash_args
from sqlitedict import decode, encode

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 0.5
TABLE = "unnamed"  # SqliteDict's default table, the one lm_eval's CachingLM opens


def uncacheable(method: str, args: Any) -> bool:
    """As lm_eval's CachingLM: a sampled generation is never answered from the cache (else
    every repeat would be the same sample)."""
    return method == "generate_until" and bool(args[1].get("do_sample", False))


class RequestCache:
    """Answers by lm_eval's request hash. `keys` is every hash it holds, written or not."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.clock = path, clock
        self._conn = sqlite3.connect(path, check_same_thread=False)
        # a WAL commit appends, no fsync (NORMAL): durable when the process dies
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{TABLE}" (key TEXT PRIMARY KEY, value BLOB)'
        )
        self._conn.commit()
        self.keys: set[str] = {k for (k,) in self._conn.execute(f'SELECT key FROM "{TABLE}"')}
        self._unwritten: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._committed = clock()

    def get(self, key: str) -> Any:
        if key not in self.keys:
            return None
        if key in self._unwritten:
            return self._unwritten[key]
        with self._lock:
            row = self._conn.execute(
                f'SELECT value FROM "{TABLE}" WHERE key = ?', (key,)
            ).fetchone()
        return decode(row[0])

    def put(self, key: str, answer: Any) -> None:
        with self._lock:
            if key in self.keys:  # the same request, so the same answer
                return
            self.keys.add(key)
            self._unwritten[key] = answer
            if self.clock() - self._committed >= COMMIT_EVERY_S:
                self._write()

    def _write(self) -> None:
        """The answers kept since the last write, in one transaction (the lock held)."""
        rows, self._unwritten = self._unwritten, {}
        self._committed = self.clock()
        if rows:
            self._conn.executemany(
                f'REPLACE INTO "{TABLE}" (key, value) VALUES (?, ?)',
                [(k, encode(v)) for k, v in rows.items()],
            )
            self._conn.commit()

    def close(self) -> None:
        with self._lock:
            self._write()
            self._conn.close()


class _Writer(CacheHook):
    """The hook lm_eval's API models report each finished request to."""

    def __init__(self, cache: RequestCache) -> None:
        self.dbdict = None  # lm_eval's own writes stay off
        self.cache = cache
        self.known: dict[Any, str] = {}  # (method, args) -> key, hashed once per request

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        if req is None:  # an inner call (rolling windows) has no request of its own
            return
        try:
            key = self.known[attr, req]
        except (KeyError, TypeError):  # a generation's args hold a dict: not a dict key
            key = hash_args(attr, req)
        self.cache.put(key, res)


class CachingMixin:
    """In front of an lm_eval API model class (see adapter.harness): what the request cache
    holds is answered from it, the rest is asked for, in lm_eval's order."""

    request_cache: RequestCache | None = None
    _writer: _Writer

    def use_request_cache(self, cache: RequestCache) -> None:
        self.request_cache = cache
        self._writer = _Writer(cache)
        self.set_cache_hook(self._writer)  # type: ignore[attr-defined]

    def _through_cache(self, method: str, requests: list[Any], *rest: Any) -> list[Any]:
        ask: Callable[..., list[Any]] = getattr(super(), method)
        cache = self.request_cache
        if cache is None:
            return ask(requests, *rest)
        keys = [
            None if uncacheable(method, r.args) else hash_args(method, r.args) for r in requests
        ]
        answers = [cache.get(k) if k else None for k in keys]
        missing = [r for r, a in zip(requests, answers, strict=True) if a is None]
        log.info("%s: %d of %d answers from the request cache, %d to ask for", method,
                 len(requests) - len(missing), len(requests), len(missing))  # fmt: skip
        known = self._writer.known
        for req, key in zip(requests, keys, strict=True):
            if key is not None:
                with contextlib.suppress(TypeError):  # args holding a dict are hashed again
                    known[method, req.args] = key
        try:
            fresh = iter(ask(missing, *rest) if missing else [])
        finally:
            known.clear()
        answers = [a if a is not None else next(fresh) for a in answers]
        for key, answer in zip(keys, answers, strict=True):
            if key and key not in cache.keys:  # not reported by the model's hook
                cache.put(key, answer)
        return answers

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> Any:
        return self._through_cache("loglikelihood", requests, disable_tqdm)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> Any:
        return self._through_cache("loglikelihood_rolling", requests, disable_tqdm)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> Any:
        return self._through_cache("generate_until", requests, disable_tqdm)
