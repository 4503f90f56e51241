"""`airgap-eval sync` settings, resolved in one place: flags > env > secret files > defaults."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.engine import Engine, check_engine
from common.errors import ConfigError
from common.layout import DEFAULT_TEST_DATA
from common.s3settings import TEST_DATA_SECRET_DIR, S3Connection, resolve_connection
from common.storage import folder, s3_uri

# EvalHub's default download timeout (service.test_data_ref.download_timeout).
DEFAULT_TIMEOUT_S = 600.0
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
    timeout_s: float = DEFAULT_TIMEOUT_S
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


def resolve_config(
    *,
    bucket: str | None = None,
    prefix: str | None = None,
    dest: Path | None = None,
    endpoint: str | None = None,
    no_verify_ssl: bool = False,
    secret_dir: Path | None = TEST_DATA_SECRET_DIR,
    timeout: str | None = None,
    workers: int | None = None,
    engine: Engine = "auto",
    env: Mapping[str, str] | None = None,
) -> SyncConfig:
    env = os.environ if env is None else env
    bucket = (bucket or env.get("TEST_DATA_S3_BUCKET", "")).strip()
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
    if prefix is None:
        prefix = env.get("TEST_DATA_S3_KEY", "")
    timeout_s = DEFAULT_TIMEOUT_S
    if timeout:
        timeout_s = parse_duration("--timeout", timeout)
    else:
        for name in TIMEOUT_ENVS:
            if raw := env.get(name, "").strip():
                timeout_s = parse_duration(name, raw)
                break
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers} is below 1", "pass --workers 1 or more")
    conn = resolve_connection(
        endpoint=endpoint,
        no_verify_ssl=no_verify_ssl,
        secret_dir=secret_dir,
        env=env,
        read_timeout=min(60.0, timeout_s),
    )
    return SyncConfig(
        bucket=bucket,
        prefix=prefix.strip().strip("/"),
        dest=dest or DEFAULT_TEST_DATA,
        conn=conn,
        timeout_s=timeout_s,
        workers=workers or DEFAULT_WORKERS,
        engine=check_engine(engine),
    )
