"""A collection end to end: EvalHub's own `leaderboard-v2` (its YAML verbatim in the server's
config dir) submitted to EvalHub's real server (1.0.2, local mode) with our provider as
`lm_evaluation_harness`. The server expands the collection into its six benchmarks, runs
`airgap-eval run` for each (local mode starts them all at once, each with the job spec it
wrote), over tiny bundles in the datasets' real schemas (testbed.collections) against vLLM,
and computes the job score from the benchmarks' primary scores and weights."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.layout import MANIFEST_NAME, TOKENIZER_DIR_NAME
from common.manifest import build_manifest
from testbed.collections import build_collection_bundles, build_punkt_tab
from testbed.modelserver import VLLMServer
from testbed.tiny import TinyAssets
from tests.evalhub.conftest import ADAPTER
from tests.evalhub.server import EvalHubServer, jobs_dir, require_binary

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

VERSION = "1.0.2"  # collections are EvalHub 1.0's
COLLECTION = Path(__file__).with_name("collections") / "leaderboard-v2.yaml"
PROVIDER = "lm_evaluation_harness"  # the provider the collection names: ours, run locally
JOB_TIMEOUT_S = 1200  # six runs at once on a busy 2-core machine


@pytest.fixture(scope="module")
def collection() -> dict[str, Any]:
    return dict(yaml.safe_load(COLLECTION.read_text()))


@pytest.fixture(scope="module")
def tree(
    collection: dict[str, Any], tiny_assets: TinyAssets, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The collection's bundles, the served model's tokenizer, punkt_tab (ifeval), manifest:
    what `airgap-eval stage <the six benchmarks>` writes."""
    from staging.stage import save_nltk

    base = tmp_path_factory.mktemp("leaderboard")
    root = base / "test_data"
    names = [b["id"] for b in collection["benchmarks"]]
    task_slugs = build_collection_bundles(root, names, rows=1)
    shutil.copytree(tiny_assets.tokenizer, root / TOKENIZER_DIR_NAME)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NLTK_DATA", str(build_punkt_tab(base / "nltk_src")))
        save_nltk("punkt_tab", root)
    build_manifest(
        root, tasks=task_slugs, tokenizer=TOKENIZER_DIR_NAME,
        assets={"nltk": ["punkt_tab"], "evaluate": []},
    ).dump(root / MANIFEST_NAME)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def server(
    collection: dict[str, Any], tree: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvalHubServer]:
    require_binary(VERSION)
    root = tmp_path_factory.mktemp("evalhub-collection")
    (root / "adapter.sh").write_text(ADAPTER)
    provider = {
        "id": PROVIDER, "name": PROVIDER, "title": "airgap-eval as lm_evaluation_harness",
        "description": "airgap-eval (tests)",
        "runtime": {"local": {
            "command": f"sh {root / 'adapter.sh'}",
            "env": [{"name": "AIRGAP_PYTHON", "value": sys.executable},
                    {"name": "AIRGAP_TEST_DATA", "value": str(tree)}],
        }},
        "benchmarks": [
            {"id": b["id"], "name": b["id"], "category": "general",
             "metrics": [b["primary_score"]["metric"]], "primary_score": b["primary_score"]}
            for b in collection["benchmarks"]
        ],
    }  # fmt: skip
    with EvalHubServer(VERSION, root, [provider], collections=[COLLECTION]) as hub:
        yield hub


def test_a_collection_runs_every_benchmark_and_the_server_scores_the_job(
    collection: dict[str, Any], server: EvalHubServer, vllm_server: VLLMServer
) -> None:
    listed = server.request("GET", f"collections/{collection['id']}")
    assert [b["id"] for b in listed["benchmarks"]] == [b["id"] for b in collection["benchmarks"]]
    # Job-level parameters for the provider (EvalHub merges them under the collection's own):
    # one doc per task, short generations (the tiny model's window is 512 tokens).
    overrides = {"num_examples": 1, "num_concurrent": 2, "gen_kwargs": {"max_gen_toks": 24},
                 # a criterion for each benchmark: its report shows in the job view
                 "secondary_metric": "acc_norm", "secondary_threshold": 0.5}  # fmt: skip
    job = server.request("POST", "jobs", {
        "name": "leaderboard-v2 offline", "model": {"url": vllm_server.base_url, "name": "tiny"},
        "collection": {"id": collection["id"], "benchmarks": [
            {"id": collection["benchmarks"][0]["id"], "provider_id": PROVIDER,
             "parameters": overrides}]},
    })  # fmt: skip
    job_id = str(job["resource"]["id"])
    try:
        view = server.wait(job_id, JOB_TIMEOUT_S)
        print(f"eval-hub {VERSION} collection job view:\n{json.dumps(view, indent=1)}")
        logs = {
            b["id"]: (jobs_dir(job_id) / str(i) / PROVIDER / b["id"] / "jobrun.log")
            for i, b in enumerate(collection["benchmarks"])
        }
        why = json.dumps(view, indent=1)[:6000] + "".join(
            f"\n--- {name} ---\n{p.read_text(errors='replace')[-2500:]}"
            for name, p in logs.items()
            if p.is_file()
        )
        assert view["status"]["state"] == "completed", why
        events = {b["id"]: b for b in view["status"]["benchmarks"]}
        results = {b["id"]: b for b in view["results"]["benchmarks"]}
        scored = []
        for i, bench in enumerate(collection["benchmarks"]):
            name, metric = bench["id"], bench["primary_score"]["metric"]
            assert events[name]["status"] == "completed", why
            got = results[name]
            assert got["benchmark_index"] == i and got["metrics"], why
            spec = json.loads((logs[name].parent / "meta" / "job.json").read_text())
            assert spec["num_examples"] == 1 and spec["parameters"]["num_concurrent"] == 2
            # the secondary criterion, judged by the adapter, in the server's job view
            (secondary,) = got["artifacts"]["criteria"]
            assert secondary["metric"] == "acc_norm" and secondary["required"] is False
            if "acc_norm" in got["metrics"]:
                assert secondary["value"] == pytest.approx(got["metrics"]["acc_norm"])
                assert secondary["pass"] is (secondary["value"] >= 0.5)
            else:
                assert secondary["value"] is None and "no metric 'acc_norm'" in secondary["note"]
            if metric in got["metrics"]:
                # the server's pass/fail: the collection's metric and threshold
                assert got["test"] == {
                    "primary_score": pytest.approx(got["metrics"][metric]),
                    "primary_score_metric": metric,
                    "threshold": pytest.approx(bench["pass_criteria"]["threshold"]),
                    "pass": got["metrics"][metric] >= bench["pass_criteria"]["threshold"],
                }
                scored.append((bench.get("weight", 1), got["metrics"][metric]))
            else:
                # leaderboard_mmlu_pro: the collection names acc_norm, lm_eval's task (and
                # EvalHub's own lm_eval adapter) reports acc only: the server leaves it unscored
                assert (name, metric) == ("leaderboard_mmlu_pro", "acc_norm"), why
                assert "acc" in got["metrics"] and "test" not in got
        assert len(scored) == 5
        expected = sum(w * s for w, s in scored) / sum(w for w, _ in scored)
        test = view["results"]["test"]
        assert test["score"] == pytest.approx(expected, abs=1e-5)
        assert test["threshold"] == pytest.approx(collection["pass_criteria"]["threshold"])
        assert test["pass"] is (expected >= collection["pass_criteria"]["threshold"])
    finally:
        shutil.rmtree(jobs_dir(job_id), ignore_errors=True)
