"""The boto3 engine of the storage layer: a client, botocore errors as typed errors, and
transfers in a thread pool. The s5cmd engine holds one for single small objects."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import replace
from pathlib import Path
from typing import Any

from common.errors import AirgapError, Interrupted, UnreachableError, UnsafePathError
from common.layout import validate_relative_key
from common.logs import register_secret
from common.s3settings import S3Connection
from common.storage import (
    Copy,
    Deadline,
    S3Object,
    error_for_code,
    folder,
    no_credentials,
    s3_uri,
    timed_out,
    unreachable,
    upload_failure,
    worst,
)

_CHUNK = 1 << 20
POOL_CONNECTIONS = 32  # the client's connection pool: more threads would only queue on it


def client(conn: S3Connection) -> Any:
    import boto3  # deferred: ~0.13 s, and only the boto3 paths need it
    from botocore.config import Config

    cfg = Config(
        s3={"addressing_style": "path"},
        connect_timeout=conn.connect_timeout,
        read_timeout=conn.read_timeout,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=POOL_CONNECTIONS,
    )
    verify: bool | str = (conn.ca_bundle or True) if conn.verify_ssl else False
    return boto3.client(
        "s3",
        endpoint_url=conn.endpoint,
        region_name=conn.region,
        aws_access_key_id=conn.access_key,
        aws_secret_access_key=conn.secret_key,
        aws_session_token=conn.session_token,
        config=cfg,
        verify=verify,
    )


def with_default_credentials(conn: S3Connection, what: str) -> S3Connection:
    """No keys configured: take them from the default AWS chain (web identity, container or
    instance role, profiles), resolved once by botocore. Its instance-metadata lookup gives
    up within seconds, where s5cmd's SDK retries an unreachable metadata endpoint for minutes;
    and no credentials at all is the same CONFIG error with either engine."""
    if conn.has_keys:
        return conn
    import botocore.session

    try:
        found = botocore.session.get_session().get_credentials()
    except Exception as e:  # a broken profile or web-identity file
        raise no_credentials(f"{what} ({type(e).__name__}: {e})") from e
    if found is None:
        raise no_credentials(what)
    creds = found.get_frozen_credentials()
    register_secret(creds.secret_key)
    register_secret(creds.token)
    return replace(
        conn, access_key=creds.access_key, secret_key=creds.secret_key, session_token=creds.token
    )


def translate(exc: Exception, conn: S3Connection, bucket: str, what: str) -> AirgapError:
    """A botocore exception -> the typed error that says what to fix."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return error_for_code(code, status, str(exc), conn, bucket, what)
    if isinstance(exc, bx.NoCredentialsError):
        return no_credentials(what)
    if isinstance(exc, (bx.ConnectTimeoutError, bx.ReadTimeoutError)):
        return timed_out(conn, what)
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.SSLError)):
        return unreachable(conn, what, exc)
    return AirgapError(f"S3 failure while {what}: {type(exc).__name__}: {exc}")


class _Cancelled(Exception):
    pass


class Boto3Storage:
    engine = "boto3"
    label = "boto3"

    def __init__(self, conn: S3Connection, bucket: str, workers: int) -> None:
        self.conn, self.bucket = conn, bucket
        self.workers = min(workers, POOL_CONNECTIONS)
        self._s3: Any = None
        self._cancels: set[threading.Event] = set()

    def connect(self) -> None:
        self.s3  # noqa: B018 (creates the client)

    def stop(self) -> None:
        for cancel in list(self._cancels):
            cancel.set()

    @property
    def connected(self) -> bool:
        return self._s3 is not None

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = client(self.conn)
        return self._s3

    def _error(self, exc: Exception, what: str) -> AirgapError:
        return translate(exc, self.conn, self.bucket, what)

    def _transfer_error(self, exc: Exception, what: str) -> AirgapError:
        from botocore.exceptions import ClientError

        err = self._error(exc, what)
        if type(err) is AirgapError and not isinstance(exc, ClientError):
            # A body cut short (server gone mid-stream) is a network failure, not a bug.
            return UnreachableError(
                f"the connection to {self.conn.endpoint or 'AWS S3'} broke while {what}: {exc}",
                "check the S3 server and the network path, then rerun: finished files are kept",
            )
        return err

    def list_folder(self, prefix: str, deadline: Deadline) -> list[S3Object]:
        base = folder(prefix)
        out: list[S3Object] = []
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base
            )
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"]
                    out.append(S3Object(key, key[len(base) :], item["Size"], item.get("ETag", "")))
        except Exception as e:
            raise self._error(e, f"listing {s3_uri(self.bucket, base)}") from e
        return out

    def download(self, copies: Sequence[Copy], deadline: Deadline) -> Generator[Copy, None, None]:
        s3 = self.s3

        def get(c: Copy, cancel: threading.Event) -> None:
            c.path.parent.mkdir(parents=True, exist_ok=True)
            body = s3.get_object(Bucket=self.bucket, Key=c.key)["Body"]
            try:
                with c.path.open("wb") as f:
                    while chunk := body.read(_CHUNK):
                        if cancel.is_set():
                            raise _Cancelled
                        f.write(chunk)
            except BaseException:
                c.path.unlink(missing_ok=True)  # a half-written file never stays (disk full)
                raise

        # A local write that fails (disk full, permissions) is the caller's to report.
        yield from self._pool(get, copies, deadline, "downloading", (_Cancelled, OSError))

    def download_folder(
        self, prefix: str, root: Path, deadline: Deadline
    ) -> Generator[str, None, None]:
        copies = []
        for obj in self.list_folder(prefix, deadline):
            try:
                validate_relative_key(obj.rel)
            except UnsafePathError:
                continue  # never written outside root; the caller's own key check names it
            if not obj.rel.endswith("/"):
                copies.append(Copy(obj.key, root / obj.rel))
        for copy in self.download(copies, deadline):
            yield str(copy.path)

    def upload(self, copies: Sequence[Copy], deadline: Deadline) -> Generator[Copy, None, None]:
        s3 = self.s3

        def put(c: Copy, cancel: threading.Event) -> None:
            s3.upload_file(str(c.path), self.bucket, c.key)

        try:
            yield from self._pool(put, copies, deadline, "uploading", (_Cancelled,))
        except AirgapError as e:
            raise upload_failure(e) from None

    def _pool(
        self,
        one: Callable[[Copy, threading.Event], None],
        copies: Sequence[Copy],
        deadline: Deadline,
        doing: str,
        raw: tuple[type[Exception], ...],
    ) -> Generator[Copy, None, None]:
        if not copies:
            return
        cancel = threading.Event()
        self._cancels.add(cancel)

        def run(c: Copy) -> Copy:
            if cancel.is_set():
                raise _Cancelled
            try:
                one(c, cancel)
            except raw:
                raise
            except Exception as e:
                raise self._transfer_error(e, f"{doing} {c.key}") from e
            return c

        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="s3")
        futures = [pool.submit(run, c) for c in copies]
        errors: list[AirgapError] = []
        timed_out = False
        try:
            for fut in as_completed(futures, timeout=deadline.remaining()):
                try:
                    yield fut.result()
                except AirgapError as e:
                    errors.append(e)
                except _Cancelled:
                    pass
            if cancel.is_set():  # stop() was called
                raise Interrupted(
                    f"{doing} {s3_uri(self.bucket)} stopped", "rerun: finished files are kept"
                )
        except FuturesTimeout:
            timed_out = True
            raise deadline.error(f"{doing} {s3_uri(self.bucket)}") from None
        finally:
            # Running transfers stop at their next chunk. They are waited for (a failed one
            # must not leave others writing while the caller cleans up: a full disk's partial
            # dir), except past the deadline, where a stalled read would hold the exit.
            cancel.set()
            self._cancels.discard(cancel)
            pool.shutdown(wait=not timed_out, cancel_futures=True)
        if errors:
            raise worst(errors, len(copies))

    def read_object(self, key: str, deadline: Deadline | None = None) -> bytes | None:
        try:
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return None
        except Exception as e:
            raise self._error(e, f"reading {s3_uri(self.bucket, key)}") from e

    def write_object(self, key: str, body: bytes) -> None:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        except Exception as e:
            raise self._error(e, f"writing {s3_uri(self.bucket, key)}") from e

    def delete_object(self, key: str) -> None:
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        except Exception as e:
            raise self._error(e, f"deleting {s3_uri(self.bucket, key)}") from e
