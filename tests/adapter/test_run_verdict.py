"""The fast verdict: a job that will fail fails before lm_eval, datasets or transformers are
imported, with its exit code and one line naming what to fix; a missing test-data dir is
never a reason to go online. Time bounds here are loose (a shared CI box); the measured
figure is bench/startup_bench.py's."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.errors import ExitCode
from common.status import read_status
from tests.adapter.conftest import REPO, write_spec
from tests.adapter.test_run_errors import _closed_port
from tests.stub_openai import Fault, stub_server

HEAVY = ("lm_eval", "datasets", "transformers", "torch", "huggingface_hub")
# Runs the CLI in a fresh interpreter, then reports which heavy modules it imported.
SCRIPT = f"""
import json, sys
from adapter.cli import main
code = main(sys.argv[1:])
print("HEAVY=" + json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
sys.exit(code)
"""
BOUND_S = 20.0  # loose: catches a Hub retry loop (50 s before) or an index rebuild


def _run(
    tmp_path: Path, args: list[str], env_extra: dict[str, str] | None = None
) -> tuple[int, str, list[str], float, Path]:
    out = tmp_path / "results"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "AIRGAP_EVAL_", "EVALHUB_", "OPENAI_", "NLTK_"))
    }
    env |= {"AIRGAP_EVAL_WORK_DIR": str(tmp_path / "work"), "AIRGAP_EVAL_OUTPUT_DIR": str(out)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        cwd=REPO,
        env=env | (env_extra or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.monotonic() - t0
    heavy_line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY=")]
    heavy = json.loads(heavy_line[-1][6:]) if heavy_line else ["?"]
    return proc.returncode, proc.stdout + proc.stderr, heavy, seconds, out


@pytest.fixture
def model() -> Iterator[str]:
    with stub_server(Fault(echo_logprobs=True)) as url:
        yield url


def _break_bundle(test_data: Path) -> None:
    shutil.rmtree(test_data / "allenai--ai2_arc--ARC-Easy")


def _break_tokenizer(test_data: Path) -> None:
    shutil.rmtree(test_data / "tokenizer")


CASES: list[tuple[str, Any, dict[str, Any], ExitCode, str]] = [
    # id, how the tree is broken, spec changes, exit code, text the one line holds
    ("missing bundle", _break_bundle, {}, ExitCode.MISSING_DATA, "allenai--ai2_arc--ARC-Easy"),
    ("missing tokenizer", _break_tokenizer, {}, ExitCode.MISSING_DATA, "tokenizer"),
    ("unreachable endpoint", None, {"url": "closed"}, ExitCode.UNREACHABLE, "unreachable"),
    ("wrong model name", None, {"name": "nope"}, ExitCode.MODEL, "'nope' is not served"),
    ("bad spec", None, {"numfewshot": 3}, ExitCode.CONFIG, "parameters.numfewshot"),
    ("unknown task", None, {"tasks": ["arc_eazy"]}, ExitCode.CONFIG, "arc_eazy"),
]


@pytest.mark.parametrize(
    ("breakage", "spec_change", "code", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_failing_job_fails_before_the_heavy_imports(
    breakage: Any,
    spec_change: dict[str, Any],
    code: ExitCode,
    text: str,
    test_data: Path,
    tmp_path: Path,
    model: str,
) -> None:
    if breakage is not None:
        breakage(test_data)
    change = dict(spec_change)
    url = f"http://127.0.0.1:{_closed_port()}/v1" if change.pop("url", None) else model
    name = change.pop("name", "tiny")
    tasks = change.pop("tasks", ["arc_easy"])
    spec = write_spec(tmp_path / "job.json", url, tasks, **change)
    data = json.loads(spec.read_text())
    data["model"]["name"] = name
    spec.write_text(json.dumps(data))
    rc, output, heavy, seconds, out = _run(
        tmp_path, ["--job-spec", str(spec), "--test-data", str(test_data)]
    )
    assert rc == code, output
    assert len([ln for ln in output.splitlines() if f"[{code.name}]" in ln]) == 1, output
    assert heavy == [], f"imported {heavy} before failing"
    assert seconds < BOUND_S, seconds
    status = read_status(out / "status.json")
    assert status is not None and status.exit_code == code and status.error is not None
    assert text in status.error.message, status.error.message


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_missing_test_data_dir_is_named_and_never_goes_online(
    how: str, tmp_path: Path, model: str
) -> None:
    missing = tmp_path / "nope"
    spec = write_spec(tmp_path / "job.json", model, ["arc_easy"], tokenizer="tiny")
    args = ["--job-spec", str(spec)]
    if how == "flag":
        rc, output, heavy, seconds, _ = _run(tmp_path, [*args, "--test-data", str(missing)])
    else:  # the env var, as a pod sets it
        rc, output, heavy, seconds, _ = _run(
            tmp_path, args, {"AIRGAP_EVAL_TEST_DATA": str(missing)}
        )
    assert rc == ExitCode.MISSING_DATA, output
    errors = [ln for ln in output.splitlines() if "[MISSING_DATA]" in ln]
    assert len(errors) == 1 and f"test data dir {missing} does not exist" in errors[0], output
    assert "huggingface.co" not in output and heavy == []
    assert seconds < BOUND_S, seconds


def test_online_mode_bounds_a_hub_that_does_not_answer(tmp_path: Path, model: str) -> None:
    """Asked for (--offline off), online mode fetches the tokenizer from the Hub; a Hub that
    takes connections and never answers fails in the configured bound, naming the host."""
    with socket.socket() as hub:  # accepts at the TCP level (backlog), never answers
        hub.bind(("127.0.0.1", 0))
        hub.listen(16)
        endpoint = f"http://127.0.0.1:{hub.getsockname()[1]}"
        spec = write_spec(tmp_path / "job.json", model, ["arc_easy"], tokenizer="org/tok")
        rc, output, _, seconds, _ = _run(
            tmp_path,
            ["--job-spec", str(spec), "--test-data", str(tmp_path / "none"), "--offline", "off"],
            {"HF_ENDPOINT": endpoint, "AIRGAP_EVAL_ONLINE_TIMEOUT": "2"},
        )
    assert rc == ExitCode.UNREACHABLE, output
    errors = [ln for ln in output.splitlines() if "[UNREACHABLE]" in ln]
    assert len(errors) == 1 and f"from {endpoint} within 2 s" in errors[0], output
    assert seconds < BOUND_S, seconds
