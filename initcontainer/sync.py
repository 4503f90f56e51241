"""`sync(config)`: one `Sync` lists the prefix (and reads its manifest.json at the same time),
refuses unsafe keys, skips what is already in place, fetches the rest through the storage
layer, verifies every file and renames it into place as soon as it lands."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_write
from common.errors import ConfigError, IntegrityError, NoSpaceError, NotFoundError
from common.layout import MANIFEST_NAME
from common.logs import Progress
from common.manifest import Manifest, sha256_file
from common.storage import S3Object, folder, s3_uri
from initcontainer.config import SyncConfig
from initcontainer.plan import SyncFile, SyncPlan, apply_manifest, check_keys, decide
from initcontainer.start import INLINE_HASH_BYTES, HashPool, Start, begin
from initcontainer.state import SyncState, partial_root

log = logging.getLogger(__name__)
_REWRITTEN_HINT = "something is rewriting the prefix: rerun once it is done"


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


def sync(
    cfg: SyncConfig, result: SyncResult | None = None, start: Start | None = None
) -> SyncResult:
    """`start`: what `start.begin(cfg)` already set going (the CLI calls it early)."""
    result = result if result is not None else SyncResult()
    started = time.monotonic()
    try:
        Sync(cfg, start or begin(cfg), result).run()
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


class Sync:
    """One sync: its config, storage, deadline and hash pool (from `Start`), its journal, its
    result and the lander that puts each downloaded file in place."""

    def __init__(self, cfg: SyncConfig, start: Start, result: SyncResult) -> None:
        self.cfg, self.start, self.result = cfg, start, result
        self.storage, self.deadline = start.storage, start.deadline
        self.state = SyncState.load(cfg.dest)
        self.lander = _Lander(self.state, result, start.hashes)
        # manifest.json means a complete tree: it lands last, once everything it lists has
        self._pending_manifest: tuple[SyncFile, bytes] | None = None

    def run(self) -> None:
        cfg, storage = self.cfg, self.storage
        self.result.engine = storage.engine
        log.info("syncing %s -> %s (engine %s)", cfg.source, cfg.dest, storage.label)
        try:
            objects, manifest_body = self._list()
            plan = check_keys(objects, cfg.dest)
            if not plan.items:
                raise NotFoundError(
                    f"no objects under {cfg.source} (the prefix is matched as a folder)",
                    "check TEST_DATA_S3_BUCKET / TEST_DATA_S3_KEY (or --bucket / --prefix); "
                    f"`aws s3 ls {s3_uri(cfg.bucket)}` shows what is there",
                )
        except BaseException:
            if self.start.copy is not None:  # nothing was placed: drop what the copy brought
                self.start.copy.stop()
                shutil.rmtree(partial_root(cfg.dest), ignore_errors=True)
            raise
        self.result.files, self.result.bytes = len(plan.items), plan.total_bytes
        try:
            self._run_plan(plan, manifest_body)
        except BaseException as e:
            storage.stop()  # a copy still running (SIGTERM, a failed check) ends with us
            if isinstance(e, NoSpaceError) or getattr(e, "errno", None) == errno.ENOSPC:
                # Partial files would keep the disk full: none stays, from either engine. The
                # whole-folder copy's transfers end first (else they write on after the rmtree).
                if self.start.copy is not None:
                    self.start.copy.stop()
                shutil.rmtree(partial_root(cfg.dest), ignore_errors=True)
                raise self._no_space(plan, e) from None
            raise

    def _no_space(self, plan: SyncPlan, cause: BaseException) -> NoSpaceError:
        """One error for both engines (s5cmd's message, boto3's OSError) and the early check."""
        dest = self.cfg.dest
        needed = sum(i.size for i in plan.fetch) - self.result.downloaded_bytes
        if self._pending_manifest is not None:
            needed += len(self._pending_manifest[1])
        why = cause.message if isinstance(cause, NoSpaceError) else str(cause)
        return NoSpaceError(
            f"no room in {dest}: {_size(max(needed, 0))} still to download, "
            f"{_size(_free(dest))} free (partial downloads removed); {why}",
            _NO_SPACE_HINT.format(dest=dest),
        )

    def _check_space(self, plan: SyncPlan) -> None:
        """Before downloading: what is still to come must fit (what the early copy already
        wrote counts as written)."""
        needed = sum(i.size for i in plan.fetch)
        if self._pending_manifest is not None:
            needed += len(self._pending_manifest[1])
        if needed > _free(self.cfg.dest) + _bytes_under(partial_root(self.cfg.dest)):
            raise NoSpaceError(f"the {len(plan.fetch)} files cannot fit: nothing was downloaded")

    def _list(self) -> tuple[list[S3Object], bytes | None]:
        """The listing, and manifest.json's bytes read at the same time: a fresh sync does
        not wait for a second round trip. Nothing is placed before the keys are checked."""
        prefix, deadline = self.cfg.prefix, self.deadline
        if self._manifest_in_place():
            return self.storage.list_folder(prefix, deadline), None
        key = folder(prefix) + MANIFEST_NAME
        body: list[bytes | None] = [None]

        def read() -> None:
            # The listing decides what is wrong; a failed read is retried as a download.
            with contextlib.suppress(Exception):
                body[0] = self.storage.read_object(key, deadline)
                if body[0] is not None:
                    self.start.manifest_found.set()

        reader = threading.Thread(target=read, name="manifest", daemon=True)
        reader.start()
        objects = self.storage.list_folder(prefix, deadline)
        reader.join(deadline.remaining())
        return objects, body[0]

    def _manifest_in_place(self) -> bool:
        """Our journal says the local manifest.json is the one a previous sync placed."""
        try:
            st = os.stat(self.cfg.dest / MANIFEST_NAME)
        except OSError:
            return False
        entry = self.state.entries.get(MANIFEST_NAME)
        return entry is not None and (entry.size, entry.mtime_ns) == (st.st_size, st.st_mtime_ns)

    def _run_plan(self, plan: SyncPlan, manifest_body: bytes | None) -> None:
        cfg, result, lander = self.cfg, self.result, self.lander
        cfg.dest.mkdir(parents=True, exist_ok=True)
        try:
            manifest, fetched = self._place_manifest(plan, manifest_body)
            if manifest is not None:
                result.manifest = True
                self.start.manifest_found.set()
                apply_manifest(plan, manifest, cfg.source)
            decide(plan, self.state)
            if self._pending_manifest is not None:  # read already; it lands last
                plan.fetch = [i for i in plan.fetch if i.rel != MANIFEST_NAME]
            self._confirm_present(plan)
            fetching = [*plan.fetch, *fetched]  # the manifest fetched first counts as fetched
            log.info(
                "%d of %d files already in place; fetching %d (%.1f MB)",
                len(plan.items) - len(fetching), len(plan.items), len(fetching),
                sum(i.size for i in fetching) / 1e6,
            )  # fmt: skip
            self._check_space(plan)
            fetch_bytes = sum(i.size for i in plan.fetch)
            lander.progress = Progress("sync", len(plan.fetch), fetch_bytes, logger=log)
            try:
                self._fetch(plan, whole_folder=_mostly(fetching, plan.items))
            finally:
                lander.progress.close()
                lander.progress = None
                lander.finish()
            for d in plan.dirs:
                d.mkdir(parents=True, exist_ok=True)
            if self._pending_manifest is not None:
                item, body = self._pending_manifest
                atomic_write(Path(item.path), body)
                lander.placed(item, os.stat(item.path), None)
        finally:
            self.state.compact(keep={i.rel for i in plan.items})
        shutil.rmtree(partial_root(cfg.dest), ignore_errors=True)

    def _fetch(self, plan: SyncPlan, whole_folder: bool) -> None:
        """Copy the whole folder when (nearly) all of it is wanted, deleting what it brings
        that is already in place; fetch the rest (keys holding `..`, objects listed after the
        copy's own listing, or everything when only a few files are missing) one by one.

        The copy is decided here only: `begin` starts it early on a fresh dest, where
        everything is wanted, as a head start."""
        wanted = {i.partial: i for i in plan.fetch}
        copy = self.start.copy
        if copy is None and whole_folder:
            copy = self.start.copy_folder(self.cfg.prefix, partial_root(self.cfg.dest))
        if copy is not None:
            for path, digest in copy:
                if (item := wanted.pop(path, None)) is not None:
                    self.lander.land(item, digest)
                else:  # already in place (the manifest, a rerun's files)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
        by_copy = {i.download: i for i in wanted.values()}
        downloads = self.storage.download(list(by_copy), self.deadline)
        try:
            for done in downloads:
                self.lander.land(by_copy[done])
        finally:
            downloads.close()

    def _place_manifest(
        self, plan: SyncPlan, body: bytes | None
    ) -> tuple[Manifest | None, list[SyncFile]]:
        """manifest.json first (unless ours is current): it decides what the rest must be.
        Returns it and what was fetched for it ([] or its item); it is placed last."""
        item = plan.manifest_item
        if item is None:
            return None, []
        try:
            current = self.state.is_current(item.rel, item.size, item.etag, os.stat(item.path))
        except FileNotFoundError:
            current = False
        if current:
            return self._load_manifest(Path(item.path).read_bytes()), []
        if body is None or len(body) != item.size:  # not read with the listing (or changed)
            body = self.storage.read_object(item.key, self.deadline)
            if body is None:
                raise NotFoundError(
                    f"{item.key} vanished from {self.cfg.source} while syncing", _REWRITTEN_HINT
                )
        if len(body) != item.size:
            raise IntegrityError(
                f"{item.rel}: read {len(body)} bytes, the listing says {item.size}",
                _REWRITTEN_HINT,
            )
        manifest = self._load_manifest(body)  # a broken manifest never lands
        # It lands last (never through partial/: the copy may be writing there); an older one
        # goes now, so a sync that fails half-way leaves no manifest.json claiming the tree.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(item.path)
        self._pending_manifest = (item, body)
        return manifest, [item]

    def _load_manifest(self, body: bytes) -> Manifest:
        try:
            return Manifest.model_validate_json(body)
        except ValueError as e:
            first = str(e).splitlines()[0]
            raise IntegrityError(
                f"manifest.json in {self.cfg.source} is not a valid manifest: {first}",
                "restage the tree (airgap-eval stage) or remove manifest.json from the prefix",
            ) from e

    def _confirm_present(self, plan: SyncPlan) -> None:
        """Files already on disk with the right size: hashing is cheaper than downloading."""
        if not plan.rehash:
            return
        digests = [self.start.hashes.submit(sha256_file, i.path) for i in plan.rehash]
        for item, digest in zip(plan.rehash, digests, strict=True):
            if digest.result() == item.sha256:
                self.state.record(item.rel, os.stat(item.path), item.etag, item.sha256)
                self.result.verified_files += 1
            else:
                plan.fetch.append(item)


_NO_SPACE_HINT = (
    "give {dest} more room: a bigger emptyDir sizeLimit or a PVC (Kubernetes), a bigger "
    "volume elsewhere; then rerun the sync: files already in place are kept"
)


def _free(path: Path) -> int:
    return shutil.disk_usage(path).free


def _bytes_under(root: Path) -> int:
    try:
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    except OSError:  # a file renamed into place while we looked: close enough
        return 0


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB ({n} bytes)"


def _mostly(items: list[SyncFile], everything: list[SyncFile]) -> bool:
    """Copying the whole prefix wastes at most a tenth (files and bytes) of the work."""
    extra = len(everything) - len(items)
    extra_bytes = sum(i.size for i in everything) - sum(i.size for i in items)
    return extra <= len(items) / 10 and extra_bytes <= sum(i.size for i in items) / 10


class _Lander:
    """Verify a downloaded file (size, and sha256 when the manifest lists it) and rename it
    into place: a half-written or wrong file never sits at its final path."""

    def __init__(self, state: SyncState, result: SyncResult, hashes: HashPool) -> None:
        self.state, self.result, self.hashes = state, result, hashes
        self.progress: Progress | None = None
        self.problems: list[str] = []
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()
        self._made: set[str] = set()  # parent dirs known to exist

    def land(self, item: SyncFile, digest: str | Future[str] | None = None) -> None:
        """`digest`: the file's sha256, or its hashing still running (hashed as it landed)."""
        if isinstance(digest, Future):
            if digest.done():
                self.place(item, digest.result())
            else:  # placed by the hashing thread once its digest is ready
                placed: Future[None] = Future()
                digest.add_done_callback(
                    lambda d: _settle(placed, lambda: self.place(item, d.result()))
                )
                self._pending.append(placed)
        elif item.sha256 is None or digest is not None or item.size < INLINE_HASH_BYTES:
            self.place(item, digest)
        else:
            self._pending.append(self.hashes.submit(self.place, item))

    def place(self, item: SyncFile, digest: str | None = None) -> None:
        st = os.stat(item.partial)
        problem = None
        if st.st_size != item.size:
            problem = f"{item.rel}: downloaded {st.st_size} bytes, the listing says {item.size}"
        elif item.sha256 and (digest := digest or sha256_file(item.partial)) != item.sha256:
            problem = f"{item.rel}: sha256 {digest} != manifest {item.sha256}"
        if problem:
            os.unlink(item.partial)
            with self._lock:
                self.problems.append(problem)
            return
        parent = item.path.rpartition("/")[0]
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        os.replace(item.partial, item.path)
        self.placed(item, st, digest if item.sha256 else None)

    def placed(self, item: SyncFile, st: os.stat_result, digest: str | None) -> None:
        """Journal and count a file now at its final path (`digest`: checked against the
        manifest)."""
        self.state.record(item.rel, st, item.etag, digest)
        with self._lock:
            self.result.downloaded_files += 1
            self.result.downloaded_bytes += st.st_size
            self.result.verified_files += digest is not None
        if self.progress is not None:
            self.progress.advance(1, st.st_size)

    def finish(self) -> None:
        """Wait for every pending check (also after a failure: finished files count)."""
        try:
            for fut in self._pending:
                fut.result()
        finally:
            self.hashes.shutdown(wait=True)
        if self.problems:
            raise IntegrityError(
                f"{len(self.problems)} file(s) do not match: {'; '.join(self.problems[:3])}",
                "the bucket's objects differ from its manifest.json: restage or re-upload them",
            )


def _settle(future: Future[None], fn: Callable[[], None]) -> None:
    try:
        fn()
    except BaseException as e:
        future.set_exception(e)
    else:
        future.set_result(None)
