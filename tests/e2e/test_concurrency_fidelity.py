"""Fidelity of the request loop against vLLM: `airgap-eval run` at its defaults (adaptive
concurrency, several loglikelihood prompts per /v1/completions request) scores every prompt as
a strictly serial run (num_concurrent 1, batch_size 1) does, on the same server."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.modelserver import VLLMServer
from testbed.tiny import TinyAssets
from tests.e2e.helpers import (
    airgap_run,
    explain,
    job_spec,
    loglikelihoods,
    read_results,
    read_samples,
    scores,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

TASKS = ["arc_easy", "blimp_adjunct_island", "hellaswag"]
# The same model on the same server; a prompt's logits may be computed in a different batch
# composition, so float32 noise is allowed, nothing more.
LOGLIK_TOL = 1e-4


def test_defaults_score_each_prompt_as_a_serial_run(
    tiny_assets: TinyAssets, vllm_server: VLLMServer, tmp_path: Path
) -> None:
    before = vllm_server.metric("vllm:request_success_total")
    serial = airgap_run(job_spec(vllm_server.base_url, TASKS, num_concurrent=1, batch_size=1),
                        tmp_path / "serial", tiny_assets.test_data)  # fmt: skip
    assert serial.returncode == 0, explain(serial)
    middle = vllm_server.metric("vllm:request_success_total")
    batched = airgap_run(job_spec(vllm_server.base_url, TASKS), tmp_path / "defaults",
                         tiny_assets.test_data)  # fmt: skip
    assert batched.returncode == 0, explain(batched)
    assert vllm_server.metric("vllm:request_success_total") - middle == middle - before

    ref = read_results(tmp_path / "serial" / "results")
    ours = read_results(tmp_path / "defaults" / "results")
    worst, prompts = 0.0, 0
    for task in TASKS:
        assert scores(ours, task) == scores(ref, task), task
        theirs = {s["doc_id"]: s for s in read_samples(tmp_path / "serial" / "results", task)}
        for sample in read_samples(tmp_path / "defaults" / "results", task):
            mine, other = loglikelihoods(sample), loglikelihoods(theirs[sample["doc_id"]])
            assert mine is not None and other is not None
            assert [r[1] for r in sample["filtered_resps"]] == [
                r[1] for r in theirs[sample["doc_id"]]["filtered_resps"]
            ], (task, sample["doc_id"])  # is_greedy, per prompt
            for a, b in zip(mine, other, strict=True):
                worst = max(worst, abs(a - b))
                prompts += 1
    assert prompts > 40
    assert worst <= LOGLIK_TOL, f"worst per-prompt loglikelihood difference {worst:g}"
    assert "several prompts" not in batched.stderr  # vLLM takes lists: no fallback
