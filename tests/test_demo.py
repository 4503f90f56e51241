"""The README's main command, `make demo` (`python -m testbed.demo`), as a user runs it: a
real SeaweedFS, a real vLLM CPU endpoint, and sync -> run -> upload as separate processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import ConfigError
from testbed.modelserver import vllm_python

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_demo_runs_the_pod_and_lands_results_in_s3(tmp_path: Path) -> None:
    try:
        vllm_python()
    except ConfigError as e:
        pytest.skip(e.one_line())
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "testbed.demo", "--workdir", str(workdir), "--limit", "3"],
        capture_output=True, text=True, timeout=1100, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    # No third-party noise in a log that is not a terminal: no progress bars (carriage
    # returns), no transformers notice about PyTorch, no setuptools deprecation block.
    for noise in ("\r", "PyTorch was not found", "it/s]", "SetuptoolsDeprecationWarning"):
        assert noise not in proc.stderr and noise not in proc.stdout, noise
    # Scores for every bundled task, printed and in lm_eval's results file.
    for task in ("arc_easy", "blimp_adjunct_island", "hellaswag", "gsm8k"):
        assert f"  {task} " in proc.stdout
    results = json.loads(next((workdir / "pod" / "results").glob("results_*.json")).read_text())
    assert set(results["results"]) == {"arc_easy", "blimp_adjunct_island", "hellaswag", "gsm8k"}
    # The sidecar uploaded the results, the status and the manifest (printed from the S3 listing).
    for name in (
        "manifest.json",
        "status.json",
        "results_",
        "samples_arc_easy_",
        "logs/adapter.log",
    ):
        assert f"s3://results/demo/demo-job/demo/{name}" in proc.stdout
    status = json.loads((workdir / "pod" / "results" / "status.json").read_text())
    assert status["state"] == "completed" and status["exit_code"] == 0
    # The init container's record, and /test_data left untouched by the adapter (read-only).
    sync_status = json.loads(
        (workdir / "pod" / "test_data" / ".airgap-eval" / "sync-status.json").read_text()
    )
    assert sync_status["state"] == "completed"
    # Every process the demo started is gone.
    ps = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True)
    assert ps.stdout == "", ps.stdout
