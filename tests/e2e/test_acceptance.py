"""Acceptance on real benchmark rows (../shared/benchmarks, skipped when absent): bundles built
by its own build_bundles.py, scored through vLLM by `airgap-eval run` with a limit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.modelserver import VLLMServer
from testbed.tiny import TinyAssets
from tests.e2e.helpers import airgap_run, explain, job_spec, read_results, read_samples

# The first test also waits for the shared vLLM server (up to minutes on a busy machine).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

TASKS = ["arc_easy", "blimp_adjunct_island"]
LIMIT = 20


def test_real_arc_easy_and_blimp_rows(
    shared_benchmarks: Path, tiny_assets: TinyAssets, vllm_server: VLLMServer, tmp_path: Path
) -> None:
    test_data = tmp_path / "test_data"
    subprocess.run(
        [sys.executable, str(shared_benchmarks / "build_bundles.py"), "--out", str(test_data),
         "--no-legacy-aliases", "--blimp", "adjunct_island"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    # The served model has the tiny tokenizer's vocabulary: it replaces the GPT-2 one.
    shutil.rmtree(test_data / "tokenizer")
    shutil.copytree(tiny_assets.tokenizer, test_data / "tokenizer")

    spec = job_spec(vllm_server.base_url, TASKS, num_examples=LIMIT, num_concurrent=4)
    proc = airgap_run(spec, tmp_path / "run", test_data)
    assert proc.returncode == 0, explain(proc)

    results_dir = tmp_path / "run" / "results"
    results = read_results(results_dir)
    for task in TASKS:
        assert results["n-samples"][task]["effective"] == LIMIT
        assert 0.0 <= results["results"][task]["acc,none"] <= 1.0
        samples = read_samples(results_dir, task)
        assert len(samples) == LIMIT
        # real rows: arc_easy's test split starts with its first question
        assert all(s["doc"] for s in samples)
    arc = read_samples(results_dir, "arc_easy")
    real_questions = {
        row["question"] for row in json.loads(
            (shared_benchmarks / "raw" / "ai2_arc" / "ARC-Easy" / "test.json").read_text()
        )
    }  # fmt: skip
    assert {s["doc"]["question"] for s in arc} <= real_questions
    status = json.loads((results_dir / "status.json").read_text())
    assert status["state"] == "completed"
