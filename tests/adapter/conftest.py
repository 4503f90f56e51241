"""Fixtures for the `airgap-eval run` tests: a tiny real-format /test_data tree (the e2e
helper's testbed.tiny), and the CLI run as a pod runs it (a subprocess with its own env,
so the offline variables are set before anything imports `datasets`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.status import StatusRecord, read_status

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from testbed.tiny import build_test_data

    return build_test_data(tmp_path_factory.mktemp("tiny") / "test_data")


@pytest.fixture
def test_data(tiny_tree: Path, tmp_path: Path) -> Path:
    """A private, writable copy each test may break."""
    return Path(shutil.copytree(tiny_tree, tmp_path / "test_data"))


@dataclass
class RunResult:
    code: int
    output: str
    out_dir: Path
    seconds: float | None = None  # the whole command, start-up included

    @property
    def status(self) -> StatusRecord:
        record = read_status(self.out_dir / "status.json")
        assert record is not None, f"no status.json; output:\n{self.output}"
        return record

    @property
    def done(self) -> str:
        return (self.out_dir / "done").read_text().strip()


def write_spec(path: Path, url: str, tasks: list[str], **parameters: Any) -> Path:
    spec = {
        "id": "job-1",
        "benchmark_id": tasks[0],
        "model": {"url": url, "name": "tiny"},
        "num_examples": 2,
        "parameters": {"tasks": tasks, **parameters},
    }
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., RunResult]:
    def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 240) -> RunResult:
        out = tmp_path / "results"
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HF_", "AIRGAP_EVAL_", "EVALHUB_", "OPENAI_", "NLTK_"))
        }
        full_env = (
            clean
            | {"AIRGAP_EVAL_WORK_DIR": str(tmp_path / "work"), "AIRGAP_EVAL_OUTPUT_DIR": str(out)}
            | (env or {})
        )
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "adapter", *args],
            cwd=REPO,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        seconds = time.monotonic() - started
        return RunResult(proc.returncode, proc.stdout + proc.stderr, out, seconds)

    return run
