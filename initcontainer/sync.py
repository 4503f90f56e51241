"""`sync(config)`: list the prefix, refuse unsafe keys, skip what is already in place, fetch
the rest, verify every file and rename it into place as soon as it lands."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError, IntegrityError, NotFoundError
from common.logs import Progress
from common.manifest import HASH_WORKERS, Manifest, hash_files, sha256_file
from initcontainer.config import SyncConfig
from initcontainer.deadline import Deadline
from initcontainer.plan import Item, Plan, apply_manifest, check_keys, decide
from initcontainer.state import PARTIAL_NAME, SyncState, state_dir
from initcontainer.transfer import COMMAND_FILE, Transfer

log = logging.getLogger("airgap-eval.sync")


@dataclass
class SyncResult:
    """What the status record's `progress` shows, filled in as the sync goes."""

    engine: str = ""
    files: int = 0
    bytes: int = 0
    downloaded_files: int = 0
    downloaded_bytes: int = 0
    verified_files: int = 0  # checked against the manifest's sha256 in this run
    manifest: bool = False

    def as_progress(self) -> dict[str, Any]:
        return asdict(self)


class _Lander:
    """Verify a downloaded file (size, and sha256 when the manifest lists it) and rename it
    into place: a half-written or wrong file never sits at its final path."""

    def __init__(self, state: SyncState, result: SyncResult) -> None:
        self.state, self.result = state, result
        self.progress: Progress | None = None
        self.problems: list[str] = []
        self._pool = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="verify")
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()

    def land(self, item: Item) -> None:
        if item.sha256 is None:
            self.place(item)
        else:  # hashing overlaps with the downloads still running
            self._pending.append(self._pool.submit(self.place, item))

    def place(self, item: Item) -> None:
        size = item.partial.stat().st_size
        problem = digest = None
        if size != item.size:
            problem = f"{item.rel}: downloaded {size} bytes, the listing says {item.size}"
        elif item.sha256 and (digest := sha256_file(item.partial)) != item.sha256:
            problem = f"{item.rel}: sha256 {digest} != manifest {item.sha256}"
        if problem:
            item.partial.unlink()
            with self._lock:
                self.problems.append(problem)
            return
        item.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(item.partial, item.path)
        self.state.record(item.rel, item.path, item.etag, digest)
        with self._lock:
            self.result.downloaded_files += 1
            self.result.downloaded_bytes += size
            self.result.verified_files += digest is not None
        if self.progress is not None:
            self.progress.advance(1, size)

    def finish(self) -> None:
        """Wait for every pending check (also after a failure: finished files count)."""
        try:
            for fut in self._pending:
                fut.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self.problems:
            raise IntegrityError(
                f"{len(self.problems)} file(s) do not match: {'; '.join(self.problems[:3])}",
                "the bucket's objects differ from its manifest.json: restage or re-upload them",
            )


def sync(cfg: SyncConfig, result: SyncResult | None = None) -> SyncResult:
    result = result if result is not None else SyncResult()
    started = time.monotonic()
    deadline = Deadline(cfg.timeout_s)
    transfer = Transfer(cfg, deadline)
    result.engine = transfer.engine
    log.info("syncing %s -> %s (engine %s)", cfg.source, cfg.dest, transfer.binary or "boto3")

    plan = check_keys(transfer.list_objects(), cfg.dest)
    if not plan.items:
        raise NotFoundError(
            f"no objects under {cfg.source} (the prefix is matched as a folder)",
            "check TEST_DATA_S3_BUCKET / TEST_DATA_S3_KEY (or --bucket / --prefix); "
            f"`aws s3 ls s3://{cfg.bucket}/` shows what is there",
        )
    result.files, result.bytes = len(plan.items), plan.total_bytes
    try:
        _sync_plan(cfg, plan, transfer, result)
    except OSError as e:
        raise ConfigError(
            f"cannot write {e.filename or cfg.dest}: {e.strerror or e}",
            f"make {cfg.dest} writable by UID {os.getuid()} and check its free space",
        ) from e
    log.info(
        "synced %d files (%.1f MB) to %s in %.2f s: downloaded %d (%.1f MB), %d checked "
        "against manifest.json",
        result.files, result.bytes / 1e6, cfg.dest, time.monotonic() - started,
        result.downloaded_files, result.downloaded_bytes / 1e6, result.verified_files,
    )  # fmt: skip
    return result


def _sync_plan(cfg: SyncConfig, plan: Plan, transfer: Transfer, result: SyncResult) -> None:
    cfg.dest.mkdir(parents=True, exist_ok=True)
    state = SyncState.load(cfg.dest)
    lander = _Lander(state, result)
    try:
        manifest = _manifest(cfg, plan, state, transfer, lander)
        if manifest is not None:
            result.manifest = True
            apply_manifest(plan, manifest, cfg.source)
        decide(plan, state)
        _confirm_present(plan, state, result)
        fetch_bytes = sum(i.size for i in plan.fetch)
        log.info(
            "%d of %d files already in place; fetching %d (%.1f MB)",
            len(plan.items) - len(plan.fetch), len(plan.items), len(plan.fetch), fetch_bytes / 1e6,
        )  # fmt: skip
        lander.progress = Progress("sync", len(plan.fetch), fetch_bytes, logger=log)
        downloads = transfer.download(plan.fetch, plan.items)
        try:
            for item in downloads:
                lander.land(item)
        finally:
            downloads.close()
            lander.progress.close()
            lander.finish()
        for d in plan.dirs:
            d.mkdir(parents=True, exist_ok=True)
    finally:
        state.compact(keep={i.rel for i in plan.items})
    shutil.rmtree(state_dir(cfg.dest) / PARTIAL_NAME, ignore_errors=True)
    (state_dir(cfg.dest) / COMMAND_FILE).unlink(missing_ok=True)


def _manifest(
    cfg: SyncConfig, plan: Plan, state: SyncState, transfer: Transfer, lander: _Lander
) -> Manifest | None:
    """Fetch manifest.json first (unless ours is current): it decides what the rest must be."""
    item = plan.manifest_item
    if item is None:
        return None
    try:
        current = state.is_current(item.rel, item.size, item.etag, os.stat(item.path))
    except FileNotFoundError:
        current = False
    if current:
        return _load_manifest(item.path, cfg)
    list(transfer.download([item], plan.items))
    manifest = _load_manifest(item.partial, cfg)  # a broken manifest never lands
    lander.place(item)
    return manifest


def _load_manifest(path: Path, cfg: SyncConfig) -> Manifest:
    try:
        return Manifest.load(path)
    except ValueError as e:
        first = str(e).splitlines()[0]
        raise IntegrityError(
            f"manifest.json in {cfg.source} is not a valid manifest: {first}",
            "restage the tree (airgap-eval stage) or remove manifest.json from the prefix",
        ) from e


def _confirm_present(plan: Plan, state: SyncState, result: SyncResult) -> None:
    """Files already on disk with the right size: hashing is cheaper than downloading."""
    if not plan.rehash:
        return
    digests = hash_files(i.path for i in plan.rehash)
    for item in plan.rehash:
        if digests[item.path] == item.sha256:
            state.record(item.rel, item.path, item.etag, item.sha256)
            result.verified_files += 1
        else:
            plan.fetch.append(item)
