"""Helpers for the sync tests: put a tree in a bucket, build a config for the test server,
run the CLI as a pod would (a subprocess with env vars)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.manifest import FileEntry, Manifest, sha256_file
from common.s3 import client
from initcontainer.config import SyncConfig
from testbed.localservers import SeaweedS3


def put_tree(server: SeaweedS3, bucket: str, files: dict[str, bytes]) -> None:
    s3 = client(server.connection())
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def manifest_for(files: dict[str, bytes], prefix: str) -> bytes:
    """A manifest.json for the files under `prefix/`, as `airgap-eval stage` writes it."""
    import hashlib

    base = prefix.rstrip("/") + "/"
    entries = {
        k[len(base) :]: FileEntry(size=len(v), sha256=hashlib.sha256(v).hexdigest())
        for k, v in files.items()
        if k.startswith(base) and not k.endswith("/")
    }
    return Manifest(files=entries).model_dump_json().encode()


def tree(root: Path) -> dict[str, bytes]:
    """Every file below root except our state dir, relative path -> bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".airgap-eval" not in p.relative_to(root).parts
    }


def digests(root: Path) -> dict[str, str]:
    return {rel: sha256_file(root / rel) for rel in tree(root)}


@pytest.fixture
def make_config(s3_server: SeaweedS3, tmp_path: Path) -> Callable[..., SyncConfig]:
    def make(bucket: str, prefix: str, dest: Path | None = None, **kw: Any) -> SyncConfig:
        fields: dict[str, Any] = {
            "bucket": bucket,
            "prefix": prefix,
            "dest": dest or tmp_path / "test_data",
            "conn": s3_server.connection(),
            "timeout_s": 60.0,
            "workers": 16,
        }
        return SyncConfig(**(fields | kw))

    return make


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 60, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """`python -m initcontainer ARGS` with only `env` (plus PATH/HOME) as its environment."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "initcontainer", *args],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )
