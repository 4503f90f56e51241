"""A sync cut off by a dying server resumes: the rerun fetches only what is missing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import ExitCode
from common.s3 import client
from initcontainer.config import SyncConfig
from initcontainer.state import SyncState, state_dir
from initcontainer.sync import sync
from testbed.localservers import SeaweedS3
from tests.initcontainer.conftest import manifest_for, put_tree, tree

N_FILES, FILE_BYTES = 40, 4_000_000


def _placed(dest: Path) -> int:
    return sum(len(files) for d, _, files in os.walk(dest) if ".airgap-eval" not in Path(d).parts)


@contextlib.contextmanager
def _slowed(server: SeaweedS3, run_s: float = 0.005, stop_s: float = 0.03) -> Iterator[None]:
    """The server runs ~1/7 of the time (SIGSTOP/SIGCONT): unthrottled it serves this tree in
    ~0.2 s, less than a fresh sync needs to plan, so no kill could land mid-transfer."""
    assert server.proc is not None
    group, done = server.proc.pid, threading.Event()

    def duty_cycle() -> None:
        while not done.is_set():
            os.killpg(group, signal.SIGSTOP)
            time.sleep(stop_s)
            os.killpg(group, signal.SIGCONT)
            time.sleep(run_s)

    thread = threading.Thread(target=duty_cycle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@pytest.mark.parametrize("engine", ["s5cmd", "boto3"])
def test_resume_after_server_killed_mid_transfer(tmp_path: Path, engine: str) -> None:
    files = {f"data/shard-{i:02d}.arrow": os.urandom(FILE_BYTES) for i in range(N_FILES)}
    files["data/manifest.json"] = manifest_for(files, "data")
    dest = tmp_path / "test_data"
    server = SeaweedS3(tmp_path / "seaweed").start()
    try:
        server.create_bucket("resume")
        put_tree(server, "resume", files)
        env = server.env() | {"TEST_DATA_S3_BUCKET": "resume", "TEST_DATA_S3_KEY": "data"}
        base = {k: os.environ[k] for k in ("PATH", "HOME", "AIRGAP_EVAL_DEBUG") if k in os.environ}
        with _slowed(server):
            proc = subprocess.Popen(
                [sys.executable, "-m", "initcontainer", "--dest", str(dest),
                 "--workers", "1", "--engine", engine],
                env=base | env, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            end = time.monotonic() + 30
            while _placed(dest) < 2 and time.monotonic() < end:
                time.sleep(0.005)
        server.kill()  # mid-transfer: a few files in place, the rest not
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode != 0, stderr
        assert proc.returncode in (ExitCode.UNREACHABLE, ExitCode.TIMEOUT), stderr
        assert "Traceback" not in stderr
        landed = set(SyncState.load(dest).entries)
        assert 2 <= len(landed) < len(files), "the kill did not land mid-transfer"
        # No half-written file sits at a final path: each one is complete or absent.
        for rel, body in tree(dest).items():
            assert body == files[f"data/{rel}"], rel

        server = SeaweedS3(server.workdir, ports=server.ports).start()  # same data, same port
        _wait_readable(server, "resume", "data/manifest.json")
        cfg = SyncConfig(
            bucket="resume", prefix="data", dest=dest, conn=server.connection(), engine=engine
        )
        result = sync(cfg)
        assert result.downloaded_files == len(files) - len(landed)
        assert tree(dest) == {k.removeprefix("data/"): v for k, v in files.items()}
        assert not (state_dir(dest) / "partial").exists()
    finally:
        server.stop()


def _wait_readable(server: SeaweedS3, bucket: str, key: str) -> None:
    """After a restart SeaweedFS lists before its volumes serve reads: wait for a GET."""
    s3 = client(server.connection())
    end = time.monotonic() + 30
    while True:
        try:
            s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            return
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
