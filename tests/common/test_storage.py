"""The storage layer against a real S3 server (SeaweedFS), with both engines: the same calls,
the same results, for names that need quoting too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.engine import open_storage
from common.errors import AirgapError, AuthError, ConfigError, NotFoundError
from common.storage import Copy, Deadline, parse_s3_uri
from testbed.localservers import SeaweedS3

ENGINES = ["s5cmd", "boto3"]
# Names a shell, s5cmd's wildcards or its `run` line splitting would mangle if quoted wrong.
NAMES = [
    "plain.txt",
    "sp ace.txt",
    "star*[1]?.txt",
    'it\'s "q".txt',
    "$HOME`x`.txt",
    "#h.txt",
    "ünï/cødé.txt",
]


def _deadline() -> Deadline:
    return Deadline(60, "raise the test's deadline")


@pytest.mark.parametrize("engine", ENGINES)
def test_upload_list_download_round_trip(
    s3_server: SeaweedS3, bucket: str, tmp_path: Path, engine: str
) -> None:
    storage = open_storage(s3_server.connection(), bucket, engine, 8)  # type: ignore[arg-type]
    assert storage.engine == engine
    src = tmp_path / "src"
    bodies = {name: os.urandom(100 + i) for i, name in enumerate(NAMES)}
    for name, body in bodies.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(body)
    ups = [Copy(f"p/{n}", src / n) for n in NAMES]
    assert sorted(c.key for c in storage.upload(ups, _deadline())) == sorted(c.key for c in ups)

    listed = storage.list_folder("p", _deadline())
    assert sorted(o.rel for o in listed) == sorted(NAMES)
    assert {o.rel: o.size for o in listed} == {n: len(b) for n, b in bodies.items()}
    assert storage.list_folder("p-other", _deadline()) == []  # empty folder: no error

    out = tmp_path / "out"
    downs = [Copy(f"p/{n}", out / n) for n in NAMES]
    got = list(storage.download(downs, _deadline()))
    assert sorted(c.key for c in got) == sorted(c.key for c in downs)
    assert {n: (out / n).read_bytes() for n in NAMES} == bodies


@pytest.mark.parametrize("engine", ENGINES)
def test_download_folder_yields_each_file_as_it_lands(
    s3_server: SeaweedS3, bucket: str, tmp_path: Path, engine: str
) -> None:
    storage = open_storage(s3_server.connection(), bucket, engine, 8)  # type: ignore[arg-type]
    for name in ("a.txt", "sub/b.txt", "sp ace*.txt"):
        storage.write_object(f"w/{name}", name.encode())
    storage.write_object("w-sibling/x.txt", b"x")  # a folder, not a string prefix
    root = tmp_path / "partial"
    got = sorted(
        Path(p).relative_to(root).as_posix()
        for p in storage.download_folder("w", root, _deadline())
    )
    assert got == ["a.txt", "sp ace*.txt", "sub/b.txt"]
    assert {p: (root / p).read_bytes() for p in got} == {p: p.encode() for p in got}
    assert list(storage.download_folder("empty", tmp_path / "e", _deadline())) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_stop_ends_a_running_transfer(
    s3_server: SeaweedS3, bucket: str, tmp_path: Path, engine: str
) -> None:
    storage = open_storage(s3_server.connection(), bucket, engine, 1)  # type: ignore[arg-type]
    for i in range(20):
        storage.write_object(f"s/{i:02d}.bin", os.urandom(200_000))
    paths = storage.download_folder("s", tmp_path / "p", _deadline())
    next(paths)
    storage.stop()
    with pytest.raises(AirgapError):
        for _ in paths:
            pass


@pytest.mark.parametrize("engine", ENGINES)
def test_single_objects(s3_server: SeaweedS3, bucket: str, engine: str) -> None:
    storage = open_storage(s3_server.connection(), bucket, engine, 4)  # type: ignore[arg-type]
    assert storage.read_object("m/manifest.json") is None
    storage.write_object("m/manifest.json", b"{}")
    assert storage.read_object("m/manifest.json", _deadline()) == b"{}"
    storage.delete_object("m/manifest.json")
    assert storage.read_object("m/manifest.json") is None


@pytest.mark.parametrize("engine", ENGINES)
def test_errors_are_typed(s3_server: SeaweedS3, bucket: str, engine: str) -> None:
    wrong = s3_server.connection(secret_key="not-the-secret")
    with pytest.raises(AuthError):
        open_storage(wrong, bucket, engine, 4).list_folder("p", _deadline())  # type: ignore[arg-type]
    storage = open_storage(s3_server.connection(), "no-such-bucket", engine, 4)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        storage.list_folder("p", _deadline())


def test_engine_choice(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_storage(s3_server.connection(), "b", "auto", 4).engine == "s5cmd"
    monkeypatch.setattr("common.s5cmd.find_binary", lambda: None)
    assert open_storage(s3_server.connection(), "b", "auto", 4).engine == "boto3"
    with pytest.raises(ConfigError, match="no s5cmd binary"):
        open_storage(s3_server.connection(), "b", "s5cmd", 4)


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://b/some/prefix/") == ("b", "some/prefix")
    assert parse_s3_uri("s3://b") == ("b", "")
    with pytest.raises(ConfigError):
        parse_s3_uri("b/prefix")
