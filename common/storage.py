"""The storage layer: list a folder, download many objects, upload many files.

Two engines behind one interface: s5cmd (one process moves every file with parallel workers,
common/s5cmd.py) and boto3 (a thread pool, common/s3.py). `common.engine.open_storage` picks
one; sync, the sidecar and stage move bytes only through it, and only common/s5cmd.py runs the
s5cmd binary.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from common.errors import (
    AirgapError,
    AuthError,
    ConfigError,
    DeadlineError,
    NoSpaceError,
    NotFoundError,
    UnreachableError,
    UploadError,
)

if TYPE_CHECKING:
    from common.s3settings import S3Connection

_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "403",
    "401",
}
_NOT_FOUND_CODES = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}
_SERVER_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "500", "502", "503", "504"}
# When several transfers fail, the error that tells the operator most is the one reported.
_PRIORITY = (NoSpaceError, AuthError, ConfigError, NotFoundError, UnreachableError, DeadlineError)


@dataclass(frozen=True)
class S3Object:
    key: str
    rel: str  # key relative to the prefix folder
    size: int
    etag: str


@dataclass(frozen=True)
class Copy:
    """One transfer between object `key` and local file `path` (either direction)."""

    key: str
    path: Path


class Deadline:
    """An overall time limit: every wait of a transfer is bounded by it."""

    def __init__(self, seconds: float, hint: str) -> None:
        self.seconds, self.hint = seconds, hint
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def error(self, doing: str) -> DeadlineError:
        return DeadlineError(f"{doing} did not finish within {self.seconds:g} s", self.hint)


class Storage(Protocol):
    """One bucket through one engine. Transfers yield each Copy once its bytes are in place
    (downloads: in `path`; uploads: in the object) and raise the most telling error of those
    that failed after the rest are done."""

    engine: str  # "s5cmd" or "boto3"
    label: str  # what the log names: the s5cmd binary, or "boto3"

    def list_folder(self, prefix: str, deadline: Deadline) -> list[S3Object]: ...

    def download(
        self, copies: Sequence[Copy], deadline: Deadline
    ) -> Generator[Copy, None, None]: ...

    def download_folder(
        self, prefix: str, root: Path, deadline: Deadline
    ) -> Generator[str, None, None]:
        """Every object below the folder into `root/<key below prefix>`, each path yielded (a
        string: thousands of Paths cost more than the bookkeeping around them) as it lands;
        keys holding `..` or not plain relative paths are skipped (never written
        outside root): fetch them, if wanted, with `download`. One listing fewer than
        list + download for a caller that wants (nearly) the whole folder."""
        ...

    def upload(self, copies: Sequence[Copy], deadline: Deadline) -> Generator[Copy, None, None]: ...

    def stop(self) -> None:
        """Stop every transfer still running (from any thread): their iterators then end
        with whatever error the engine reports."""
        ...

    def connect(self) -> None:
        """Pay now for what single-object calls need (boto3's import and client, ~0.3 s on a
        loaded 2-core box): a caller with idle time before its critical path (the sidecar
        while the adapter runs) calls this. Listings and reads then use the client too."""
        ...

    # Single small objects (manifests): no bulk engine pays off for these.
    def read_object(self, key: str, deadline: Deadline | None = None) -> bytes | None:
        """The object's bytes, None when there is no such key."""
        ...

    def write_object(self, key: str, body: bytes) -> None: ...

    def delete_object(self, key: str) -> None: ...


def s3_uri(bucket: str, key: str = "") -> str:
    """The one way an `s3://` URI is written: a key ending in '/' (see `folder`) is a folder."""
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> (bucket, prefix without surrounding slashes)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ConfigError(f"{uri!r} is not an s3:// URI", "write it as s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


def folder(prefix: str) -> str:
    """A prefix matched as a folder: `data` must not match `data-old/`."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def error_for_code(
    code: str, status: str, detail: str, conn: S3Connection, bucket: str, what: str
) -> AirgapError:
    """An S3 error code / HTTP status (from botocore or s5cmd) -> the typed error."""
    where = conn.endpoint or "AWS S3"
    if code in _AUTH_CODES or status in ("401", "403"):
        return AuthError(
            f"{where} refused the credentials while {what} ({code or status})",
            "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (env or secret files) and "
            f"that they may read and write bucket {bucket!r}",
        )
    if code in _NOT_FOUND_CODES or status == "404":
        return NotFoundError(
            f"bucket or key not found while {what}: {s3_uri(bucket)} ({code or status})",
            "check the bucket name (TEST_DATA_S3_BUCKET / --bucket / --dest) and the endpoint",
        )
    if status.startswith("5") or code in _SERVER_CODES:
        return UnreachableError(
            f"{where} failed on its side while {what} ({code or status}), after retries",
            "the S3 server is unhealthy: check its status and logs, then rerun",
        )
    return AirgapError(f"S3 error while {what}: {code} {detail}", "check the S3 server logs")


def no_space(what: str, detail: object) -> NoSpaceError:
    """A local write found the filesystem full (the caller knows the destination and sizes)."""
    return NoSpaceError(
        f"no space left on the device while {what}: {detail}",
        "give the destination more room (a bigger emptyDir sizeLimit or a PVC)",
    )


def unreachable(conn: S3Connection, what: str, detail: object) -> UnreachableError:
    return UnreachableError(
        f"cannot reach S3 endpoint {conn.endpoint or 'AWS S3'} while {what}: {detail}",
        "check AWS_S3_ENDPOINT (scheme, host, port) and the network path; for a private "
        "CA set AWS_CA_BUNDLE",
    )


def timed_out(conn: S3Connection, what: str, detail: object = None) -> DeadlineError:
    return DeadlineError(
        f"S3 endpoint {conn.endpoint or 'AWS S3'} timed out while {what}"
        + (f": {detail}" if detail is not None else ""),
        "check that the endpoint is reachable from this pod (NetworkPolicy, proxy) "
        "or raise the timeout",
    )


def no_credentials(what: str) -> ConfigError:
    return ConfigError(
        f"no S3 credentials found while {what}",
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (env or secret files), or run "
        "with an IAM role",
    )


def upload_failure(err: AirgapError) -> AirgapError:
    """An upload error no rule classified is still an upload failure (exit 12), not a bug."""
    if type(err) is AirgapError:
        return UploadError(err.message, err.hint or "check the S3 endpoint and rerun")
    return err


def worst(errors: list[AirgapError], total: int) -> AirgapError:
    """Many failed transfers, one error: the kind that tells the operator most, with a count."""
    chosen = errors[0]
    for kind in _PRIORITY:
        if found := next((e for e in errors if isinstance(e, kind)), None):
            chosen = found
            break
    if total <= 1:
        return chosen
    return type(chosen)(f"{len(errors)} of {total} transfers failed; {chosen.message}", chosen.hint)
