"""`airgap-eval run` on bad inputs: each fails before any evaluation request with its own
exit code, a status record, the `done` marker and a message naming what to fix."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from common.errors import ExitCode
from tests.adapter.conftest import RunResult, write_spec
from tests.httpstub import silent
from tests.stub_openai import Fault, stub_server

TASKS = ["arc_easy", "gsm8k", "hellaswag", "blimp_adjunct_island"]
Run = Callable[..., RunResult]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _assert_failed(r: RunResult, code: ExitCode, error_code: str) -> str:
    assert r.code == code, r.output
    status = r.status
    assert status.state == "failed" and status.exit_code == code
    assert status.error is not None and status.error.code == error_code
    assert r.done == str(int(code))
    assert (r.out_dir / "logs" / "adapter.log").is_file()
    assert "Traceback" not in r.output
    return status.error.message + " -- " + (status.error.hint or "")


@pytest.fixture
def hub_listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[Any]]]:
    """A stand-in Hub (HF_ENDPOINT) that records every connection and never answers."""
    accepted: list[Any] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


@pytest.mark.parametrize("tree", ["empty", "tokenizer only", "lost+found only"])
def test_an_empty_or_incomplete_dir_is_missing_data_at_once_and_never_online(
    tree: str, tmp_path: Path, run_cli: Run, hub_listener: tuple[str, list[Any]]
) -> None:
    hub, accepted = hub_listener
    data = tmp_path / "test_data"
    data.mkdir()
    tokenizer = "gpt2"  # a Hub id: nothing but the tree points at offline
    if tree == "tokenizer only":
        (data / "tokenizer").mkdir()
        (data / "tokenizer" / "tokenizer.json").write_text("{}")
        tokenizer = str(data / "tokenizer")
    elif tree == "lost+found only":
        (data / "lost+found").mkdir()
    spec = write_spec(
        tmp_path / "job.json", "http://127.0.0.1:9/v1", ["arc_easy"], tokenizer=tokenizer
    )
    r = run_cli(
        ["--job-spec", str(spec), "--test-data", str(data)],
        env={"HF_ENDPOINT": hub, "AIRGAP_EVAL_ONLINE_TIMEOUT": "30"},
    )
    text = _assert_failed(r, ExitCode.MISSING_DATA, "MISSING_DATA")
    assert str(data) in text
    if tree == "tokenizer only":
        assert "allenai--ai2_arc--ARC-Easy" in text and "airgap-eval stage" in text
    else:
        assert "nothing synced" in text and "airgap-eval sync" in text
    mode = next(line for line in r.output.splitlines() if "mode (" in line)
    assert "offline mode" in mode and ("empty" in mode or "tokenizer" in mode), r.output
    assert accepted == []  # nothing contacted the Hub
    assert "online" not in r.output
    assert r.seconds is not None and r.seconds < 10  # ~0.6 s here: no Hub wait, no task build
    print(f"{tree}: exit {r.code} in {r.seconds:.2f} s")


def test_an_early_failure_still_reports_failed_to_evalhub(
    tmp_path: Path, run_cli: Run, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    callback, events = receiver
    (tmp_path / "test_data").mkdir()
    spec = write_spec(tmp_path / "job.json", "http://127.0.0.1:9/v1", ["arc_easy"])
    spec.write_text(json.dumps(json.loads(spec.read_text()) | {"callback_url": callback}))
    r = run_cli(["--job-spec", str(spec), "--test-data", str(tmp_path / "test_data")])
    _assert_failed(r, ExitCode.MISSING_DATA, "MISSING_DATA")
    assert [e["status"] for e in events] == ["failed"]
    assert events[0]["error_message"]["message_code"] == "missing_data"


def _sync(dest: Path, endpoint: str, **popen: Any) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TEST_DATA_"))}
    env |= {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_DEFAULT_REGION": "x"}
    args = ["--bucket", "evals", "--prefix", "p", "--dest", str(dest), "--endpoint", endpoint]
    return subprocess.Popen(
        [sys.executable, "-m", "airgap_eval", "sync", *args, "--timeout", "20"],
        env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen,
    )  # fmt: skip


def test_a_failed_sync_ends_the_run_with_the_syncs_error(
    test_data: Path, tmp_path: Path, run_cli: Run
) -> None:
    """The tree even holds a manifest.json: the sync's record says what went wrong."""
    sync = _sync(test_data, f"http://127.0.0.1:{_closed_port()}")
    sync_output, _ = sync.communicate(timeout=60)
    assert sync.returncode == ExitCode.UNREACHABLE, sync_output
    spec = write_spec(tmp_path / "job.json", "http://127.0.0.1:9/v1", ["arc_easy"])
    r = run_cli(["--job-spec", str(spec), "--test-data", str(test_data)])
    text = _assert_failed(r, ExitCode.MISSING_DATA, "MISSING_DATA")
    assert f"the sync into {test_data} failed: [UNREACHABLE]" in text
    assert "rerun the sync" in text and "airgap-eval stage" not in text
    assert r.seconds is not None and r.seconds < 10
    print(f"failed sync: exit {r.code} in {r.seconds:.2f} s")


def test_a_killed_sync_is_an_unfinished_one(tmp_path: Path, run_cli: Run) -> None:
    data = tmp_path / "test_data"
    with silent() as port:  # the S3 server hangs: the sync is mid-way when killed
        sync = _sync(data, f"http://127.0.0.1:{port}")
        record = data / ".airgap-eval" / "sync-status.json"
        deadline = time.monotonic() + 30
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        sync.kill()
        sync.wait()
    assert json.loads(record.read_text())["state"] == "running"
    spec = write_spec(tmp_path / "job.json", "http://127.0.0.1:9/v1", ["arc_easy"])
    r = run_cli(["--job-spec", str(spec), "--test-data", str(data)])
    text = _assert_failed(r, ExitCode.MISSING_DATA, "MISSING_DATA")
    assert "has not finished" in text and "rerun the sync" in text
    print(f"killed sync: exit {r.code} in {r.seconds:.2f} s")


def test_every_missing_bundle_is_listed_in_one_error(
    test_data: Path, tmp_path: Path, run_cli: Run
) -> None:
    shutil.rmtree(test_data / "openai--gsm8k--main")
    shutil.rmtree(test_data / "nyu-mll--blimp--adjunct_island")
    fault = Fault()
    with stub_server(fault) as url:
        spec = write_spec(tmp_path / "job.json", url, TASKS)
        r = run_cli(["--job-spec", str(spec), "--test-data", str(test_data)])
    text = _assert_failed(r, ExitCode.MISSING_DATA, "MISSING_DATA")
    assert "openai--gsm8k--main" in text and "nyu-mll--blimp--adjunct_island" in text
    assert "airgap-eval stage" in text and "gsm8k" in text and "blimp_adjunct_island" in text
    assert fault.hits == []  # nothing was asked of the model


def test_a_missing_tokenizer_is_reported(test_data: Path, tmp_path: Path, run_cli: Run) -> None:
    shutil.rmtree(test_data / "tokenizer")
    with stub_server(Fault()) as url:
        spec = write_spec(tmp_path / "job.json", url, ["arc_easy"])
        r = run_cli(["--job-spec", str(spec), "--test-data", str(test_data)])
    text = _assert_failed(r, ExitCode.MISSING_DATA, "MISSING_DATA")
    assert "tokenizer" in text


def test_a_corrupt_bundle_is_reported(test_data: Path, tmp_path: Path, run_cli: Run) -> None:
    for arrow in (test_data / "allenai--ai2_arc--ARC-Easy").rglob("*.arrow"):
        arrow.write_bytes(b"not arrow at all")
    with stub_server(Fault()) as url:
        spec = write_spec(tmp_path / "job.json", url, ["arc_easy"])
        r = run_cli(["--job-spec", str(spec), "--test-data", str(test_data)])
    text = _assert_failed(r, ExitCode.MISSING_DATA, "MISSING_DATA")
    assert "allenai--ai2_arc--ARC-Easy" in text and "unreadable" in text


def test_an_unknown_spec_field_is_named(test_data: Path, tmp_path: Path, run_cli: Run) -> None:
    spec = write_spec(tmp_path / "job.json", "http://127.0.0.1:9/v1", ["arc_easy"], numfewshot=3)
    r = run_cli(["--job-spec", str(spec), "--test-data", str(test_data)])
    text = _assert_failed(r, ExitCode.CONFIG, "CONFIG")
    assert "unknown field 'parameters.numfewshot'" in text


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"num_examples": -1}, "num_examples: must be a positive integer (got -1)"),
        ({"num_examples": 0}, "num_examples: must be a positive integer (got 0)"),
        ({"num_examples": "ten"}, "num_examples: must be a positive integer (got 'ten')"),
        ({"modle": {"name": "tiny"}}, "unknown field 'modle' (did you mean 'model'?)"),
        ({"parameters": {"num_fewshot": -1}}, "parameters.num_fewshot"),
        ({"parameters": {"seed": -5}}, "parameters.seed"),
        ({"parameters": {"batch_size": "many"}}, "parameters.batch_size"),
    ],
)
def test_a_bad_spec_field_is_config_before_anything_else(
    change: dict[str, Any], named: str, test_data: Path, tmp_path: Path, run_cli: Run
) -> None:
    spec = write_spec(tmp_path / "job.json", "http://127.0.0.1:9/v1", ["arc_easy"])
    data = json.loads(spec.read_text())
    if "modle" in change:  # misspelled: the right name is absent
        del data["model"]
    data |= change
    if "parameters" in change:
        data["parameters"] = {"tasks": ["arc_easy"], **change["parameters"]}
    spec.write_text(json.dumps(data))
    r = run_cli(["--job-spec", str(spec), "--test-data", str(test_data)])
    text = _assert_failed(r, ExitCode.CONFIG, "CONFIG")
    assert named in text, text
    assert "phase: loading_data" not in r.output and "rerun" not in text
    print(f"{change}: exit {r.code} in {r.seconds:.2f} s")


def test_an_unknown_task_is_named(test_data: Path, tmp_path: Path, run_cli: Run) -> None:
    spec = write_spec(tmp_path / "job.json", "http://127.0.0.1:9/v1", ["arc_easy", "arc_eazy"])
    r = run_cli(["--job-spec", str(spec), "--test-data", str(test_data)])
    assert "arc_eazy" in _assert_failed(r, ExitCode.CONFIG, "CONFIG")


def test_an_unreachable_model_fails_fast(test_data: Path, tmp_path: Path, run_cli: Run) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    spec = write_spec(tmp_path / "job.json", url, ["arc_easy"])
    r = run_cli(["--job-spec", str(spec), "--test-data", str(test_data)])
    text = _assert_failed(r, ExitCode.UNREACHABLE, "UNREACHABLE")
    assert url in text
    assert (r.status.seconds or 99) < 60  # no retry loop, no 300 s request timeout


def test_a_refused_api_key_is_an_auth_error_and_the_key_stays_secret(
    test_data: Path, tmp_path: Path, run_cli: Run
) -> None:
    fault = Fault(models_status=401)
    secrets = tmp_path / "model-auth"
    secrets.mkdir()
    (secrets / "api-key").write_text("sk-very-secret-key\n")
    with stub_server(fault) as url:
        spec = write_spec(tmp_path / "job.json", url, ["arc_easy"])
        data = json.loads(spec.read_text())
        data["model"]["auth"] = {"secret_ref": f"file://{secrets}"}
        spec.write_text(json.dumps(data))
        r = run_cli(
            ["--job-spec", str(spec), "--test-data", str(test_data)], env={"EVALHUB_MODE": "local"}
        )
    _assert_failed(r, ExitCode.AUTH, "AUTH")
    assert fault.auth_headers == ["Bearer sk-very-secret-key"]  # the SDK's model auth found it
    for f in r.out_dir.rglob("*"):
        if f.is_file():
            assert "sk-very-secret-key" not in f.read_text(errors="replace"), f
    assert "sk-very-secret-key" not in r.output


def test_loglikelihood_tasks_are_refused_on_a_chat_endpoint(
    test_data: Path, tmp_path: Path, run_cli: Run
) -> None:
    fault = Fault()
    with stub_server(fault) as url:
        spec = write_spec(tmp_path / "job.json", url, ["arc_easy", "gsm8k"], model_type="chat")
        r = run_cli(["--job-spec", str(spec), "--test-data", str(test_data)])
    text = _assert_failed(r, ExitCode.CONFIG, "CONFIG")
    assert "arc_easy" in text and "loglikelihood" in text and "gsm8k" not in text.split("--")[0]
    assert fault.hits.count("POST /v1/chat/completions") == 1  # the probe, nothing more


def test_an_endpoint_without_echo_logprobs_is_refused(
    test_data: Path, tmp_path: Path, run_cli: Run
) -> None:
    fault = Fault(echo_logprobs=False)
    with stub_server(fault) as url:
        spec = write_spec(tmp_path / "job.json", url, ["arc_easy"])
        r = run_cli(["--job-spec", str(spec), "--test-data", str(test_data)])
    assert "echo" in _assert_failed(r, ExitCode.MODEL, "MODEL")


def test_a_persistent_5xx_fails_the_probe_after_retries(
    test_data: Path, tmp_path: Path, run_cli: Run
) -> None:
    fault = Fault(completions_status=503)
    with stub_server(fault) as url:
        spec = write_spec(tmp_path / "job.json", url, ["arc_easy"], max_retries=2)
        r = run_cli(["--job-spec", str(spec), "--test-data", str(test_data)])
    assert "HTTP 503" in _assert_failed(r, ExitCode.MODEL, "MODEL")
    assert fault.hits.count("POST /v1/completions") == 2


EGRESS_TASK = """
task: egress_probe
dataset_path: local/egress_probe
output_type: multiple_choice
test_split: test
doc_to_text: !function utils.text
doc_to_target: 0
doc_to_choice: ["a", "b"]
metric_list:
  - metric: acc
"""
EGRESS_UTILS = """
import urllib.request
urllib.request.urlopen("http://datasets.example.org/extra.json", timeout=30)
def text(doc):
    return doc["q"]
"""


def test_an_egress_attempt_fails_at_once_naming_the_host(
    test_data: Path, tmp_path: Path, run_cli: Run
) -> None:
    from datasets import Dataset, DatasetDict

    tasks_dir = tmp_path / "custom_tasks"
    tasks_dir.mkdir()
    (tasks_dir / "egress_probe.yaml").write_text(EGRESS_TASK)
    (tasks_dir / "utils.py").write_text(EGRESS_UTILS)
    DatasetDict({"test": Dataset.from_dict({"q": ["x?"]})}).save_to_disk(
        str(test_data / "local--egress_probe")
    )
    with stub_server(Fault(echo_logprobs=True)) as url:
        spec = write_spec(
            tmp_path / "job.json", url, ["egress_probe"], include_path=[str(tasks_dir)]
        )
        r = run_cli(["--job-spec", str(spec), "--test-data", str(test_data)])
    text = _assert_failed(r, ExitCode.UNREACHABLE, "UNREACHABLE")
    assert "datasets.example.org:80" in text
    assert (r.status.seconds or 99) < 60


class _Receiver(BaseHTTPRequestHandler):
    events: list[dict[str, Any]]

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.events.append(json.loads(body)["benchmark_status_event"])
        self.send_response(204)
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    events: list[dict[str, Any]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("R", (_Receiver,), {"events": events}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", events
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("owner", ["adapter", "sidecar"])
def test_the_terminal_event_rule(
    owner: str,
    test_data: Path,
    tmp_path: Path,
    run_cli: Run,
    receiver: tuple[str, list[dict[str, Any]]],
) -> None:
    callback, events = receiver
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    spec = write_spec(tmp_path / "job.json", url, ["arc_easy"])
    data = json.loads(spec.read_text()) | {"callback_url": callback}
    spec.write_text(json.dumps(data))
    r = run_cli(
        ["--job-spec", str(spec), "--test-data", str(test_data), "--wait-uploaded", "1"],
        env={"AIRGAP_EVAL_TERMINAL_EVENTS": owner},
    )
    _assert_failed(r, ExitCode.UNREACHABLE, "UNREACHABLE")
    states = [(e["status"], e.get("phase")) for e in events]
    assert states[0] == ("running", "initializing")
    if owner == "adapter":
        assert states[-1][0] == "failed"
        assert events[-1]["error_message"]["message_code"] == "unreachable"
    else:
        assert all(s == "running" for s, _ in states)
