"""`airgap-eval run` on bad inputs: each fails before any evaluation request with its own
exit code, a status record, the `done` marker and a message naming what to fix."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from common.errors import ExitCode
from tests.adapter.conftest import RunResult, write_spec
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
