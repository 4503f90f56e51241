"""The sidecar against a real S3 server (SeaweedFS) and a real HTTP event receiver: success,
adapter killed, S3 outage, SIGTERM, re-run idempotence, secrets, events."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import MissingDataError
from common.manifest import Manifest
from common.s3 import client
from common.status import StatusRecord
from sidecar.cli import main
from testbed.localservers import SeaweedS3
from tests.sidecar.conftest import BENCH, JOB_ID, FakeAdapter, Receiver, objects, spawn, write_spec

PREFIX = f"runs/{JOB_ID}/{BENCH}/"


def base_args(adapter: FakeAdapter, bucket: str, tmp_path: Path) -> list[str]:
    term = tmp_path / "termination-log"
    term.touch()
    return [
        "--results-dir", str(adapter.root), "--dest", f"s3://{bucket}/runs",
        "--poll-interval", "0.1", "--termination-log", str(term),
    ]  # fmt: skip


def local_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".airgap-eval" not in p.parts and p.name not in ("done", "uploaded")
    }


def upload_record(adapter: FakeAdapter) -> dict:
    return json.loads((adapter.root / ".airgap-eval" / "upload-status.json").read_text())


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 30) -> list[str]:
    """Read the sidecar's output until a line holds `needle` (its log says where it is)."""
    assert proc.stdout is not None
    seen: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not in sidecar output:\n{''.join(seen)}")


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    """A server of the test's own, to stop and restart (outage tests)."""
    server = SeaweedS3(tmp_path / "weed").start()
    server.create_bucket("outage")
    yield server
    server.stop()


def test_success_uploads_everything_verified_and_reports_once(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, receiver: Receiver,
    sidecar_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    adapter.results()
    adapter.status()
    spec = write_spec(tmp_path / "job.json", receiver.url)
    proc = spawn([*base_args(adapter, bucket, tmp_path), "--job-spec", str(spec)], sidecar_env)
    wait_for_line(proc, "waiting for the adapter")
    assert proc.poll() is None  # a running adapter is waited for
    adapter.complete()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out

    assert (adapter.root / "uploaded").read_text().strip() == f"s3://{bucket}/{PREFIX}"
    got = objects(s3_server, bucket)
    local = local_files(adapter.root)
    assert set(got) == {PREFIX + rel for rel in local} | {PREFIX + "manifest.json"}
    assert all(got[PREFIX + rel] == data for rel, data in local.items())
    manifest = Manifest.model_validate_json(got[PREFIX + "manifest.json"])
    assert set(manifest.files) == set(local)
    for rel, entry in manifest.files.items():
        assert entry.sha256 == hashlib.sha256(local[rel]).hexdigest()

    assert receiver.statuses() == ["running", "completed"]
    assert receiver.events[0]["benchmark_status_event"]["phase"] == "persisting_artifacts"
    done = receiver.events[1]["benchmark_status_event"]
    assert done["metrics"] == {"acc": 0.5, "acc_stderr": 0.01}
    assert done["overall_score"] == 0.5
    assert done["artifacts"]["results_s3_uri"] == f"s3://{bucket}/{PREFIX}"
    summary = json.loads((tmp_path / "termination-log").read_text())
    assert summary["state"] == "completed" and summary["exit_code"] == 0
    assert summary["primary_score"]["value"] == 0.5


HEARTBEAT = """
import sys, time
from pathlib import Path
from common.status import StatusRecord
root = Path(sys.argv[1])
(root / "samples_partial.jsonl").write_text('{"doc_id": 0}\\n' * 1000)
rec = StatusRecord(component="run", job_id="job-123", benchmark_id="arc_easy", phase="running_evaluation")
while True:
    rec.progress = {"requests": int(time.time())}
    rec.write(root / "status.json")
    time.sleep(0.2)
"""


def test_adapter_killed_mid_run_is_recorded_failed_uploaded_and_reported(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, receiver: Receiver,
    sidecar_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    real = subprocess.Popen([sys.executable, "-c", HEARTBEAT, str(adapter.root)], env=sidecar_env)
    try:
        while not (adapter.root / "status.json").exists():
            time.sleep(0.05)
        spec = write_spec(tmp_path / "job.json", receiver.url)
        args = [
            *base_args(adapter, bucket, tmp_path),
            "--job-spec",
            str(spec),
            "--stale-after",
            "2",
        ]
        proc = spawn(args, sidecar_env)
        wait_for_line(proc, "waiting for the adapter")
        time.sleep(2.5)  # longer than --stale-after: a live heartbeat keeps the sidecar waiting
        assert proc.poll() is None
    finally:
        real.kill()  # SIGKILL: no status, no done marker
        real.wait()
    killed_at = time.monotonic()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert time.monotonic() - killed_at < 8

    got = objects(s3_server, bucket)
    status = json.loads(got[PREFIX + "status.json"])
    assert status["state"] == "failed"
    assert status["error"]["code"] == "ADAPTER_DIED"
    assert "no heartbeat" in status["error"]["message"]
    assert PREFIX + "samples_partial.jsonl" in got
    [failed] = receiver.accepted_terminal()
    assert failed["status"] == "failed"
    assert failed["error_message"]["message_code"] == "adapter_died"
    assert failed["error_message"]["message_origin"] == "runtime"
    assert "no heartbeat" in failed["error_message"]["message"]


def test_s3_outage_then_recovery(
    own_s3: SeaweedS3, adapter: FakeAdapter, sidecar_env: dict[str, str], tmp_path: Path
) -> None:
    adapter.results()
    adapter.complete()
    own_s3.stop()
    env = {**sidecar_env, **own_s3.env()}
    proc = spawn([*base_args(adapter, "outage", tmp_path), "--once", "--deadline", "90"], env)
    wait_for_line(proc, "retrying")
    own_s3.start()  # same ports, same data dir
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    got = objects(own_s3, "outage")
    assert set(got) == {PREFIX + rel for rel in local_files(adapter.root)} | {
        PREFIX + "manifest.json"
    }
    assert (adapter.root / "uploaded").exists()


def test_s3_outage_past_deadline_fails_clearly_and_keeps_files(
    own_s3: SeaweedS3, adapter: FakeAdapter, receiver: Receiver, sidecar_env: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    adapter.results()
    adapter.complete()
    before = local_files(adapter.root)
    own_s3.stop()
    spec = write_spec(tmp_path / "job.json", receiver.url)
    env = {**sidecar_env, **own_s3.env()}
    args = [
        *base_args(adapter, "outage", tmp_path),
        "--once",
        "--deadline",
        "3",
        "--job-spec",
        str(spec),
    ]
    start = time.monotonic()
    proc = spawn(args, env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 12, out
    assert time.monotonic() - start < 20
    assert "[UPLOAD] results not uploaded to s3://outage/" in out
    assert "the files are kept in" in out
    assert local_files(adapter.root) == before
    assert not (adapter.root / "uploaded").exists()
    [failed] = receiver.accepted_terminal()
    assert failed["error_message"]["message_code"] == "upload_failed"
    summary = json.loads((tmp_path / "termination-log").read_text())
    assert summary["state"] == "failed" and summary["error"]["code"] == "UPLOAD"


def test_sigterm_while_adapter_runs_uploads_what_exists_within_grace(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, receiver: Receiver,
    sidecar_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    adapter.results()
    adapter.status()
    spec = write_spec(tmp_path / "job.json", receiver.url)
    args = [*base_args(adapter, bucket, tmp_path), "--job-spec", str(spec), "--grace", "8"]
    proc = spawn(args, sidecar_env)
    wait_for_line(proc, "waiting for the adapter")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert time.monotonic() - sent < 8
    got = objects(s3_server, bucket)
    assert json.loads(got[PREFIX + "status.json"])["state"] == "failed"
    assert PREFIX + f"tiny-model/samples_{BENCH}_2025.jsonl" in got
    [failed] = receiver.accepted_terminal()
    assert "SIGTERM" in failed["error_message"]["message"]


def test_sigterm_during_upload_retries_shortens_to_the_grace_period(
    own_s3: SeaweedS3, adapter: FakeAdapter, sidecar_env: dict[str, str], tmp_path: Path
) -> None:
    adapter.results()
    adapter.complete()
    own_s3.stop()
    env = {**sidecar_env, **own_s3.env()}
    args = [*base_args(adapter, "outage", tmp_path), "--deadline", "120", "--grace", "2"]
    proc = spawn(args, env)
    wait_for_line(proc, "retrying")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 12, out
    assert time.monotonic() - sent < 6  # the grace period, not the 120 s deadline
    assert local_files(adapter.root)


def test_sigterm_right_after_done_still_completes_the_upload(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, sidecar_env: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    adapter.results(sample_bytes=20_000_000)
    adapter.status()
    proc = spawn(base_args(adapter, bucket, tmp_path), sidecar_env)
    wait_for_line(proc, "waiting for the adapter")
    adapter.complete()
    wait_for_line(proc, "final upload")
    proc.send_signal(signal.SIGTERM)  # a native sidecar gets it once the adapter has exited
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    got = objects(s3_server, bucket)
    local = local_files(adapter.root)
    assert all(got[PREFIX + rel] == data for rel, data in local.items())
    assert (adapter.root / "uploaded").exists()


def test_rerun_uploads_only_what_changed(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, sidecar_env: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    adapter.results()
    adapter.complete()
    args = [*base_args(adapter, bucket, tmp_path), "--once"]
    s3 = client(s3_server.connection())

    def stamps() -> dict[str, object]:
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX)["Contents"]
        return {o["Key"]: (o["LastModified"], o["ETag"]) for o in listing}

    assert main(args) == 0
    first = stamps()
    assert upload_record(adapter)["progress"]["uploaded"] == len(local_files(adapter.root))
    time.sleep(1.1)  # LastModified has 1 s resolution
    assert main(args) == 0
    assert upload_record(adapter)["progress"]["uploaded"] == 0
    assert stamps() == first  # nothing re-sent, manifest included

    log = adapter.root / "logs" / "adapter.log"
    log.write_text(log.read_text().replace("10/10", "99/99"))  # same size, new content
    s3.delete_object(Bucket=bucket, Key=PREFIX + "status.json")  # lost remotely
    assert main(args) == 0
    assert upload_record(adapter)["progress"]["uploaded"] == 2
    got = objects(s3_server, bucket)
    assert got[PREFIX + "logs/adapter.log"] == log.read_bytes()
    manifest = Manifest.model_validate_json(got[PREFIX + "manifest.json"])
    assert manifest.files["logs/adapter.log"].sha256 == hashlib.sha256(log.read_bytes()).hexdigest()


def test_secrets_never_leave_the_pod(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, receiver: Receiver,
    sidecar_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    api_key = "sk-model-key-0123456789"
    auth = tmp_path / "model-auth"
    auth.mkdir()
    (auth / "api-key").write_text(api_key)
    spec = write_spec(tmp_path / "job.json", receiver.url, auth={"secret_ref": f"file://{auth}"})
    monkeypatch.setenv("EVALHUB_JOB_SPEC_PATH", str(spec))
    monkeypatch.setenv("EVALHUB_MODE", "local")
    adapter.results()
    leaky = adapter.root / "logs" / "leaky.log"
    leaky.write_text(
        f"model_args=base_url=...,api_key={api_key}\n" + "x" * 2_000_000
        + f"\nenv AWS_SECRET_ACCESS_KEY={s3_server.secret_key}\n"
    )  # fmt: skip
    original = leaky.read_bytes()
    adapter.complete()
    assert main([*base_args(adapter, bucket, tmp_path), "--once"]) == 0

    got = objects(s3_server, bucket)
    for key, data in got.items():
        assert api_key.encode() not in data, key
        assert s3_server.secret_key.encode() not in data, key
    assert b"api_key=***" in got[PREFIX + "logs/leaky.log"]
    assert leaky.read_bytes() == original  # the pod's own copy is left alone
    for event in receiver.events:
        assert api_key not in json.dumps(event)


def test_409_after_a_terminal_event_means_done(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, receiver: Receiver,
    sidecar_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    receiver.terminal_seen = True  # e.g. an adapter that was not told to leave it to us
    adapter.results()
    adapter.complete()
    spec = write_spec(tmp_path / "job.json", receiver.url)
    start = time.monotonic()
    assert main([*base_args(adapter, bucket, tmp_path), "--once", "--job-spec", str(spec)]) == 0
    assert time.monotonic() - start < 5  # no retry rounds
    assert receiver.statuses() == ["running", "completed"]
    assert receiver.answers == [409, 409]
    args = [*base_args(adapter, bucket, tmp_path), "--once", "--job-spec", str(spec)]
    assert main(args) == 0  # the 409 counted as delivered: a rerun sends no terminal event
    assert receiver.statuses() == ["running", "completed", "running"]


def test_terminal_event_retried_on_5xx_and_never_sent_twice(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, receiver: Receiver,
    sidecar_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    receiver.script = [204, 503, 503]  # persisting ok, then the terminal event fails twice
    adapter.results()
    adapter.complete()
    spec = write_spec(tmp_path / "job.json", receiver.url)
    args = [*base_args(adapter, bucket, tmp_path), "--once", "--job-spec", str(spec)]
    assert main(args) == 0
    assert receiver.statuses() == ["running", "completed", "completed", "completed"]
    assert len(receiver.accepted_terminal()) == 1
    assert main(args) == 0  # a rerun (sidecar restarted) does not send it again
    assert receiver.statuses().count("completed") == 3
    assert len(receiver.accepted_terminal()) == 1


def test_partial_uploads_during_a_long_run(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, sidecar_env: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    adapter.results()
    adapter.status()
    s3 = client(s3_server.connection())
    seen_while_running: list[str] = []
    stop = threading.Event()

    def run_adapter() -> None:
        while not stop.is_set():
            adapter.status()  # heartbeat
            keys = [
                o["Key"]
                for o in s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX).get("Contents", [])
            ]
            if PREFIX + "manifest.json" in keys:
                seen_while_running.extend(keys)
                break
            time.sleep(0.2)
        adapter.complete()

    thread = threading.Thread(target=run_adapter)
    thread.start()
    try:
        assert main([*base_args(adapter, bucket, tmp_path), "--partial-every", "0.5"]) == 0
    finally:
        stop.set()
        thread.join()
    assert PREFIX + f"tiny-model/samples_{BENCH}_2025.jsonl" in seen_while_running
    status = json.loads(objects(s3_server, bucket)[PREFIX + "status.json"])
    assert status["state"] == "completed"


def test_wrong_credentials_fail_at_once_with_auth_code(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, sidecar_env: dict[str, str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    adapter.results()
    adapter.complete()
    start = time.monotonic()
    assert main([*base_args(adapter, bucket, tmp_path), "--once", "--deadline", "60"]) == 3
    assert time.monotonic() - start < 15  # not retried until the deadline
    assert "wrong-secret" not in capsys.readouterr().err


def test_missing_destination_is_a_config_error(
    adapter: FakeAdapter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.delenv("RESULTS_S3_URI", raising=False)
    monkeypatch.setenv("RESULTS_SECRET_DIR", str(tmp_path / "none"))
    assert main(["--results-dir", str(adapter.root), "--once"]) == 2
    assert "RESULTS_S3_URI" in capsys.readouterr().err


def test_python_dash_m_sidecar_and_dispatcher_agree(sidecar_env: dict[str, str]) -> None:
    for cmd in (
        [sys.executable, "-m", "sidecar", "--help"],
        [sys.executable, "-m", "airgap_eval", "upload", "--help"],
    ):
        out = subprocess.run(
            cmd, capture_output=True, text=True, env=sidecar_env, cwd=os.getcwd(), check=True
        )
        assert "--stale-after" in out.stdout


def test_adapter_failure_is_uploaded_and_reported_with_its_own_error(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, receiver: Receiver,
    sidecar_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    adapter.results()
    rec = StatusRecord(component="run", job_id=JOB_ID, benchmark_id=BENCH, phase="loading_data")
    rec.finish(MissingDataError("bundle allenai/ai2_arc missing", "run airgap-eval stage arc_easy"))
    rec.write(adapter.root / "status.json")
    (adapter.root / "done").write_text("9\n")
    spec = write_spec(tmp_path / "job.json", receiver.url)
    assert main([*base_args(adapter, bucket, tmp_path), "--once", "--job-spec", str(spec)]) == 0
    [failed] = receiver.accepted_terminal()
    assert failed["error_message"] == {
        "message": "bundle allenai/ai2_arc missing -- fix: run airgap-eval stage arc_easy",
        "message_code": "missing_data",
        "message_origin": "adapter",
    }
    uploaded = json.loads(objects(s3_server, bucket)[PREFIX + "status.json"])
    assert uploaded["error"]["code"] == "MISSING_DATA"  # the adapter's record, not rewritten


def test_writes_between_terminal_status_and_done_are_not_lost(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, sidecar_env: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    adapter.results()
    adapter.status()
    log = adapter.root / "logs" / "adapter.log"

    s3 = client(s3_server.connection())

    def first_pass_done() -> bool:
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX).get("Contents", [])
        return any(o["Key"] == PREFIX + "manifest.json" for o in listing)

    def finish_like_an_adapter() -> None:
        time.sleep(0.5)
        adapter.complete()
        (adapter.root / "done").unlink()
        while not first_pass_done():  # the sidecar uploaded on the terminal status alone
            time.sleep(0.05)
        with log.open("a") as f:
            f.write("finished in 12.5 s\n")
        (adapter.root / "done").write_text("0\n")

    thread = threading.Thread(target=finish_like_an_adapter)
    thread.start()
    try:
        assert main(base_args(adapter, bucket, tmp_path)) == 0
    finally:
        thread.join()
    assert objects(s3_server, bucket)[PREFIX + "logs/adapter.log"].endswith(b"finished in 12.5 s\n")
