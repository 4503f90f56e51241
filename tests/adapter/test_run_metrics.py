"""Metric modules that tasks fetch with `evaluate.load` at run time are staged and load
offline: `stage` fetches them (with evaluate's own Hub download, from a local HF_ENDPOINT)
into <tree>/evaluate/<name>/ and lists them in the manifest; `run` scores squadv2 (squad_v2)
and humaneval (code_eval) with them and no network. Code-executing tasks need
parameters.allow_code_execution: without it, preflight refuses them before any request.

`evaluate` ships no metric scripts (its wheel and sdist hold none: they live in the Hub's
evaluate-metric spaces), so the modules here are written for the test in evaluate's module
format: a script named like its dir, an `evaluate.Metric` subclass, a sibling module it
imports relatively (as squad_v2's compute_score)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from common.errors import ExitCode
from common.layout import MANIFEST_NAME, TOKENIZER_DIR_NAME
from common.manifest import Manifest, build_manifest
from tests.adapter.conftest import REPO, RunResult, write_spec
from tests.httpstub import serving
from tests.stub_openai import Fault, stub_server

Run = Callable[..., RunResult]

SQUAD_V2 = """
import datasets
import evaluate

from .compute_score import score


class SquadV2(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD v2 exact match and F1 (test module)",
            citation="",
            inputs_description="",
            features=datasets.Features({
                "predictions": {
                    "id": datasets.Value("string"),
                    "prediction_text": datasets.Value("string"),
                    "no_answer_probability": datasets.Value("float32"),
                },
                "references": {
                    "id": datasets.Value("string"),
                    "answers": datasets.features.Sequence(
                        {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                    ),
                },
            }),
        )

    def _compute(self, predictions, references):
        return score(predictions, references)
"""
COMPUTE_SCORE = """
def _f1(pred, gold):
    p, g = pred.lower().split(), gold.lower().split()
    common = sum(min(p.count(w), g.count(w)) for w in set(p))
    if not p or not g:
        return float(p == g)
    return 0.0 if common == 0 else 2 * common / (len(p) + len(g))


def score(predictions, references):
    gold = {r["id"]: r["answers"]["text"] or [""] for r in references}
    exact, f1, has = [], [], []
    for p in predictions:
        answers = gold[p["id"]]
        exact.append(100.0 * max(float(p["prediction_text"].strip() == a) for a in answers))
        f1.append(100.0 * max(_f1(p["prediction_text"], a) for a in answers))
        has.append(answers != [""])
    out = {"exact": sum(exact) / len(exact), "f1": sum(f1) / len(f1), "total": len(exact)}
    for tag, keep in (("HasAns", True), ("NoAns", False)):
        idx = [i for i, h in enumerate(has) if h == keep]
        if idx:
            out[f"{tag}_exact"] = sum(exact[i] for i in idx) / len(idx)
            out[f"{tag}_f1"] = sum(f1[i] for i in idx) / len(idx)
    out["best_exact"], out["best_f1"] = out["exact"], out["f1"]
    return out
"""
CODE_EVAL = """
import os
import subprocess
import sys

import datasets
import evaluate


class CodeEval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="pass@k over test programs (test module)",
            citation="",
            inputs_description="",
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("string")),
                "references": datasets.Value("string"),
            }),
        )

    def _compute(self, predictions, references, k=(1,)):
        if os.getenv("HF_ALLOW_CODE_EVAL", "0") != "1":
            raise ValueError("code_eval executes untrusted code: set HF_ALLOW_CODE_EVAL=1")
        passed = []
        for candidates, test in zip(predictions, references):
            ok = [
                subprocess.run([sys.executable, "-c", c + "\\n" + test], timeout=10,
                               capture_output=True).returncode == 0
                for c in candidates
            ]
            passed.append(ok)
        return {f"pass@{n}": sum(any(p[:n]) for p in passed) / len(passed) for n in k}, passed
"""
METRICS = {"squad_v2": {"squad_v2.py": SQUAD_V2, "compute_score.py": COMPUTE_SCORE},
           "code_eval": {"code_eval.py": CODE_EVAL}}  # fmt: skip


class _MetricHub(BaseHTTPRequestHandler):
    """The Hub's evaluate-metric spaces: /spaces/evaluate-metric/<name>/resolve/<rev>/<file>."""

    served: list[str]

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        body = None
        if len(parts) == 6 and parts[:2] == ["spaces", "evaluate-metric"]:
            body = METRICS.get(parts[2], {}).get(parts[5])
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = body.encode()
        self.served.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hash(body) & 0xFFFFFFFF:x}"')
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data)

    do_GET = do_HEAD = _answer


def _bundles(root: Path) -> dict[str, list[str]]:
    """lighteval/squad_v2 (squadv2's class reads it) and openai/openai_humaneval, tiny."""
    from datasets import Dataset, DatasetDict

    answers = {"text": ["Paris"], "answer_start": [0]}
    squad = [
        {"id": f"q{i}", "title": "France", "context": "Paris is the capital of France.",
         "question": "What is the capital of France?",
         "answers": answers if i % 2 == 0 else {"text": [], "answer_start": []}}
        for i in range(3)
    ]  # fmt: skip
    DatasetDict(
        {"train": Dataset.from_list(squad), "validation": Dataset.from_list(squad)}
    ).save_to_disk(str(root / "lighteval--squad_v2"))
    human = [
        {"task_id": "HumanEval/0", "prompt": "def add(a, b):\n", "entry_point": "add",
         "canonical_solution": "    return a + b\n",
         "test": "def check(f):\n    assert f(2, 3) == 5\n"}
    ]  # fmt: skip
    DatasetDict({"test": Dataset.from_list(human)}).save_to_disk(
        str(root / "openai--openai_humaneval")
    )
    return {"squadv2": ["lighteval--squad_v2"], "humaneval": ["openai--openai_humaneval"]}


@pytest.fixture(scope="module")
def metrics_tree(tiny_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bundles and tokenizer staged before (manifest), then `airgap-eval stage` for the two
    tasks: only their metric modules are left to fetch, from the local Hub."""
    import shutil

    base = tmp_path_factory.mktemp("metrics")
    tree = base / "test_data"
    tree.mkdir()
    tasks = _bundles(tree)
    shutil.copytree(tiny_tree / TOKENIZER_DIR_NAME, tree / TOKENIZER_DIR_NAME)
    tokenizer = str(tiny_tree / TOKENIZER_DIR_NAME)
    build_manifest(tree, tasks=tasks, tokenizer=tokenizer).dump(tree / MANIFEST_NAME)
    served: list[str] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "AIRGAP_EVAL_"))}
    with serving(type("Hub", (_MetricHub,), {"served": served})) as port:
        env |= {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(base / "hf"),
                "NO_PROXY": "127.0.0.1"}  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "airgap_eval", "stage", "squadv2", "humaneval",
             "--tokenizer", tokenizer, "--out", str(tree)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any("/squad_v2/" in p and p.endswith("compute_score.py") for p in served), served
    return tree


def test_stage_puts_the_metric_modules_in_the_tree_and_manifest(metrics_tree: Path) -> None:
    manifest = Manifest.load(metrics_tree / MANIFEST_NAME)
    assert manifest.assets["evaluate"] == ["code_eval", "squad_v2"]
    for name in ("evaluate/squad_v2/squad_v2.py", "evaluate/squad_v2/compute_score.py",
                 "evaluate/code_eval/code_eval.py"):  # fmt: skip
        assert name in manifest.files


def test_squadv2_scores_with_the_staged_metric_offline(
    metrics_tree: Path, tmp_path: Path, run_cli: Run
) -> None:
    fault = Fault(echo_logprobs=True)
    with stub_server(fault) as url:
        spec = write_spec(tmp_path / "job.json", url, ["squadv2"])
        r = run_cli(["--job-spec", str(spec), "--test-data", str(metrics_tree)])
    assert r.code == 0, r.output
    metrics = r.status.metrics or {}
    assert {"exact", "f1", "HasAns_exact", "NoAns_f1", "best_f1"} <= set(metrics), metrics
    assert metrics["NoAns_exact"] == 0.0 and metrics["HasAns_exact"] == 0.0  # the stub says "x"


def test_humaneval_runs_only_with_allow_code_execution(
    metrics_tree: Path, tmp_path: Path, run_cli: Run
) -> None:
    fault = Fault(echo_logprobs=True)
    with stub_server(fault) as url:
        spec = write_spec(tmp_path / "job.json", url, ["humaneval"])
        refused = run_cli(["--job-spec", str(spec), "--test-data", str(metrics_tree)])
        assert refused.code == ExitCode.CONFIG, refused.output
        error = refused.status.error
        assert error is not None and "humaneval" in error.message
        assert "parameters.allow_code_execution" in (error.hint or "")
        assert fault.hits == []  # refused in preflight, before the endpoint probe
        spec = write_spec(tmp_path / "job2.json", url, ["humaneval"], allow_code_execution=True)
        r = run_cli(["--job-spec", str(spec), "--test-data", str(metrics_tree)])
    assert r.code == 0, r.output
    assert (r.status.metrics or {}).get("pass@1") == 0.0  # "def add(a, b):\nx" fails check()
    samples = json.loads(next((r.out_dir).rglob("samples_humaneval_*.jsonl")).read_text())
    assert samples["filtered_resps"]
