"""The start of a sync, kept light: the CLI calls `begin` before it imports pydantic and the
rest, so on an empty dest the bulk copy is already running while Python finishes starting.

A whole-folder copy runs in a thread (s5cmd never waits on a full pipe while the caller
works). On a fresh dest it starts before the listing is checked: files land only in the
private partial/ dir, and no key holding `..` is copied. Once `hashing` is set (a manifest
exists), each file is hashed as it lands, before the caller asks: a small one by the thread
reading the copy's output (a hop to a pool thread costs more than hashing 20 KB), a large one
in a pool, overlapping the downloads still running.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common.storage import Deadline, Storage, open_storage
from initcontainer.config import SyncConfig
from initcontainer.state import partial_root

# Files below this size are hashed inline (see above); larger ones in a pool.
INLINE_HASH_BYTES = 1 << 20
DEADLINE_HINT = (
    "raise TEST_DATA_S3_TIMEOUT (e.g. 30m) or check the network path to S3; "
    "a rerun keeps the files already in place"
)


class Prefetch:
    _DONE = object()

    def __init__(
        self,
        storage: Storage,
        prefix: str,
        root: Path,
        deadline: Deadline,
        hashing: threading.Event,
    ) -> None:
        self.storage, self.hashing = storage, hashing
        self._hasher: ThreadPoolExecutor | None = None
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        paths = storage.download_folder(prefix, root, deadline)
        self._thread = threading.Thread(target=self._run, args=(paths,), daemon=True)
        self._thread.start()

    def _run(self, paths: Iterator[str]) -> None:
        try:
            for path in paths:
                self._queue.put((path, self._hash(path) if self.hashing.is_set() else None))
        except BaseException as e:
            self._queue.put(e)
            return
        self._queue.put(self._DONE)

    def _hash(self, path: str) -> str | Future[str]:
        from common.manifest import HASH_WORKERS, sha256_file  # imported by then: no cost

        if os.stat(path).st_size < INLINE_HASH_BYTES:
            return sha256_file(path)
        if self._hasher is None:
            self._hasher = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="verify")
        return self._hasher.submit(sha256_file, path)

    def __iter__(self) -> Iterator[tuple[str, str | Future[str] | None]]:
        while True:
            try:
                got = self._queue.get(timeout=0.5)  # a timeout: signals (SIGTERM) get through
            except queue.Empty:
                continue
            if got is self._DONE:
                return
            if isinstance(got, BaseException):
                raise got
            yield got  # type: ignore[misc]

    def close(self) -> None:
        """After the last file: digests still running finish (the lander waits for them)."""
        if self._hasher is not None:
            self._hasher.shutdown(wait=False)

    def stop(self) -> None:
        self.storage.stop()
        self._thread.join(10)
        if self._hasher is not None:
            self._hasher.shutdown(wait=False, cancel_futures=True)


@dataclass
class Start:
    """What `begin` set going: the one storage and deadline of the sync, and the copy."""

    storage: Storage
    deadline: Deadline
    prefetch: Prefetch | None
    manifest_found: threading.Event = field(default_factory=threading.Event)


def begin(cfg: SyncConfig) -> Start:
    deadline = Deadline(cfg.timeout_s, DEADLINE_HINT)
    start = Start(open_storage(cfg.conn, cfg.bucket, cfg.engine, cfg.workers), deadline, None)
    if fresh(cfg.dest):
        root = partial_root(cfg.dest)
        root.mkdir(parents=True, exist_ok=True)
        start.prefetch = Prefetch(start.storage, cfg.prefix, root, deadline, start.manifest_found)
    return start


def fresh(dest: Path) -> bool:
    """Nothing there yet: every file will be fetched, so the copy can start at once."""
    try:
        return not any(dest.iterdir())
    except FileNotFoundError:
        return True
    except OSError:
        return False  # not a dir, not readable: the usual path reports it
