"""One upload pass: hash the results tree, upload what the remote manifest and listing do not
already hold (through the storage layer: s5cmd, boto3 fallback), verify size and MD5 ETag,
then write manifest.json LAST.
A re-run uploads only what changed; `sync_until` retries with backoff up to a deadline."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common.atomic import TMP_SUFFIX
from common.engine import open_storage
from common.errors import (
    AirgapError,
    AuthError,
    ConfigError,
    NotFoundError,
    UnsafePathError,
    UploadError,
)
from common.layout import (
    DONE_MARKER,
    MANIFEST_NAME,
    STATE_DIR_NAME,
    UPLOADED_MARKER,
    validate_relative_key,
)
from common.logs import redact
from common.manifest import HASH_WORKERS, FileEntry, Manifest, iter_tree
from common.storage import Copy, Deadline, S3Object, folder, s3_uri
from sidecar.config import UploadConfig

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_MARKERS = {DONE_MARKER, UPLOADED_MARKER}
# Errors that waiting does not fix: retrying them only burns the deadline.
_FATAL = (AuthError, NotFoundError, ConfigError, UnsafePathError)
_MAX_BACKOFF = 10.0


@dataclass(frozen=True)
class LocalFile:
    rel: str
    source: Path  # what is uploaded: a redacted copy when the original held a secret
    size: int
    sha256: str
    md5: str

    def entry(self) -> FileEntry:
        return FileEntry(size=self.size, sha256=self.sha256)


@dataclass(frozen=True)
class PassResult:
    files: int
    uploaded: int
    bytes: int
    seconds: float


def _digest(path: Path, secrets: list[bytes]) -> tuple[int, str, str, bool]:
    """(size, sha256, md5, holds a secret) in one read; a secret split across two chunks
    is still found (the window keeps the previous chunk's tail)."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    keep = max((len(s) for s in secrets), default=1) - 1
    tail, found, size = b"", False, 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
            if secrets and not found:
                window = tail + chunk
                found = any(s in window for s in secrets)
                tail = window[-keep:] if keep else b""
    return size, sha.hexdigest(), md5.hexdigest(), found


def _redact_copy(src: Path, dst: Path, secrets: list[bytes]) -> None:
    """Line by line: a secret never spans a newline, and samples files can be large."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as fin, dst.open("wb") as fout:
        for line in fin:
            fout.write(redact(line, secrets))


class Scanner:
    """The results tree as LocalFiles; digests of files whose size and mtime did not change
    are reused, so periodic passes over a growing run cost little."""

    def __init__(self, root: Path, secrets: tuple[str, ...]) -> None:
        self.root = root
        self.redacted_dir = root / STATE_DIR_NAME / "redacted"
        self.secrets = [s.encode() for s in secrets]
        self._cache: dict[str, tuple[int, int, LocalFile]] = {}

    def _wanted(self, path: Path) -> bool:
        name = path.name
        if path.parent == self.root and name in _MARKERS:
            return False
        return not (name.startswith(".") and name.endswith(TMP_SUFFIX))  # atomic-write temp files

    def _file(self, rel: str, path: Path) -> LocalFile | None:
        try:
            st = path.stat()
            cached = self._cache.get(rel)
            if cached and cached[:2] == (st.st_size, st.st_mtime_ns):
                return cached[2]
            size, sha, md5, secret = _digest(path, self.secrets)
            source = path
            if secret:
                log.warning("%s holds a secret: uploading a redacted copy", rel)
                source = self.redacted_dir / rel
                _redact_copy(path, source, self.secrets)
                size, sha, md5, _ = _digest(source, [])
        except FileNotFoundError:
            return None  # vanished between listing and reading (a temp file): not ours to keep
        item = LocalFile(rel, source, size, sha, md5)
        self._cache[rel] = (st.st_size, st.st_mtime_ns, item)
        return item

    def scan(self) -> dict[str, LocalFile]:
        paths = {
            p.relative_to(self.root).as_posix(): p for p in iter_tree(self.root) if self._wanted(p)
        }
        with ThreadPoolExecutor(max_workers=HASH_WORKERS) as pool:
            found = pool.map(lambda kv: self._file(*kv), sorted(paths.items()))
            return {f.rel: f for f in found if f is not None}


class Uploader:
    def __init__(self, cfg: UploadConfig, job_id: str, benchmark_id: str) -> None:
        validate_relative_key(f"{job_id}/{benchmark_id}")
        self.cfg = cfg
        self.key_prefix = "/".join(p for p in (cfg.prefix, job_id, benchmark_id) if p)
        self.scanner = Scanner(cfg.results_dir, cfg.secrets)
        self.storage = open_storage(cfg.conn, cfg.bucket, cfg.engine, cfg.workers)
        self.remote: dict[str, FileEntry] | None = None  # what our manifest in S3 lists

    @property
    def uri(self) -> str:
        return s3_uri(self.cfg.bucket, folder(self.key_prefix))

    def _key(self, rel: str) -> str:
        return f"{self.key_prefix}/{rel}"

    def _load_remote(self) -> dict[str, FileEntry]:
        body = self.storage.read_object(self._key(MANIFEST_NAME))
        if body is None:
            return {}  # first upload
        try:
            return Manifest.model_validate_json(body).files
        except ValueError:
            return {}  # unreadable manifest: trust nothing, compare everything

    def manifest_body(self) -> bytes | None:
        """Our manifest as S3 holds it (the OCI export carries the same bytes)."""
        return self.storage.read_object(self._key(MANIFEST_NAME))

    def prepare(self) -> None:
        """While the adapter runs: pay for the client and the remote manifest now, not after
        the terminal status. S3 being down here is no error: the final pass retries."""
        try:
            self.storage.connect()
            self.remote = self._load_remote()
        except AirgapError as e:
            log.debug("S3 not ready yet: %s", e.one_line())

    def _listing(self, deadline: Deadline) -> dict[str, S3Object]:
        return {o.rel: o for o in self.storage.list_folder(self.key_prefix, deadline)}

    def _transfer(self, files: list[LocalFile], deadline: Deadline) -> None:
        copies = [Copy(self._key(f.rel), f.source) for f in files]
        for _ in self.storage.upload(copies, deadline):
            pass

    def sync(self, final: bool, timeout: float) -> PassResult:
        """One pass. `final`: every file must verify, else UploadError. A partial pass (the
        adapter still writing) leaves unverified files out of the manifest for the next pass."""
        start = time.monotonic()
        deadline = Deadline(
            max(timeout, 1.0), "S3 is too slow or down: the files stay in place for a rerun"
        )
        local = self.scanner.scan()
        if self.remote is None:
            self.remote = self._load_remote()
        remote, listing = self.remote, self._listing(deadline)
        todo = [
            f
            for f in local.values()
            if remote.get(f.rel) != f.entry()
            or (obj := listing.get(f.rel)) is None
            or obj.size != f.size
        ]
        failure: AirgapError | None = None
        if todo:
            try:
                self._transfer(todo, deadline)
            except AirgapError as e:
                failure = e  # what did arrive still goes into the manifest: the retry skips it
            listing = self._listing(deadline)
        bad = {f.rel for f in todo if not self._verified(f, listing.get(f.rel))}
        if bad and final and failure is None:
            raise UploadError(
                f"{len(bad)} uploaded file(s) do not match in {self.uri}: "
                + ", ".join(sorted(bad)[:5]),
                "the files were changing during the upload or the store altered them; rerun",
            )
        files = {rel: f.entry() for rel, f in local.items() if rel not in bad}
        if files != remote:
            body = Manifest(files=files).model_dump_json(indent=1).encode()
            self.storage.write_object(self._key(MANIFEST_NAME), body)
            self.remote = files
        if failure is not None:
            raise failure
        sent = [f for f in todo if f.rel not in bad]
        return PassResult(
            len(local), len(sent), sum(f.size for f in sent), time.monotonic() - start
        )

    @staticmethod
    def _verified(f: LocalFile, obj: S3Object | None) -> bool:
        if obj is None or obj.size != f.size:
            return False
        etag = obj.etag.strip('"')
        return "-" in etag or etag == f.md5  # a multipart ETag is no MD5: size only

    def sync_until(self, deadline: Callable[[], float]) -> PassResult:
        """Final upload: retry transient failures with backoff until `deadline()` (monotonic;
        re-read each round, as SIGTERM shortens it). Files stay in place either way."""
        start, delay, attempt = time.monotonic(), 1.0, 0
        while True:
            attempt += 1
            try:
                return self.sync(final=True, timeout=deadline() - time.monotonic())
            except _FATAL:
                raise
            except AirgapError as e:
                left = deadline() - time.monotonic()
                if left <= 0:
                    raise UploadError(
                        f"results not uploaded to {self.uri} after {attempt} attempt(s) in "
                        f"{time.monotonic() - start:.0f} s; last error: {e.message}",
                        f"the files are kept in {self.cfg.results_dir}; when S3 is back run "
                        f"`airgap-eval upload --once --results-dir {self.cfg.results_dir} --dest "
                        f"{s3_uri(self.cfg.bucket, self.cfg.prefix)}` (only missing files are sent)",
                    ) from e
                log.warning(
                    "upload attempt %d failed (%s); retrying in %.0f s",
                    attempt,
                    e.message,
                    min(delay, left),
                )
                _sleep_until(time.monotonic() + min(delay, left), deadline)
                delay = min(delay * 2, _MAX_BACKOFF)


def _sleep_until(wake: float, deadline: Callable[[], float]) -> None:
    """Sleep in short slices so a shortened deadline (SIGTERM) is noticed."""
    while (now := time.monotonic()) < min(wake, deadline()):
        time.sleep(min(0.2, wake - now))
