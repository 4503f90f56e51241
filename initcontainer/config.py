"""`airgap-eval sync` settings, resolved in one place: flags > env > secret files > defaults."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.engine import ENGINES, Engine, check_engine
from common.errors import ConfigError
from common.layout import DEFAULT_TEST_DATA, GIT_METADATA
from common.s3settings import TEST_DATA_SECRET_DIR, S3Connection, resolve_connection
from common.storage import folder, s3_uri

if TYPE_CHECKING:
    from initcontainer.git import GitSource

# EvalHub's default download timeout (service.test_data_ref.download_timeout).
SYNC_TIMEOUT_S = 600.0
DEFAULT_WORKERS = 256  # s5cmd's own default: small files need many in flight (boto3 caps at 32)
# EvalHub sets the unified name on newer releases; it wins over the S3-specific one.
TIMEOUT_ENVS = ("TEST_DATA_DOWNLOAD_TIMEOUT", "TEST_DATA_S3_TIMEOUT")

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")


@dataclass(frozen=True)
class SyncConfig:
    bucket: str
    prefix: str  # without surrounding slashes; "" is the whole bucket
    dest: Path
    conn: S3Connection
    timeout_s: float = SYNC_TIMEOUT_S
    workers: int = DEFAULT_WORKERS
    engine: Engine = "auto"

    @property
    def source(self) -> str:
        return s3_uri(self.bucket, folder(self.prefix))


def parse_duration(name: str, raw: str) -> float:
    """Seconds from `600`, `90s`, `10m` or `1h30m` (EvalHub passes Go durations)."""
    text = raw.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _GO_DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ConfigError(
                f"{name}={raw!r} is not a duration",
                f"write {name} as seconds (600) or a Go duration (10m, 1h30m)",
            ) from None
        seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"{name}={raw!r} is not positive", f"set {name} to e.g. 10m")
    return seconds


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Sync an S3 prefix (a folder), or with TEST_DATA_GIT_URL a git ref's "
        "sub-path, into a local directory: verified against manifest.json when the source "
        "holds one, resumable.",
    )
    p.add_argument("--bucket", help="bucket (default: env TEST_DATA_S3_BUCKET)")
    p.add_argument("--prefix", help="folder in the bucket (default: env TEST_DATA_S3_KEY)")
    p.add_argument(
        "--dest", type=Path, default=DEFAULT_TEST_DATA, help="target dir (default: %(default)s)"
    )
    p.add_argument("--endpoint", help="S3 endpoint URL (default: env/secret AWS_S3_ENDPOINT)")
    p.add_argument("--no-verify-ssl", action="store_true", help="skip TLS verification")
    p.add_argument(
        "--secret-dir",
        type=Path,
        default=TEST_DATA_SECRET_DIR,
        help="dir of secret files named like the AWS_* env vars (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        help="overall deadline: seconds or a Go duration like 10m "
        "(default: env TEST_DATA_S3_TIMEOUT, else 10m)",
    )
    p.add_argument("--workers", type=int, help=f"parallel downloads (default: {DEFAULT_WORKERS})")
    p.add_argument(
        "--engine", choices=ENGINES, default="auto", help="auto: s5cmd if found, else boto3"
    )
    p.add_argument(
        "--git-metadata",
        type=Path,
        default=GIT_METADATA,
        help="git source: where the resolved commit is written for EvalHub's sidecar "
        "(default: %(default)s)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def resolve_git_source(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> GitSource:
    """The git source (TEST_DATA_GIT_URL is set): its timeout is --timeout, else
    TEST_DATA_GIT_TIMEOUT, else the unified download timeout, else 10m."""
    # Deferred: git.py imports the manifest model (pydantic, ~0.1 s), which an S3 sync must
    # not pay before its whole-folder copy has started.
    from initcontainer.git import TIMEOUT_ENV as GIT_TIMEOUT_ENV
    from initcontainer.git import resolve_git

    env = os.environ if env is None else env
    timeout_s = SYNC_TIMEOUT_S
    if args.timeout:
        timeout_s = parse_duration("--timeout", args.timeout)
    else:
        for name in (GIT_TIMEOUT_ENV, TIMEOUT_ENVS[0]):
            if raw := env.get(name, "").strip():
                timeout_s = parse_duration(name, raw)
                break
    source = resolve_git(env, args.dest or DEFAULT_TEST_DATA, args.secret_dir, timeout_s,
                         args.git_metadata)  # fmt: skip
    assert source is not None  # the caller checked TEST_DATA_GIT_URL
    return source


def resolve_config(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> SyncConfig:
    """Flags > env > secret files > defaults, once."""
    env = os.environ if env is None else env
    bucket = (args.bucket or env.get("TEST_DATA_S3_BUCKET", "")).strip()
    if not bucket:
        raise ConfigError(
            "no bucket to sync from",
            "set TEST_DATA_S3_BUCKET (or pass --bucket) and TEST_DATA_S3_KEY (the prefix)",
        )
    if not _BUCKET.match(bucket):
        raise ConfigError(
            f"bucket {bucket!r} is not a bucket name",
            "give the bare bucket name (no s3://, no '/'); put the path in TEST_DATA_S3_KEY",
        )
    prefix = args.prefix if args.prefix is not None else env.get("TEST_DATA_S3_KEY", "")
    timeout_s = SYNC_TIMEOUT_S
    if args.timeout:
        timeout_s = parse_duration("--timeout", args.timeout)
    else:
        for name in TIMEOUT_ENVS:
            if raw := env.get(name, "").strip():
                timeout_s = parse_duration(name, raw)
                break
    workers = args.workers
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers} is below 1", "pass --workers 1 or more")
    conn = resolve_connection(
        endpoint=args.endpoint,
        no_verify_ssl=args.no_verify_ssl,
        secret_dir=args.secret_dir,
        env=env,
        read_timeout=min(60.0, timeout_s),
    )
    return SyncConfig(
        bucket=bucket,
        prefix=prefix.strip().strip("/"),
        dest=args.dest or DEFAULT_TEST_DATA,
        conn=conn,
        timeout_s=timeout_s,
        workers=workers or DEFAULT_WORKERS,
        engine=check_engine(args.engine),
    )
