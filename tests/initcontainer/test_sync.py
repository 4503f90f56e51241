"""`sync()` against a real S3 server (SeaweedFS): exact trees, verification, re-runs, errors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from common.errors import (
    AirgapError,
    AuthError,
    IntegrityError,
    NotFoundError,
    UnreachableError,
    UnsafePathError,
)
from common.s3 import client
from initcontainer.config import SyncConfig
from initcontainer.state import JOURNAL_NAME, state_dir
from initcontainer.sync import sync
from testbed.localservers import SeaweedS3, free_port
from tests.initcontainer.conftest import manifest_for, put_tree, tree

ENGINES = ["s5cmd", "boto3"]
MakeConfig = Callable[..., SyncConfig]


def sample(prefix: str = "data") -> dict[str, bytes]:
    rnd = random.Random(7)
    files = {
        f"{prefix}/shard-{i:02d}.arrow": rnd.randbytes(rnd.randint(1, 300_000)) for i in range(12)
    }
    files |= {
        f"{prefix}/empty.txt": b"",
        f"{prefix}/sub/deeper/x.json": b'{"a": 1}',
        f"{prefix}/we ird*name [1].txt": b"odd",
        f"{prefix}/it's ünï $HOME.txt": b"quote",
        f"{prefix}/empty-dir/": b"",
    }
    return files


def siblings(prefix: str = "data") -> dict[str, bytes]:
    return {f"{prefix}-old/stale.txt": b"stale", f"{prefix}x.txt": b"x", "top.txt": b"t"}


def expected(files: dict[str, bytes], prefix: str = "data") -> dict[str, bytes]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in files.items() if not k.endswith("/")}


@pytest.mark.parametrize("engine", ENGINES)
def test_full_sync_byte_for_byte(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig, engine: str
) -> None:
    files = sample()
    put_tree(s3_server, bucket, files | siblings())
    cfg = make_config(bucket, "data", engine=engine)
    result = sync(cfg)
    assert tree(cfg.dest) == expected(files)  # siblings (data-old/, datax.txt) not pulled
    assert (cfg.dest / "empty.txt").stat().st_size == 0
    assert (cfg.dest / "empty-dir").is_dir()
    assert result.engine == engine
    assert (result.files, result.downloaded_files) == (len(expected(files)),) * 2
    assert result.bytes == result.downloaded_bytes == sum(map(len, files.values()))
    assert not (state_dir(cfg.dest) / "partial").exists()


@pytest.mark.parametrize("engine", ENGINES)
def test_rerun_downloads_nothing(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig, engine: str
) -> None:
    put_tree(s3_server, bucket, sample())
    cfg = make_config(bucket, "data", engine=engine)
    sync(cfg)
    before = {p: p.stat().st_mtime_ns for p in cfg.dest.rglob("*") if p.is_file()}
    result = sync(cfg)
    assert (result.downloaded_files, result.verified_files) == (0, 0)
    # Nothing rewritten, not even our own journal; only the status record is new.
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_same_size_change_is_refetched(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig
) -> None:
    """`aws s3 sync` compares size and mtime only; the ETag catches this."""
    files = sample()
    put_tree(s3_server, bucket, files)
    cfg = make_config(bucket, "data")
    sync(cfg)
    changed = bytes(b ^ 0xFF for b in files["data/shard-03.arrow"])
    put_tree(s3_server, bucket, {"data/shard-03.arrow": changed})
    result = sync(cfg)
    assert result.downloaded_files == 1
    assert (cfg.dest / "shard-03.arrow").read_bytes() == changed


def test_local_edit_is_refetched(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig
) -> None:
    files = sample()
    put_tree(s3_server, bucket, files)
    cfg = make_config(bucket, "data")
    sync(cfg)
    target = cfg.dest / "sub/deeper/x.json"
    target.write_bytes(b'{"a": 2}')  # same size, new mtime
    os.utime(target, ns=(1, 1))
    assert sync(cfg).downloaded_files == 1
    assert target.read_bytes() == b'{"a": 1}'


@pytest.mark.parametrize("engine", ENGINES)
def test_manifest_checks_every_file(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig, engine: str
) -> None:
    files = sample()
    put_tree(s3_server, bucket, files | {"data/manifest.json": manifest_for(files, "data")})
    cfg = make_config(bucket, "data", engine=engine)
    result = sync(cfg)
    assert result.manifest
    assert result.verified_files == len(expected(files))
    assert (cfg.dest / "manifest.json").is_file()
    assert sync(cfg).downloaded_files == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_counts_on_an_empty_dir_and_a_rerun(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig, engine: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Issue 13: an empty dir said "1 of 35 files already in place" (the manifest, fetched
    first, was counted as in place)."""
    files = sample()
    put_tree(s3_server, bucket, files | {"data/manifest.json": manifest_for(files, "data")})
    n = len(expected(files)) + 1  # the files and manifest.json
    nbytes = sum(map(len, files.values())) + len(manifest_for(files, "data"))
    cfg = make_config(bucket, "data", engine=engine)
    with caplog.at_level(logging.INFO, logger="initcontainer.sync"):
        result = sync(cfg)
    assert f"0 of {n} files already in place; fetching {n} ({nbytes / 1e6:.1f} MB)" in caplog.text
    assert (result.files, result.downloaded_files, result.verified_files) == (n, n, n - 1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="initcontainer.sync"):
        sync(cfg)
    assert f"{n} of {n} files already in place; fetching 0 (0.0 MB)" in caplog.text


@pytest.mark.parametrize("engine", ENGINES)
def test_manifest_mismatch_names_the_file(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig, engine: str
) -> None:
    files = sample()
    manifest = json.loads(manifest_for(files, "data"))
    manifest["files"]["shard-05.arrow"]["sha256"] = hashlib.sha256(b"other").hexdigest()
    put_tree(s3_server, bucket, files | {"data/manifest.json": json.dumps(manifest).encode()})
    cfg = make_config(bucket, "data", engine=engine)
    with pytest.raises(IntegrityError, match=r"shard-05\.arrow: sha256"):
        sync(cfg)
    assert not (cfg.dest / "shard-05.arrow").exists()  # a wrong file never lands
    assert (cfg.dest / "shard-04.arrow").read_bytes() == files["data/shard-04.arrow"]
    assert not (cfg.dest / "manifest.json").exists()  # nothing claims the tree is complete


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m["files"]["shard-01.arrow"].update(size=3), "shard-01.arrow: object size"),
        (lambda m: m["files"].update(gone={"size": 1, "sha256": "0" * 64}), "'gone'"),
        (lambda m: m.update(files={"x": {"size": -1}}), "not a valid manifest"),
    ],
)
def test_manifest_disagreeing_with_the_bucket(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig,
    edit: Callable[[dict], None], match: str,
) -> None:  # fmt: skip
    files = sample()
    manifest = json.loads(manifest_for(files, "data"))
    edit(manifest)
    put_tree(s3_server, bucket, files | {"data/manifest.json": json.dumps(manifest).encode()})
    cfg = make_config(bucket, "data")
    with pytest.raises(IntegrityError, match=match):
        sync(cfg)
    assert tree(cfg.dest) == {}  # refused before the data (or the manifest) moved


def test_tree_without_state_is_hashed_not_downloaded(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig
) -> None:
    """With a manifest, files already on disk are confirmed by hashing: no download."""
    files = sample()
    put_tree(s3_server, bucket, files | {"data/manifest.json": manifest_for(files, "data")})
    cfg = make_config(bucket, "data")
    sync(cfg)
    (state_dir(cfg.dest) / JOURNAL_NAME).unlink()
    (cfg.dest / "shard-02.arrow").write_bytes(b"corrupt")
    result = sync(cfg)
    assert result.downloaded_files == 2  # the corrupt file, and manifest.json (not hashed)
    assert result.verified_files == len(expected(files))
    assert tree(cfg.dest) == expected(files) | {"manifest.json": tree(cfg.dest)["manifest.json"]}


def test_symlink_in_dest_refused_nothing_written(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig, tmp_path: Path
) -> None:
    put_tree(s3_server, bucket, {"data/a.txt": b"a", "data/link/x.txt": b"x"})
    outside = tmp_path / "outside"
    outside.mkdir()
    cfg = make_config(bucket, "data")
    cfg.dest.mkdir()
    (cfg.dest / "link").symlink_to(outside)
    with pytest.raises(UnsafePathError, match=r"link/x\.txt"):
        sync(cfg)
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in cfg.dest.iterdir()) == ["link"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("case", "error", "match"),
    [
        ("wrong credentials", AuthError, "refused the credentials"),
        ("missing bucket", NotFoundError, "not found"),
        ("empty prefix", NotFoundError, "no objects under"),
        ("unreachable endpoint", UnreachableError, "cannot reach"),
    ],
)
def test_bad_input_fails_fast_with_a_typed_error(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig,
    engine: str, case: str, error: type[AirgapError], match: str,
) -> None:  # fmt: skip
    put_tree(s3_server, bucket, {"data/a.txt": b"a", "data-old/b.txt": b"b"})
    kw: dict[str, object] = {"engine": engine}
    target, prefix = bucket, "data"
    if case == "wrong credentials":
        kw["conn"] = s3_server.connection(secret_key="wrong-secret")
    elif case == "missing bucket":
        target = "no-such-bucket"
    elif case == "empty prefix":
        prefix = "dat"  # `data` and `data-old` exist: a folder match finds nothing
    else:
        kw["conn"] = s3_server.connection(endpoint=f"http://127.0.0.1:{free_port()}")
    cfg = make_config(target, prefix, **kw)
    start = time.monotonic()
    with pytest.raises(error, match=match) as e:
        sync(cfg)
    assert time.monotonic() - start < 15
    assert e.value.hint
    assert "wrong-secret" not in e.value.one_line()
    assert tree(cfg.dest) == {} if cfg.dest.exists() else True


def test_auto_engine_falls_back_to_boto3(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setattr("common.s5cmd.find_binary", lambda: None)
    files = sample()
    put_tree(s3_server, bucket, files)
    cfg = make_config(bucket, "data", engine="auto")
    with caplog.at_level(logging.INFO):
        result = sync(cfg)
    assert result.engine == "boto3"
    assert "engine boto3" in caplog.text
    assert tree(cfg.dest) == expected(files)


def test_prefix_with_wildcard_characters_is_literal(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig
) -> None:
    """s5cmd would expand `*` in a listing URL: such a prefix is listed literally."""
    put_tree(s3_server, bucket, {"we*ird/a.txt": b"a", "weXXird/b.txt": b"b"})
    cfg = make_config(bucket, "we*ird", engine="s5cmd")
    sync(cfg)
    assert tree(cfg.dest) == {"a.txt": b"a"}


def test_whole_bucket_when_prefix_is_empty(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig
) -> None:
    put_tree(s3_server, bucket, {"a.txt": b"a", "d/b.txt": b"b"})
    cfg = make_config(bucket, "")
    sync(cfg)
    assert tree(cfg.dest) == {"a.txt": b"a", "d/b.txt": b"b"}


def test_client_sees_bucket(s3_server: SeaweedS3, bucket: str) -> None:
    """The fixture's bucket exists: guards the error cases above from passing vacuously."""
    assert bucket in [b["Name"] for b in client(s3_server.connection()).list_buckets()["Buckets"]]
