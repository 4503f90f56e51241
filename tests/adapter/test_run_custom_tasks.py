"""Benchmarks EvalHub names that lm_eval 0.4.13 lacks (long-context-v1's mrcr*): `slugs`,
`verify` and `run` say so and name the custom-task route, and that route works: task YAMLs
staged under the tree's tasks/ (stage --include-path) and passed as parameters.include_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from common.errors import ExitCode
from common.layout import TASKS_DIR_NAME, TOKENIZER_DIR_NAME
from staging.stage import stage
from tests.adapter.conftest import REPO, RunResult, write_spec
from tests.stub_openai import Fault, stub_server

# A stand-in for MRCR under the name EvalHub sends: a multiple-choice task over local rows.
CUSTOM = """task: mrcr_2needle
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""
Run = Callable[..., RunResult]
ROWS = [{"question": f"needle {i}?", "choices": ["a", "b"], "answer": i % 2} for i in range(3)]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "AIRGAP_EVAL_"))}
    return subprocess.run(
        [sys.executable, "-m", "airgap_eval", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_mrcr_is_named_with_the_custom_task_route(
    test_data: Path, tmp_path: Path, run_cli: Run
) -> None:
    for proc in (_cli("slugs", "mrcr"), _cli("verify", str(test_data), "--tasks", "mrcr_2needle")):
        assert proc.returncode == ExitCode.CONFIG, proc.stderr
        assert "no such task in lm_eval 0.4.13" in proc.stderr
        assert "--include-path" in proc.stderr and "Traceback" not in proc.stderr
    fault = Fault(echo_logprobs=True)
    with stub_server(fault) as url:
        spec = write_spec(tmp_path / "job.json", url, ["mrcr_4needle"])
        r = run_cli(["--job-spec", str(spec), "--test-data", str(test_data)])
    assert r.code == ExitCode.CONFIG, r.output
    error = r.status.error
    assert error is not None and "mrcr_4needle: no such task in lm_eval 0.4.13" in error.message
    assert "parameters.include_path" in (error.hint or "") and "did you mean" not in error.message
    assert fault.hits == []


def test_a_custom_task_staged_under_the_tree_runs(
    tiny_tree: Path, tmp_path: Path, run_cli: Run
) -> None:
    data = tmp_path / "connected" / "rows.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    folder = tmp_path / "connected" / "mrcr"
    folder.mkdir()
    (folder / "mrcr_2needle.yaml").write_text(CUSTOM.format(data=data))
    tree = tmp_path / "test_data"
    result = stage(
        ["mrcr_2needle"], str(tiny_tree / TOKENIZER_DIR_NAME), tree, include_path=[folder]
    )
    assert not result.failures
    staged = tree / TASKS_DIR_NAME / "mrcr"
    assert (staged / "mrcr_2needle.yaml").is_file()
    assert f"{TASKS_DIR_NAME}/mrcr/mrcr_2needle.yaml" in result.manifest.files
    data.unlink()  # the cluster has only the tree

    fault = Fault(echo_logprobs=True)
    with stub_server(fault) as url:
        spec = write_spec(tmp_path / "job.json", url, ["mrcr_2needle"], include_path=[str(staged)])
        r = run_cli(["--job-spec", str(spec), "--test-data", str(tree)])
    assert r.code == 0, r.output
    assert r.status.state == "completed"
    assert "acc" in (r.status.metrics or {})
