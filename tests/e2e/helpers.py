"""What the e2e tests do again and again: write a job spec, run `airgap-eval run` as the pod
would (a separate process), read what it wrote, and score the same model with the reference."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testbed.modelserver import REPO_ROOT, vllm_python, vllm_python_env
from testbed.tiny import TinyAssets

RUN_TIMEOUT_S = 900  # a busy 2-core machine is slow; a hang still ends the test


def job_spec(
    url: str, tasks: list[str], *, num_examples: int | None = None, **parameters: Any
) -> dict[str, Any]:
    """An EvalHub JobSpec, as EvalHub mounts it at /meta/job.json."""
    return {
        "id": "e2e-job",
        "provider_id": "lm_evaluation_harness",
        "benchmark_id": tasks[0],
        "benchmark_index": 0,
        "model": {"url": url, "name": "tiny"},
        "num_examples": num_examples,
        "parameters": {"tasks": tasks, **parameters},
    }


def run_args(
    spec: dict[str, Any], workdir: Path, test_data: Path, cache_dir: Path | None = None
) -> list[str]:
    """The `airgap-eval run` command line; the spec goes to workdir/job.json."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / "job.json"
    spec_path.write_text(json.dumps(spec))
    args = [
        sys.executable, "-m", "airgap_eval", "run",
        "--job-spec", str(spec_path),
        "--test-data", str(test_data),
        "--output-dir", str(workdir / "results"),
        "--work-dir", str(workdir / "work"),
    ]  # fmt: skip
    if cache_dir is not None:
        args += ["--cache-dir", str(cache_dir)]
    return args


def airgap_run(
    spec: dict[str, Any], workdir: Path, test_data: Path, cache_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        run_args(spec, workdir, test_data, cache_dir),
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=workdir,
    )  # fmt: skip


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stderr (tail) ---\n{proc.stderr[-4000:]}"


def read_results(results_dir: Path) -> dict[str, Any]:
    """lm_eval's aggregated results file (EvaluationTracker names it results_<time>.json)."""
    files = sorted(results_dir.rglob("results_*.json"))
    assert files, f"no results_*.json under {results_dir}: {sorted(results_dir.rglob('*'))}"
    return dict(json.loads(files[-1].read_text()))


def read_samples(results_dir: Path, task: str) -> list[dict[str, Any]]:
    files = sorted(results_dir.rglob(f"samples_{task}_*.jsonl"))
    assert files, f"no samples file for {task} under {results_dir}"
    return [json.loads(line) for line in files[-1].read_text().splitlines() if line.strip()]


def loglikelihoods(sample: dict[str, Any]) -> list[float] | None:
    resps = sample.get("filtered_resps") or []
    if resps and isinstance(resps[0], list) and len(resps[0]) == 2:
        return [float(r[0]) for r in resps]
    return None


def scores(results: dict[str, Any], task: str) -> dict[str, float]:
    """A task's metrics without stderrs: {"acc,none": 0.4, ...}."""
    return {
        k: float(v)
        for k, v in results["results"][task].items()
        if "_stderr" not in k
        and k not in ("alias", "name", "sample_len")
        and isinstance(v, int | float)
    }


def hf_reference(
    assets: TinyAssets,
    test_data: Path,
    tasks: list[str],
    out: Path,
    gen_kwargs: dict[str, Any] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """lm_eval `--model hf` in-process (in the vLLM venv, which has torch) over the same files."""
    args = [
        str(vllm_python()), str(REPO_ROOT / "tests" / "e2e" / "hf_reference.py"),
        "--test-data", str(test_data), "--model", str(assets.model),
        "--tokenizer", str(assets.tokenizer), "--tasks", ",".join(tasks), "--out", str(out),
    ]  # fmt: skip
    if gen_kwargs:
        args += ["--gen-kwargs", json.dumps(gen_kwargs)]
    if limit:
        args += ["--limit", str(limit)]
    env = vllm_python_env({"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    proc = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env)
    assert proc.returncode == 0, (
        f"hf reference failed:\n{proc.stderr[-4000:]}\n(the vLLM venv needs lm_eval's hf model: "
        f"{vllm_python().parent / 'pip'} install lm-eval==0.4.13 accelerate)"
    )
    return dict(json.loads(out.read_text()))


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path below root with size and mtime: any write into the tree changes it."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def cached_requests(cache_dir: Path) -> int:
    """Rows in lm_eval's request cache (SqliteDict's default table), 0 while there is none."""
    dbs = list(cache_dir.glob("*_rank0.db"))
    if not dbs:
        return 0
    for _ in range(50):
        try:
            with sqlite3.connect(f"file:{dbs[0]}?mode=ro", uri=True, timeout=1) as db:
                return int(db.execute("SELECT count(*) FROM unnamed").fetchone()[0])
        except sqlite3.OperationalError:  # locked by the writer, or the table not made yet
            time.sleep(0.05)
    return 0
