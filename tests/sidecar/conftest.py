"""Sidecar test kit: a fake adapter that writes what the real one writes (status.json with a
heartbeat, results, samples, logs, the `done` marker), a real HTTP receiver for EvalHub
events on 127.0.0.1 that answers 409 after a terminal event as EvalHub does, and helpers to
run the sidecar in-process or as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from common.s3 import client
from common.status import StatusRecord
from testbed.localservers import SeaweedS3
from tests.httpstub import serving

REPO = Path(__file__).resolve().parents[2]
JOB_ID, BENCH = "job-123", "arc_easy"


@dataclass
class FakeAdapter:
    root: Path

    def status(
        self, state: str = "running", phase: str = "running_evaluation", **fields: Any
    ) -> None:
        rec = StatusRecord(
            component="run", job_id=JOB_ID, benchmark_id=BENCH, phase=phase, **fields
        )
        if state != "running":
            rec.state = state  # type: ignore[assignment]
            rec.finished_at = datetime.now(UTC)
            rec.seconds = 12.5
            rec.exit_code = 0 if state == "completed" else 11
        rec.write(self.root / "status.json")

    def stale_status(self, age_s: float) -> None:
        self.status()
        data = json.loads((self.root / "status.json").read_text())
        data["updated_at"] = (datetime.now(UTC) - timedelta(seconds=age_s)).isoformat()
        (self.root / "status.json").write_text(json.dumps(data))

    def results(self, sample_bytes: int = 200_000) -> None:
        out = self.root / "tiny-model"
        out.mkdir(parents=True, exist_ok=True)
        (out / "results_2025-01-01T00-00-00.json").write_text(
            json.dumps({"results": {BENCH: {"acc,none": 0.5}}, "config": {"model": "tiny"}})
        )
        line = json.dumps({"doc_id": 0, "resps": "x" * 200}) + "\n"
        (out / f"samples_{BENCH}_2025.jsonl").write_text(line * max(1, sample_bytes // len(line)))
        (self.root / "logs").mkdir(exist_ok=True)
        (self.root / "logs" / "adapter.log").write_text("started\nrequests 10/10\n")

    def complete(self, code: int = 0) -> None:
        self.status(
            "completed" if code == 0 else "failed",
            phase="post_processing",
            metrics={"acc": 0.5, "acc_stderr": 0.01},  # EvalHub's names (common.evalhub_metrics)
            primary_score={"metric": "acc", "value": 0.5},
            progress={"num_examples_evaluated": 10},
        )
        (self.root / "done").write_text(f"{code}\n")


@dataclass
class Receiver:
    """Records every POSTed event; 409 after a terminal one, like EvalHub. `script` holds
    status codes to answer first (fault injection: 503, ...)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # what was answered, in order
    script: list[int] = field(default_factory=list)
    terminal_seen: bool = False
    url: str = ""

    def statuses(self) -> list[str]:
        return [e["benchmark_status_event"]["status"] for e in self.events]

    def accepted_terminal(self) -> list[dict[str, Any]]:
        return [
            e["benchmark_status_event"]
            for e, code in zip(self.events, self.answers, strict=True)
            if code < 300 and e["benchmark_status_event"]["status"] in ("completed", "failed")
        ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                rec.events.append(body)
                status = body.get("benchmark_status_event", {}).get("status")
                if rec.script:
                    code = rec.script.pop(0)
                elif rec.terminal_seen:
                    code = 409
                else:
                    code = 204
                    rec.terminal_seen = status in ("completed", "failed")
                rec.answers.append(code)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler) as port:
        rec.url = f"http://127.0.0.1:{port}"
        yield rec


def write_spec(path: Path, callback_url: str, **model: Any) -> Path:
    spec = {
        "id": JOB_ID,
        "provider_id": "airgap_lm_eval",
        "benchmark_id": BENCH,
        "benchmark_index": 0,
        "model": {"url": "http://127.0.0.1:1/v1", "name": "tiny", **model},
        "parameters": {},
        "callback_url": callback_url,
        "primary_score": {"metric": "acc"},
    }
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture
def adapter(tmp_path: Path) -> FakeAdapter:
    root = tmp_path / "results"
    root.mkdir()
    return FakeAdapter(root)


@pytest.fixture
def sidecar_env(
    s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    """S3 settings in the env, no job spec or secret dir from the host leaking in."""
    monkeypatch.setenv("RESULTS_SECRET_DIR", str(tmp_path / "no-secrets"))
    monkeypatch.delenv("EVALHUB_JOB_SPEC_PATH", raising=False)
    return {**os.environ}


def objects(server: SeaweedS3, bucket: str, prefix: str = "") -> dict[str, bytes]:
    s3 = client(server.connection())
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return out


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
