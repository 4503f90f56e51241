"""`airgap-eval run` with EvalHub's collection keys, as a pod runs it, against testbed.gpustub
(logprobs a pure function of the prompt): repetitions, a secondary metric and a blocking
subtask end up in the results files, status.json and the logs; a chat template asked of a
tokenizer without one fails in preflight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.errors import ExitCode
from testbed.gpustub import Config, GpuStub
from tests.adapter.conftest import REPO, RunResult

# A group without an aggregate of its own over two staged tasks (EvalHub then averages them).
GROUP = """\
group: tiny_pair
task: [arc_easy, blimp_adjunct_island]
metadata:
  version: 1.0
"""

Runner = Callable[..., RunResult]


@pytest.fixture
def run_job(tiny_tree: Path, tmp_path: Path) -> Runner:
    (tmp_path / "groups").mkdir()
    (tmp_path / "groups" / "tiny_pair.yaml").write_text(GROUP)

    def run(benchmark: str, test_data: Path = tiny_tree, **parameters: Any) -> RunResult:
        spec = tmp_path / "job.json"
        spec.write_text(json.dumps({
            "id": "job-c", "benchmark_id": benchmark, "model": {"url": "", "name": "tiny"},
            "num_examples": 3,
            "parameters": {"include_path": [str(tmp_path / "groups")], **parameters},
        }))  # fmt: skip
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HF_", "AIRGAP_EVAL_", "EVALHUB_", "OPENAI_", "NLTK_"))
        }
        with GpuStub(Config(latency=0.001, slots=64)) as stub:
            proc = subprocess.run(
                [sys.executable, "-m", "adapter", "--job-spec", str(spec), "--model-url",
                 stub.base_url, "--test-data", str(test_data), "--output-dir",
                 str(tmp_path / "results"), "--work-dir", str(tmp_path / "work")],
                cwd=REPO, env=clean, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
        return RunResult(proc.returncode, proc.stdout + proc.stderr, tmp_path / "results")

    return run


def test_repetitions_secondary_and_blocking_subtask_are_reported(run_job: Runner) -> None:
    r = run_job(
        "tiny_pair", repetitions=3, seed=7,
        secondary_metric="acc_norm", secondary_threshold=0.0,
        blocking_subtask="adjunct_island", blocking_subtask_threshold=1.01,
    )  # fmt: skip
    assert r.code == 0, r.output[-4000:]
    status = r.status
    # three lm_eval runs, seeds 7, 8, 9, each with its own results file
    reps = status.repetitions
    assert reps is not None and reps["n"] == 3
    assert [run["seed"] for run in reps["runs"]] == [7, 8, 9]
    files = sorted(f.name for f in r.out_dir.rglob("results_*.json"))
    assert len(files) == 3 and sorted(f for run in reps["runs"] for f in run["results_files"]
                                      if f.startswith("results_")) == files  # fmt: skip
    for f in r.out_dir.rglob("results_*.json"):
        seed = json.loads(f.read_text())["config"]["random_seed"]
        assert seed in (7, 8, 9)
    # the mean is what EvalHub gets; every run's metrics and the spread beside it
    for metric, value in status.metrics.items():
        runs = [run["metrics"][metric] for run in reps["runs"]]
        assert value == pytest.approx(sum(runs) / 3)
        assert reps["metrics"][metric]["min"] == min(runs)
    # loglikelihoods do not depend on the seed: the runs agree, the spread is 0
    assert reps["metrics"]["acc"]["stdev"] == 0.0
    secondary, blocking = status.criteria or []
    assert secondary["kind"] == "secondary" and secondary["metric"] == "acc_norm"
    assert secondary["value"] == status.metrics["acc_norm"] and secondary["pass"] is True
    assert blocking["task"] == "blimp_adjunct_island" and blocking["metric"] == "acc"
    assert blocking["pass"] is False and blocking["blocking"] is True  # threshold 1.01
    summary = json.loads((r.out_dir / "criteria.json").read_text())
    assert summary["criteria"] == status.criteria
    assert summary["repetitions"] == reps
    assert "blocking subtask adjunct_island (blimp_adjunct_island acc)" in r.output
    assert "a blocking finding" in r.output


def test_a_single_run_keeps_lm_eval_defaults_and_reports_no_repetitions(run_job: Runner) -> None:
    r = run_job("arc_easy", secondary_metric="accuracy_ambig", secondary_threshold=0.7)
    assert r.code == 0, r.output[-4000:]
    assert r.status.repetitions is None
    (item,) = r.status.criteria or []
    assert item["value"] is None and "pass" not in item
    assert "no metric 'accuracy_ambig'" in item["note"] and "acc_norm" in item["note"]
    assert len(list(r.out_dir.rglob("results_*.json"))) == 1


def test_chat_template_asked_of_a_tokenizer_without_one_fails_in_preflight(
    run_job: Runner, test_data: Path
) -> None:
    r = run_job("arc_easy", test_data=test_data, apply_chat_template=True)
    assert r.code == ExitCode.MISSING_DATA, r.output[-4000:]
    error = r.status.error
    assert error is not None
    assert f"the tokenizer {test_data / 'tokenizer'} has no chat template" in error.message
    assert "Traceback" not in r.output
    assert not list(r.out_dir.rglob("results_*.json"))
