"""A destination that cannot hold the tree, on a real small filesystem (a tmpfs mounted for
the test): one NO_SPACE error for both engines, naming the destination, the bytes still to
download and the free space, with the fix; before any download when the listing cannot fit;
no partial file left behind and no manifest.json claiming the tree; a rerun with room
completes it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.errors import ExitCode, NoSpaceError
from common.status import read_status
from initcontainer.config import SyncConfig
from initcontainer.state import partial_root, status_path
from initcontainer.sync import sync
from testbed.localservers import SeaweedS3
from tests.initcontainer.conftest import manifest_for, put_tree, run_cli, tree

ENGINES = ["s5cmd", "boto3"]
MakeConfig = Callable[..., SyncConfig]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (the test runs as root, as CI does: podman is rootful)."""
    mount = tmp_path / "volume"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _assert_no_space(err: NoSpaceError, dest: Path) -> None:
    text = err.one_line()
    assert text.startswith(f"[NO_SPACE] no room in {dest}: "), text
    assert "still to download" in text and "free (partial downloads removed)" in text
    assert "sizeLimit" in text and "PVC" in text and "rerun the sync" in text
    assert err.exit_code == ExitCode.NO_SPACE == 13


def _assert_clean(dest: Path, files: dict[str, bytes]) -> None:
    assert not partial_root(dest).exists()  # no partial download fills the disk
    assert not (dest / "manifest.json").exists()  # nothing claims the tree is complete
    for rel, body in tree(dest).items():  # what is in place is whole
        assert files[f"data/{rel}"] == body, rel


@pytest.mark.parametrize("engine", ENGINES)
def test_a_tree_that_cannot_fit_fails_before_downloading(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig, engine: str, small_fs: Path
) -> None:
    files = {f"data/shard-{i}.arrow": bytes([i]) * 600_000 for i in range(3)}  # 1.8 MB
    put_tree(s3_server, bucket, files | {"data/manifest.json": manifest_for(files, "data")})
    dest = small_fs / "test_data"
    start = time.monotonic()
    with pytest.raises(NoSpaceError) as err:
        sync(make_config(bucket, "data", dest=dest, engine=engine))
    seconds = time.monotonic() - start
    _assert_no_space(err.value, dest)
    assert "1.8 MB" in err.value.message  # the files and the manifest still to come
    _assert_clean(dest, files)
    assert tree(dest) == {}
    print(f"{engine}: {seconds:.2f} s: {err.value.one_line()}")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_disk_that_fills_mid_sync_is_the_same_error_and_a_rerun_with_room_completes(
    s3_server: SeaweedS3, bucket: str, make_config: MakeConfig, engine: str, small_fs: Path
) -> None:
    """400 files of 1 KB pass the early check (0.4 MB < 1 MiB) but take a 4 KiB page each."""
    files = {f"data/d{i % 7}/f{i:03d}.json": b"%03d" % i * 340 for i in range(400)}
    manifest = manifest_for(files, "data")
    put_tree(s3_server, bucket, files | {"data/manifest.json": manifest})
    dest = small_fs / "test_data"
    cfg = make_config(bucket, "data", dest=dest, engine=engine)
    with pytest.raises(NoSpaceError) as err:
        sync(cfg)
    _assert_no_space(err.value, dest)
    _assert_clean(dest, files)
    assert 0 < len(tree(dest)) < 400
    print(f"{engine}: {err.value.one_line()[:400]}")

    subprocess.run(["mount", "-o", "remount,size=8m", str(small_fs)], check=True)
    result = sync(cfg)
    want = {k.removeprefix("data/"): v for k, v in files.items()}
    assert tree(dest) == want | {"manifest.json": manifest}
    assert result.downloaded_files < 401  # what was in place stayed


def test_the_cli_exits_13_with_one_line_and_a_failed_record(
    s3_server: SeaweedS3, bucket: str, small_fs: Path
) -> None:
    files = {f"data/shard-{i}.arrow": bytes([i]) * 600_000 for i in range(3)}
    put_tree(s3_server, bucket, files)
    dest = small_fs / "test_data"
    env = s3_server.env() | {"TEST_DATA_S3_BUCKET": bucket, "TEST_DATA_S3_KEY": "data"}
    proc = run_cli(["--dest", str(dest)], env)
    assert proc.returncode == ExitCode.NO_SPACE, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].split(" ", 3)[-1].startswith("[NO_SPACE]")
    record = read_status(status_path(dest))
    assert record is not None and record.error is not None
    assert record.state == "failed" and record.error.code == "NO_SPACE"
