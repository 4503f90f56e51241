"""The request cache: finished answers survive a crash, and a rerun of the same job asks the
endpoint only for what is missing.

The file is lm_eval's own (`<cache>_rank0.db`, a SqliteDict keyed by lm_eval's `hash_args`,
pickled answers), but we read and write it instead of lm_eval's `CachingLM`, which asks
sqlite's thread once per request whether it holds the answer (a ~36 us round trip) and
writes every answer twice (from the model's hook as it arrives, again when the batch ends),
each write its own transaction that creates and deletes a journal file. That was ~140 us of
CPU a request: 8 s of a full MMLU in EvalHub's 0.5-CPU pod, a quarter of the job. Here the
keys are read once, each answer is written once, as it arrives, and the writes go to a
write-ahead log in one transaction every `COMMIT_EVERY_S`: a killed adapter loses at most
that much of its answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from lm_eval.api.model import CacheHook, hash_args

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 0.5


def uncacheable(method: str, args: Any) -> bool:
    """As lm_eval's CachingLM: a sampled generation is never answered from the cache (else
    every repeat would be the same sample)."""
    return method == "generate_until" and bool(args[1].get("do_sample", False))


class RequestCache:
    """Answers by lm_eval's request hash. `keys` is every hash the file holds."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        from sqlitedict import SqliteDict

        self.path, self.clock = path, clock
        # autocommit off: writes queue up in one transaction until commit(); no stack
        # trace captured per write (sqlitedict's outer_stack)
        self._db = SqliteDict(path, autocommit=False, journal_mode="WAL", outer_stack=False)
        self.keys: set[str] = set(self._db.keys())
        self._committed = clock()

    def get(self, key: str) -> Any:
        return self._db[key] if key in self.keys else None

    def put(self, key: str, answer: Any) -> None:
        if key in self.keys:  # the same request, so the same answer
            return
        self._db[key] = answer  # queued to sqlite's thread; returns at once
        self.keys.add(key)
        now = self.clock()
        if now - self._committed >= COMMIT_EVERY_S:
            self._committed = now
            self._db.commit(blocking=False)

    def close(self) -> None:
        """Commit what is queued and close the file (sqlitedict's close does not commit)."""
        self._db.commit()
        self._db.close()


class _Writer(CacheHook):
    """The hook lm_eval's API models report each finished request to."""

    def __init__(self, cache: RequestCache) -> None:
        self.dbdict = None  # lm_eval's own writes stay off
        self.cache = cache

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        if req is not None:  # an inner call (rolling windows) has no request of its own
            self.cache.put(hash_args(attr, req), res)


class CachingMixin:
    """In front of an lm_eval API model class (see adapter.harness): what the request cache
    holds is answered from it, the rest is asked for, in lm_eval's order."""

    request_cache: RequestCache | None = None

    def use_request_cache(self, cache: RequestCache) -> None:
        self.request_cache = cache
        self.set_cache_hook(_Writer(cache))  # type: ignore[attr-defined]

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
        fresh = iter(ask(missing, *rest) if missing else [])
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
