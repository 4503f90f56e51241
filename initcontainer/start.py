"""The start of a sync, kept light: the CLI calls `begin` before it imports pydantic and the
rest, so on an empty dest the whole-folder copy is already running while Python finishes
starting.

`begin` opens the sync's one storage, deadline and hash pool. The copy runs in a thread (s5cmd
never waits on a full pipe while the caller works); on a fresh dest, where the sync would
choose it anyway (everything is wanted), it starts before the listing is checked: files land
only in the private partial/ dir, and no key holding `..` is copied. Once manifest.json is
found, each file is hashed as it lands, before the caller asks: a small one by the thread that
meets it (a hop to a pool thread costs more than hashing 20 KB), a large one in the pool,
overlapping the downloads still running.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from common.engine import open_storage
from common.storage import Deadline, Storage
from initcontainer.config import SyncConfig
from initcontainer.state import partial_root

# Files below this size are hashed inline (see above); larger ones in the pool.
INLINE_HASH_BYTES = 1 << 20
DEADLINE_HINT = (
    "raise TEST_DATA_S3_TIMEOUT (e.g. 30m) or check the network path to S3; "
    "a rerun keeps the files already in place"
)
T = TypeVar("T")


class HashPool:
    """The sync's one pool for hashing large files, its threads started on first use."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        with self._lock:
            if self._pool is None:
                from common.manifest import HASH_WORKERS  # imported by then: no cost

                self._pool = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="hash")
        return self._pool.submit(fn, *args)

    def shutdown(self, wait: bool) -> None:
        """`wait`: let the running hashes finish; either way, none queued starts."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)


class FolderCopy:
    """The whole folder copied into `root`: iterate for (path, its sha256 / hashing / None)."""

    _DONE = object()

    def __init__(
        self,
        storage: Storage,
        prefix: str,
        root: Path,
        deadline: Deadline,
        hashes: HashPool,
        manifest_found: threading.Event,
    ) -> None:
        self.storage, self.hashes, self.manifest_found = storage, hashes, manifest_found
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        paths = storage.download_folder(prefix, root, deadline)
        self._thread = threading.Thread(target=self._run, args=(paths,), daemon=True)
        self._thread.start()

    def _run(self, paths: Iterator[str]) -> None:
        try:
            for path in paths:
                digest = self._hash(path) if self.manifest_found.is_set() else None
                self._queue.put((path, digest))
        except BaseException as e:
            self._queue.put(e)
            return
        self._queue.put(self._DONE)

    def _hash(self, path: str) -> str | Future[str]:
        from common.manifest import sha256_file  # imported by then: no cost

        if os.stat(path).st_size < INLINE_HASH_BYTES:
            return sha256_file(path)
        return self.hashes.submit(sha256_file, path)

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

    def stop(self) -> None:
        self.storage.stop()
        self._thread.join(10)
        self.hashes.shutdown(wait=False)


@dataclass
class Start:
    """What `begin` set going: the sync's one storage, deadline and hash pool, and on a fresh
    dest the whole-folder copy (a head start)."""

    storage: Storage
    deadline: Deadline
    hashes: HashPool = field(default_factory=HashPool)
    # Set once manifest.json is read: the copy then hashes each file as it lands.
    manifest_found: threading.Event = field(default_factory=threading.Event)
    copy: FolderCopy | None = None

    def copy_folder(self, prefix: str, root: Path) -> FolderCopy:
        if self.copy is None:
            root.mkdir(parents=True, exist_ok=True)
            self.copy = FolderCopy(
                self.storage, prefix, root, self.deadline, self.hashes, self.manifest_found
            )
        return self.copy


def begin(cfg: SyncConfig) -> Start:
    start = Start(
        open_storage(cfg.conn, cfg.bucket, cfg.engine, cfg.workers),
        Deadline(cfg.timeout_s, DEADLINE_HINT),
    )
    if fresh(cfg.dest):
        start.copy_folder(cfg.prefix, partial_root(cfg.dest))
    return start


def fresh(dest: Path) -> bool:
    """Nothing there yet: every file will be fetched, so the copy can start at once."""
    try:
        return not any(dest.iterdir())
    except FileNotFoundError:
        return True
    except OSError:
        return False  # not a dir, not readable: the usual path reports it
