"""Fidelity: `airgap-eval run` (offline, /test_data read-only, against vLLM) and lm_eval's own
`hf` model in-process score the same tiny model on the same files identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.modelserver import VLLMServer
from testbed.tiny import TinyAssets
from tests.e2e.helpers import (
    airgap_run,
    explain,
    hf_reference,
    job_spec,
    loglikelihoods,
    read_results,
    read_samples,
    scores,
    tree_snapshot,
)

# The first test also waits for the shared vLLM server (up to minutes on a busy machine).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# A blimp subgroup's member, arc_easy, hellaswag (process_docs .map on read-only data) and
# gsm8k (generation, its default 5-shot from the train split).
TASKS = ["arc_easy", "blimp_adjunct_island", "hellaswag", "gsm8k"]
# Short generations: HF's generate on 2 busy cores takes ~0.1 s a token.
GEN_KWARGS = {"max_gen_toks": 32}
# vLLM and torch sum in different orders: loglikelihoods agree to float32 noise.
LOGLIK_TOL = 1e-3


def test_airgap_run_scores_match_lm_eval_hf_in_process(
    tiny_assets: TinyAssets, vllm_server: VLLMServer, tmp_path: Path
) -> None:
    before = tree_snapshot(tiny_assets.test_data)
    spec = job_spec(vllm_server.base_url, TASKS, num_concurrent=2, gen_kwargs=GEN_KWARGS)
    proc = airgap_run(spec, tmp_path / "airgap", tiny_assets.test_data)
    assert proc.returncode == 0, explain(proc)
    assert tree_snapshot(tiny_assets.test_data) == before, "the run wrote into /test_data"

    results_dir = tmp_path / "airgap" / "results"
    ours = read_results(results_dir)
    ref = hf_reference(tiny_assets, tiny_assets.test_data, TASKS, tmp_path / "ref.json", GEN_KWARGS)

    for task in TASKS:
        assert scores(ours, task) == pytest.approx(scores(ref, task), abs=1e-6), task
        assert ours["n-samples"][task]["effective"] == ref["results"][task]["sample_len"]

    worst = 0.0
    for task in TASKS:
        for sample in read_samples(results_dir, task):
            theirs = ref["samples"][task][f"{sample['doc_id']}/{sample['filter']}"]
            mine = loglikelihoods(sample)
            if mine is None:  # generation: the same greedy text, the same extracted answer
                assert sample["resps"] == theirs["resps"], (task, sample["doc_id"])
                assert sample["filtered_resps"] == theirs["filtered_resps"], (
                    task,
                    sample["doc_id"],
                )
                continue
            assert mine == pytest.approx(theirs["loglikelihoods"], abs=LOGLIK_TOL), (
                task,
                sample["doc_id"],
            )
            worst = max(
                worst, *(abs(a - b) for a, b in zip(mine, theirs["loglikelihoods"], strict=True))
            )
    print(f"fidelity: identical metrics on {TASKS}; max |loglikelihood difference| {worst:.2e}")

    status = json.loads((results_dir / "status.json").read_text())
    assert status["state"] == "completed", status
    # EvalHub's names for the benchmark (arc_easy): common.evalhub_metrics
    assert status["metrics"]["acc"] == pytest.approx(scores(ref, "arc_easy")["acc,none"])
