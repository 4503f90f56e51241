"""Settings precedence (flags > env > secret files > defaults) and timeout parsing."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import ConfigError
from initcontainer.config import SYNC_TIMEOUT_S, parse_duration, parser, resolve_config


def _secrets(d: Path, **files: str) -> Path:
    d.mkdir(exist_ok=True)
    for name, value in files.items():
        (d / name).write_text(value + "\n")  # mounted Secrets often end in a newline
    return d


BASE_ENV = {"TEST_DATA_S3_BUCKET": "env-bucket", "TEST_DATA_S3_KEY": "env/prefix/"}


def _args(secret_dir: Path | None = None, **flags: object) -> argparse.Namespace:
    """The parsed flags, as `airgap-eval sync` would pass them (no secret dir by default)."""
    args = parser("airgap-eval sync").parse_args([])
    for name, value in {"secret_dir": secret_dir, **flags}.items():
        setattr(args, name, value)
    return args


@pytest.mark.parametrize(
    ("env", "secret_files", "flags", "expect"),
    [
        # secret files fill in what the env lacks
        ({}, {"AWS_S3_ENDPOINT": "http://secret:9000", "AWS_ACCESS_KEY_ID": "sk",
              "AWS_SECRET_ACCESS_KEY": "ss"}, {},
         {"endpoint": "http://secret:9000", "access_key": "sk"}),
        # env wins over secret files
        ({"AWS_S3_ENDPOINT": "http://env:9000", "AWS_ACCESS_KEY_ID": "ek",
          "AWS_SECRET_ACCESS_KEY": "es"},
         {"AWS_S3_ENDPOINT": "http://secret:9000", "AWS_ACCESS_KEY_ID": "sk",
          "AWS_SECRET_ACCESS_KEY": "ss"}, {},
         {"endpoint": "http://env:9000", "access_key": "ek"}),
        # AWS_ENDPOINT_URL is the second name for the endpoint
        ({"AWS_ENDPOINT_URL": "http://url:9000"}, {}, {}, {"endpoint": "http://url:9000"}),
        # flags win over env and secret files
        ({"AWS_S3_ENDPOINT": "http://env:9000"}, {"AWS_S3_ENDPOINT": "http://secret:9000"},
         {"endpoint": "http://flag:9000", "bucket": "flag-bucket", "prefix": "flag"},
         {"endpoint": "http://flag:9000", "bucket": "flag-bucket", "prefix": "flag"}),
        # env bucket/prefix, prefix slashes trimmed; no keys: the default AWS chain
        ({}, {}, {}, {"bucket": "env-bucket", "prefix": "env/prefix", "access_key": None}),
        # region from the secret file
        ({}, {"AWS_DEFAULT_REGION": "eu-west-3"}, {}, {"region": "eu-west-3"}),
    ],
)  # fmt: skip
def test_precedence(
    tmp_path: Path, env: dict[str, str], secret_files: dict[str, str],
    flags: dict[str, str], expect: dict[str, object],
) -> None:  # fmt: skip
    cfg = resolve_config(
        _args(_secrets(tmp_path / "secrets", **secret_files), **flags), BASE_ENV | env
    )
    got = {
        "endpoint": cfg.conn.endpoint, "access_key": cfg.conn.access_key,
        "region": cfg.conn.region, "bucket": cfg.bucket, "prefix": cfg.prefix,
    }  # fmt: skip
    assert {k: got[k] for k in expect} == expect


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("600", 600), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("1.5h", 5400), ("250ms", 0.25)],
)
def test_durations(raw: str, seconds: float) -> None:
    assert parse_duration("X", raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["ten", "10 minutes", "-5", "0", "5d", "m"])
def test_bad_durations(raw: str) -> None:
    with pytest.raises(ConfigError, match="X="):
        parse_duration("X", raw)


def test_timeout_sources() -> None:
    assert resolve_config(_args(), BASE_ENV).timeout_s == SYNC_TIMEOUT_S
    assert resolve_config(_args(), BASE_ENV | {"TEST_DATA_S3_TIMEOUT": "2m"}).timeout_s == 120
    both = BASE_ENV | {"TEST_DATA_S3_TIMEOUT": "2m", "TEST_DATA_DOWNLOAD_TIMEOUT": "3m"}
    assert resolve_config(_args(), both).timeout_s == 180
    assert resolve_config(_args(timeout="5"), both).timeout_s == 5


@pytest.mark.parametrize(
    ("env", "flags", "match"),
    [
        ({}, {}, "no bucket"),
        ({"TEST_DATA_S3_BUCKET": "s3://b/p"}, {}, "not a bucket name"),
        (BASE_ENV | {"TEST_DATA_S3_TIMEOUT": "soon"}, {}, "TEST_DATA_S3_TIMEOUT"),
        (BASE_ENV | {"AWS_ACCESS_KEY_ID": "k"}, {}, "AWS_SECRET_ACCESS_KEY is missing"),
        (BASE_ENV | {"AWS_S3_ENDPOINT": "minio:9000"}, {}, "no scheme"),
        (BASE_ENV, {"workers": 0}, "--workers"),
    ],
)
def test_bad_config(env: dict[str, str], flags: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_config(_args(**flags), env)


def test_what_runs_before_the_early_copy_imports_no_pydantic() -> None:
    """The CLI, its config and the sync's start run before the whole-folder copy begins: the
    manifest and status models (pydantic, ~0.1 s) load only once the copy is under way."""
    code = (
        "import sys, initcontainer.cli, initcontainer.config, initcontainer.start\n"
        "print(sorted(m for m in ('pydantic', 'initcontainer.git') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
