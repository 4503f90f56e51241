"""Every lm_eval benchmark EvalHub's collections name (those in lm_eval 0.4.13) runs offline:
tiny bundles in each dataset's real schema (testbed.collections), punkt_tab staged by stage's
own nltk step, `airgap-eval verify` on the tree, then `airgap-eval run` per benchmark against
the session's vLLM CPU server, and the metric names EvalHub scores are in the results."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.layout import MANIFEST_NAME, NLTK_DIR_NAME, TOKENIZER_DIR_NAME
from common.manifest import build_manifest
from testbed.collections import COLLECTION_BENCHMARKS, build_collection_bundles, build_punkt_tab
from testbed.modelserver import VLLMServer
from testbed.tiny import TinyAssets
from tests.e2e.helpers import airgap_run, explain, job_spec, read_results, read_samples

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# benchmark -> the metrics the job reports to EvalHub (status.json's `metrics`, lm_eval's names).
METRICS = {
    "leaderboard_ifeval": {"inst_level_strict_acc", "prompt_level_strict_acc"},
    "leaderboard_bbh": {"acc_norm"},
    "leaderboard_gpqa": {"acc_norm"},
    "leaderboard_mmlu_pro": {"acc"},
    "leaderboard_musr": {"acc_norm"},
    "leaderboard_math_hard": {"exact_match"},
    "ifeval": {"inst_level_strict_acc", "prompt_level_loose_acc"},
    "gsm8k_platinum_cot_llama": {"exact_match"},
    "mmlu_cot_llama": {"exact_match"},
    "truthfulqa_mc1": {"acc"},
    "toxigen": {"acc", "acc_norm"},
    "winogender": set(),  # a tag, not a group: lm_eval reports its 7 tasks one by one
    "crows_pairs_english": {"likelihood_diff", "pct_stereotype"},
    "bbq": {"acc", "accuracy_amb", "accuracy_disamb", "amb_bias_score_Age"},
    "ethics_cm": {"acc"},
    "bigbench_hhh_alignment_multiple_choice": {"acc"},
}
LIMIT = 2


def _leaves() -> dict[str, set[str]]:
    from tasks.index import load_index, resolve_tasks

    index = load_index()
    return {
        b: {leaf.name for leaf in resolve_tasks([b], index).leaves} for b in COLLECTION_BENCHMARKS
    }


LEAVES = _leaves()


@pytest.fixture(scope="module")
def tree(tiny_assets: TinyAssets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundles of all 16 benchmarks, the served model's tokenizer, punkt_tab staged by
    stage's nltk step (from a local nltk data dir: nltk's index is not reachable here)."""
    from staging.stage import save_nltk

    base = tmp_path_factory.mktemp("collections")
    root = base / "test_data"
    task_slugs = build_collection_bundles(root, COLLECTION_BENCHMARKS)
    shutil.copytree(tiny_assets.tokenizer, root / TOKENIZER_DIR_NAME)
    with pytest.MonkeyPatch.context() as mp:  # not for the runs: they read the staged copy
        mp.setenv("NLTK_DATA", str(build_punkt_tab(base / "nltk_src")))
        save_nltk("punkt_tab", root)
    build_manifest(
        root,
        tasks=task_slugs,
        tokenizer=TOKENIZER_DIR_NAME,
        assets={"nltk": ["punkt_tab"], "evaluate": []},
    ).dump(root / MANIFEST_NAME)
    return root


def test_every_benchmark_has_a_schema_and_verify_passes(tree: Path) -> None:
    assert set(METRICS) == set(COLLECTION_BENCHMARKS)
    assert (tree / NLTK_DIR_NAME / "tokenizers" / "punkt_tab" / "english").is_dir()
    proc = subprocess.run(
        [sys.executable, "-m", "airgap_eval", "verify", str(tree), "--json",
         "--tasks", *COLLECTION_BENCHMARKS],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["ok"] and all(i["status"] == "ok" for i in report["items"])
    # every subtask of the groups: bbh's 24, math_hard's 7, mmlu_cot_llama's 57
    tasks = {i["task"] for i in report["items"]}
    assert sum(t.startswith("leaderboard_bbh_") for t in tasks) == 24
    assert sum(t.startswith("leaderboard_math_") for t in tasks) == 7
    assert sum(t.startswith("mmlu_cot_llama_") for t in tasks) == 57


@pytest.fixture(scope="module")
def collection_run(
    tree: Path, vllm_server: VLLMServer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One job over all 16 benchmarks (one start-up, not 16: CI time), a couple of docs each;
    every benchmark, group or tag is built and scored exactly as in a job of its own.
    Returns the results dir."""
    workdir = tmp_path_factory.mktemp("collection-run")
    # the tiny model's window is 512 tokens: short generations (its answers are noise anyway)
    spec = job_spec(
        vllm_server.base_url, COLLECTION_BENCHMARKS, num_examples=LIMIT,
        num_concurrent=8, gen_kwargs={"max_gen_toks": 24},
    )  # fmt: skip
    proc = airgap_run(spec, workdir, tree)
    assert proc.returncode == 0, explain(proc)
    return workdir / "results"


@pytest.mark.parametrize("benchmark", COLLECTION_BENCHMARKS)
def test_benchmark_runs_offline(benchmark: str, tree: Path, collection_run: Path) -> None:
    status = json.loads((collection_run / "status.json").read_text())
    assert status["state"] == "completed"
    results = read_results(collection_run)
    leaves = [t for t in results["n-samples"] if t in LEAVES[benchmark]]
    assert leaves and all(0 < results["n-samples"][t]["effective"] <= LIMIT for t in leaves)
    # what EvalHub receives: the first benchmark's metrics plain, the others as <task>/<metric>
    reported = {
        m.removeprefix(f"{benchmark}/")
        for m in status["metrics"]
        if (benchmark == COLLECTION_BENCHMARKS[0] and "/" not in m) or m.startswith(f"{benchmark}/")
    }
    assert METRICS[benchmark] <= reported, sorted(reported)
    if benchmark == "winogender":  # a tag: its tasks report one by one
        assert {t: "acc,none" in results["results"][t] for t in leaves} == dict.fromkeys(
            leaves, True
        )
    if benchmark in ("ifeval", "leaderboard_ifeval"):
        # scored with the staged punkt_tab (sentence counting) and langdetect
        sample = read_samples(collection_run, benchmark)[0]
        assert "length_constraints:number_sentences" in sample["doc"]["instruction_id_list"]
        assert len(sample["inst_level_strict_acc"]) == 3
