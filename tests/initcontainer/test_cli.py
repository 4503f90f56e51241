"""The CLI as a pod runs it: env vars and secret files in, one line + exit code + status
record out, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from common.errors import ExitCode
from common.status import StatusRecord
from initcontainer.state import status_path
from testbed.localservers import SeaweedS3, free_port
from tests.httpstub import serving
from tests.initcontainer.conftest import put_tree, run_cli, tree
from tests.stub_s3 import stub_s3


def _env(server: SeaweedS3, bucket: str, prefix: str = "data", **extra: str) -> dict[str, str]:
    return server.env() | {"TEST_DATA_S3_BUCKET": bucket, "TEST_DATA_S3_KEY": prefix} | extra


def _status(dest: Path) -> StatusRecord:
    return StatusRecord.model_validate_json(status_path(dest).read_bytes())


def _one_error_line(stderr: str, code: str) -> None:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"[{code}]" in errors[0] and "-- fix:" in errors[0], stderr


def test_sync_from_env_writes_status(s3_server: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    put_tree(s3_server, bucket, {"data/a.txt": b"a", "data/z.bin": b"", "data-old/o": b"o"})
    dest = tmp_path / "test_data"
    proc = run_cli(["--dest", str(dest)], _env(s3_server, bucket))
    assert proc.returncode == 0, proc.stderr
    assert tree(dest) == {"a.txt": b"a", "z.bin": b""}
    record = _status(dest)
    assert record.state == "completed" and record.exit_code == 0
    assert record.progress["files"] == 2 and record.progress["engine"] == "s5cmd"
    assert "engine /" in proc.stderr  # the log names the s5cmd binary that ran


def test_credentials_from_secret_files_only(
    s3_server: SeaweedS3, bucket: str, tmp_path: Path
) -> None:
    put_tree(s3_server, bucket, {"data/a.txt": b"a"})
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in s3_server.env().items():
        (secrets / name).write_text(value + "\n")
    dest = tmp_path / "test_data"
    env = {"TEST_DATA_S3_BUCKET": bucket, "TEST_DATA_S3_KEY": "data"}
    proc = run_cli(["--dest", str(dest), "--secret-dir", str(secrets)], env)
    assert proc.returncode == 0, proc.stderr
    assert tree(dest) == {"a.txt": b"a"}


def test_env_beats_secret_file(s3_server: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    """A wrong key in the secret file loses to the right one in the env."""
    put_tree(s3_server, bucket, {"data/a.txt": b"a"})
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "AWS_SECRET_ACCESS_KEY").write_text("wrong-secret")
    dest = tmp_path / "test_data"
    proc = run_cli(["--dest", str(dest), "--secret-dir", str(secrets)], _env(s3_server, bucket))
    assert proc.returncode == 0, proc.stderr
    env = _env(s3_server, bucket)
    del env["AWS_SECRET_ACCESS_KEY"]
    proc = run_cli(["--dest", str(dest), "--secret-dir", str(secrets)], env)
    assert proc.returncode == ExitCode.AUTH


@pytest.mark.parametrize("engine", ["s5cmd", "boto3"])
def test_wrong_credentials(s3_server: SeaweedS3, bucket: str, tmp_path: Path, engine: str) -> None:
    put_tree(s3_server, bucket, {"data/a.txt": b"a"})
    dest = tmp_path / "test_data"
    env = _env(s3_server, bucket, AWS_SECRET_ACCESS_KEY="not-the-secret-123")
    proc = run_cli(["--dest", str(dest), "--engine", engine], env)
    assert proc.returncode == ExitCode.AUTH
    _one_error_line(proc.stderr, "AUTH")
    record = _status(dest)
    assert record.state == "failed" and record.error and record.error.code == "AUTH"
    assert "not-the-secret-123" not in proc.stderr + status_path(dest).read_text()


class _Imds403(BaseHTTPRequestHandler):
    """An instance-metadata endpoint that refuses, as on a host outside any cloud."""

    def log_message(self, *args: object) -> None:
        pass

    def _refuse(self) -> None:
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = _refuse


@pytest.mark.parametrize("engine", ["s5cmd", "boto3"])
def test_no_credentials_is_one_config_line_in_seconds(
    s3_server: SeaweedS3, bucket: str, tmp_path: Path, engine: str
) -> None:
    """No keys anywhere: the default AWS chain finds nothing, with either engine, and says
    so (issue 13: s5cmd's IMDS warnings used to crash the parser, exit 1 INTERNAL)."""
    put_tree(s3_server, bucket, {"data/a.txt": b"a"})
    env = _env(s3_server, bucket)
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    dest = tmp_path / "test_data"
    with serving(_Imds403) as port:
        env |= {
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{port}",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        }
        start = time.monotonic()
        proc = run_cli(["--dest", str(dest), "--engine", engine], env, timeout=60)
        elapsed = time.monotonic() - start
    assert proc.returncode == ExitCode.CONFIG, proc.stderr
    _one_error_line(proc.stderr, "CONFIG")
    assert "no S3 credentials found" in proc.stderr and "AWS_ACCESS_KEY_ID" in proc.stderr
    assert elapsed < 10
    assert _status(dest).error.code == "CONFIG"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("env_edit", "code"),
    [
        ({"TEST_DATA_S3_BUCKET": "no-such-bucket"}, ExitCode.NOT_FOUND),
        ({"TEST_DATA_S3_KEY": "nothing/here"}, ExitCode.NOT_FOUND),
        ({"TEST_DATA_S3_BUCKET": ""}, ExitCode.CONFIG),
        ({"TEST_DATA_S3_TIMEOUT": "soon"}, ExitCode.CONFIG),
        ({"AWS_S3_ENDPOINT": "closed-port"}, ExitCode.UNREACHABLE),
    ],
)
def test_exit_codes(
    s3_server: SeaweedS3, bucket: str, tmp_path: Path, env_edit: dict[str, str], code: int
) -> None:
    if env_edit.get("AWS_S3_ENDPOINT") == "closed-port":
        env_edit = {"AWS_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    dest = tmp_path / "test_data"
    start = time.monotonic()
    proc = run_cli(["--dest", str(dest)], _env(s3_server, bucket) | env_edit, timeout=30)
    assert time.monotonic() - start < 20
    assert proc.returncode == code
    _one_error_line(proc.stderr, ExitCode(code).name)
    assert _status(dest).exit_code == code


@pytest.mark.parametrize("engine", ["s5cmd", "boto3"])
def test_traversal_keys_from_a_hostile_listing(tmp_path: Path, engine: str) -> None:
    """SeaweedFS will not store `../` keys; other servers (or a proxy) may list them."""
    outside = tmp_path / "escape.txt"
    keys = ["data/ok.txt", "data/../escape.txt", "data/a/../../escape.txt"]
    with stub_s3(keys) as endpoint:
        env = {
            "TEST_DATA_S3_BUCKET": "bkt", "TEST_DATA_S3_KEY": "data", "AWS_S3_ENDPOINT": endpoint,
            "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1",
        }  # fmt: skip
        dest = tmp_path / "test_data"
        proc = run_cli(["--dest", str(dest), "--engine", engine], env)
    assert proc.returncode == ExitCode.UNSAFE_PATH
    _one_error_line(proc.stderr, "UNSAFE_PATH")
    assert "data/../escape.txt" in proc.stderr
    assert not outside.exists()
    assert tree(dest) == {}


@pytest.mark.parametrize("engine", ["s5cmd", "boto3"])
def test_stalled_server_hits_the_deadline(tmp_path: Path, engine: str) -> None:
    with stub_s3(["data/a.txt"], stall_get=True) as endpoint:
        env = {
            "TEST_DATA_S3_BUCKET": "bkt", "TEST_DATA_S3_KEY": "data", "AWS_S3_ENDPOINT": endpoint,
            "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "TEST_DATA_S3_TIMEOUT": "2s",
        }  # fmt: skip
        dest = tmp_path / "test_data"
        start = time.monotonic()
        proc = run_cli(["--dest", str(dest), "--engine", engine], env, timeout=60)
        elapsed = time.monotonic() - start
    assert proc.returncode == ExitCode.TIMEOUT, proc.stderr
    _one_error_line(proc.stderr, "TIMEOUT")
    assert elapsed < 12
    assert tree(dest) == {}


def test_sigterm_stops_s5cmd_and_records_it(
    s3_server: SeaweedS3, bucket: str, tmp_path: Path
) -> None:
    put_tree(s3_server, bucket, {f"data/f{i}.bin": os.urandom(2_000_000) for i in range(30)})
    dest = tmp_path / "test_data"
    base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    proc = subprocess.Popen(
        [sys.executable, "-m", "initcontainer", "--dest", str(dest), "--workers", "1"],
        env=base | _env(s3_server, bucket),
        stderr=subprocess.PIPE,
        text=True,
    )
    partial = dest / ".airgap-eval" / "partial"
    end = time.monotonic() + 20
    while not partial.exists() and time.monotonic() < end:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    _one_error_line(stderr, "INTERRUPTED")
    assert _status(dest).state == "failed"
    ps = subprocess.run(["pgrep", "-f", str(dest / ".airgap-eval")], capture_output=True)
    assert ps.stdout == b""  # no s5cmd left behind


@pytest.fixture
def ro_parent() -> Iterator[tuple[Path, int]]:
    """dest writable by an unprivileged UID inside a parent dir nobody may write to."""
    uid = 1000770000 if os.geteuid() == 0 else os.geteuid()  # an OpenShift-style UID
    base = Path(tempfile.mkdtemp(prefix="airgap-ro-"))
    base.chmod(0o755)
    dest = base / "ro" / "test_data"
    dest.mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(dest, uid, 0)
    (base / "ro").chmod(0o555)
    yield dest, uid
    (base / "ro").chmod(0o755)
    shutil.rmtree(base)


def test_non_root_uid_with_read_only_parent(
    s3_server: SeaweedS3, bucket: str, ro_parent: tuple[Path, int]
) -> None:
    dest, uid = ro_parent
    put_tree(s3_server, bucket, {"data/a.txt": b"a", "data/sub/b.txt": b"b"})
    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("setpriv not found: cannot drop to a non-root UID")
        prefix = ["setpriv", f"--reuid={uid}", "--regid=0", "--clear-groups"]
    base = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "initcontainer", "--dest", str(dest)],
        env=base | {"HOME": str(dest)} | _env(s3_server, bucket),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert tree(dest) == {"a.txt": b"a", "sub/b.txt": b"b"}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["test_data"]  # nothing beside it
    assert {p.stat().st_uid for p in dest.rglob("*")} == {uid}


def test_help_and_module_entry() -> None:
    proc = run_cli(["--help"], {})
    assert proc.returncode == 0 and "--prefix" in proc.stdout and "--engine" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "airgap_eval", "sync", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "--no-verify-ssl" in proc.stdout


def test_status_json_is_machine_readable(s3_server: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "test_data"
    proc = run_cli(["--dest", str(dest), "--prefix", "absent"], _env(s3_server, bucket))
    data = json.loads(status_path(dest).read_text())
    assert proc.returncode == data["exit_code"] == ExitCode.NOT_FOUND
    assert data["component"] == "sync" and data["seconds"] >= 0
    assert data["error"]["code"] == "NOT_FOUND" and data["error"]["hint"]
