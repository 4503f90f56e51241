"""Verdict, start-up and whole-run time of `airgap-eval run` against plain `lm_eval`, same
endpoint.

One vLLM CPU server serves the tiny model; a recording proxy in front of it timestamps every
request. Both tools score the same task (arc_easy) on the same rows with the same tokenizer,
concurrency and limit:

- `airgap-eval run` reads the staged bundles offline (prebuilt task index, request cache on,
  samples logged, as a pod runs it);
- plain `lm_eval --model local-completions` cannot read bundles, so it gets a task YAML
  (`--include_path`) that is arc_easy's own config with `dataset_path: arrow` pointed at the
  bundle's arrow files: same docs, same prompts, same requests. It still builds its full
  task index at start-up, as `lm_eval --tasks arc_easy` does.

Measured per run, from process spawn: start-up = time to the first scoring request at the
proxy (the adapter's preflight probe is not counted: it sends text, not token ids); whole
run = time to exit; request phase = first scoring request to exit; verdict = time to the
(non-zero) exit of the same job whose bundle is missing (plain lm_eval: its data files). One
warm-up run of each
is not counted (it builds the adapter's task index, once per image, and warms the page
cache for both). Rows: ../shared/benchmarks (real ARC-Easy) when present, else the tiny
bundled rows (then the whole-run ratio says little).

    python bench/startup_bench.py [--limit 200] [--concurrency 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.modelserver import RecordingProxy, VLLMServer
from testbed.tiny import TinyAssets, build_all

REPO = Path(__file__).resolve().parent.parent
# the real rows beside the checkout; a worktree elsewhere names them in AIRGAP_EVAL_BENCHMARKS
SHARED = Path(os.environ.get("AIRGAP_EVAL_BENCHMARKS") or REPO.parent / "shared" / "benchmarks")
ARC_SLUG = "allenai--ai2_arc--ARC-Easy"
TASK = "arc_easy"


@dataclass
class Timing:
    startup: float
    whole: float
    requests: int
    acc: float
    verdict: float = 0.0  # a job missing its data: process start to its failing exit

    @property
    def request_phase(self) -> float:
        return self.whole - self.startup


def real_test_data(root: Path, assets: TinyAssets) -> Path:
    """Real ARC-Easy rows built by the shared build script, with the tiny model's tokenizer."""
    out = root / "real"
    subprocess.run(
        [sys.executable, str(SHARED / "build_bundles.py"), "--out", str(out),
         "--no-legacy-aliases", "--blimp", "adjunct_island"],
        check=True, capture_output=True,
    )  # fmt: skip
    shutil.rmtree(out / "tokenizer")
    shutil.copytree(assets.tokenizer, out / "tokenizer")
    return out


def plain_task_dir(root: Path, bundle: Path, name: str = "plain_tasks") -> Path:
    """arc_easy's own YAML, reading the bundle's arrow files instead of the Hub."""
    import lm_eval
    import yaml

    cfg = yaml.safe_load(
        (Path(lm_eval.__file__).parent / "tasks" / "arc" / "arc_easy.yaml").read_text()
    )
    cfg.pop("tag", None)
    cfg |= {
        "task": f"{TASK}_local",
        "dataset_path": "arrow",
        "dataset_name": None,
        "dataset_kwargs": {
            "data_files": {
                s: str(bundle / s / "data-00000-of-00001.arrow")
                for s in ("train", "validation", "test")
            }
        },
    }
    out = root / name
    out.mkdir(exist_ok=True)
    (out / f"{TASK}_local.yaml").write_text(yaml.safe_dump(cfg))
    return out


def _acc(results_dir: Path, task: str) -> float:
    files = sorted(results_dir.rglob("results_*.json"))
    return float(json.loads(files[-1].read_text())["results"][task]["acc,none"])


def _failing(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Seconds from spawn to the exit of a job that must fail."""
    t0 = time.monotonic()
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=1800)
    seconds = time.monotonic() - t0
    if proc.returncode == 0:
        sys.exit(f"{cmd[:4]} succeeded without its data; log: {log}")
    return seconds


def _timed(
    cmd: list[str], proxy: RecordingProxy, env: dict[str, str], log: Path
) -> tuple[float, float, int]:
    t0 = time.monotonic()
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=1800)
    end = time.monotonic()
    if proc.returncode != 0:
        sys.exit(f"{cmd[:4]} failed ({proc.returncode}); log: {log}\n{log.read_text()[-3000:]}")
    first = proxy.first(since=t0)
    assert first is not None, f"no scoring request reached the proxy; log: {log}"
    return first - t0, end - t0, proxy.count(since=t0)


def run_airgap(
    n: int, root: Path, test_data: Path, proxy: RecordingProxy, args: argparse.Namespace
) -> Timing:
    work = root / f"airgap-{n}"
    work.mkdir()
    verdict = _failing(
        _airgap_cmd(work, root / "no-bundle", "missing", proxy, args),
        dict(os.environ),
        work / "verdict.log",
    )
    startup, whole, count = _timed(
        _airgap_cmd(work, test_data, "results", proxy, args),
        proxy,
        dict(os.environ),
        work / "run.log",
    )
    return Timing(startup, whole, count, _acc(work / "results", TASK), verdict)


def _airgap_cmd(
    work: Path, test_data: Path, out: str, proxy: RecordingProxy, args: argparse.Namespace
) -> list[str]:
    spec = {
        "id": f"bench-{work.name}",
        "benchmark_id": TASK,
        "model": {"url": proxy.base_url, "name": "tiny"},
        "num_examples": args.limit,
        "parameters": {"num_concurrent": args.concurrency, "batch_size": 1},
    }
    (work / "job.json").write_text(json.dumps(spec))
    return [
        sys.executable, "-m", "airgap_eval", "run", "--job-spec", str(work / "job.json"),
        "--test-data", str(test_data), "--output-dir", str(work / out),
        "--work-dir", str(work / f"work-{out}"),  # a fresh request cache: nothing is skipped
    ]  # fmt: skip


def run_plain(
    n: int,
    root: Path,
    tasks_dir: Path,
    tokenizer: Path,
    proxy: RecordingProxy,
    args: argparse.Namespace,
) -> Timing:
    work = root / f"plain-{n}"
    work.mkdir()
    env = dict(os.environ) | {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(work / "hf"),
    }
    verdict = _failing(
        _plain_cmd(work, root / "plain_tasks_missing", tokenizer, "missing", proxy, args),
        env,
        work / "verdict.log",
    )
    startup, whole, count = _timed(
        _plain_cmd(work, tasks_dir, tokenizer, "results", proxy, args), proxy, env, work / "run.log"
    )
    return Timing(startup, whole, count, _acc(work / "results", f"{TASK}_local"), verdict)


def _plain_cmd(
    work: Path,
    tasks_dir: Path,
    tokenizer: Path,
    out: str,
    proxy: RecordingProxy,
    args: argparse.Namespace,
) -> list[str]:
    model_args = ",".join(
        [
            "model=tiny",
            f"base_url={proxy.base_url}/completions",
            f"tokenizer={tokenizer}",
            "tokenizer_backend=huggingface",
            f"num_concurrent={args.concurrency}",
            "max_length=512",
            "max_retries=3",
        ]
    )
    return [
        sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args", model_args,
        "--tasks", f"{TASK}_local", "--include_path", str(tasks_dir), "--limit", str(args.limit),
        "--batch_size", "1", "--output_path", str(work / out), "--log_samples",
    ]  # fmt: skip


def _median(xs: list[Timing], attr: str) -> float:
    return statistics.median(getattr(t, attr) for t in xs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--limit", type=int, default=200, help="arc_easy docs per run (4 requests each)"
    )
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    try:
        print(f"building the tiny model and data in {root} ...", flush=True)
        assets = build_all(root / "tiny")
        if (SHARED / "build_bundles.py").is_file():
            test_data, rows = real_test_data(root, assets), f"real ARC-Easy test rows ({SHARED})"
        else:
            test_data, rows = assets.test_data, "the tiny bundled rows (no ../shared/benchmarks)"
        tasks_dir = plain_task_dir(root, test_data / ARC_SLUG)
        # The failing twins: the same job without its bundle (plain: without its data files).
        shutil.copytree(test_data, root / "no-bundle", symlinks=True)
        shutil.rmtree(root / "no-bundle" / ARC_SLUG)
        plain_task_dir(root, root / "no-bundle" / ARC_SLUG, "plain_tasks_missing")
        print("starting vLLM (CPU) ...", flush=True)
        with (
            VLLMServer(assets.model, log_path=root / "vllm.log") as server,
            RecordingProxy(server.root_url) as proxy,
        ):
            print("warm-up runs (not counted) ...", flush=True)
            run_airgap(0, root, test_data, proxy, args)
            run_plain(0, root, tasks_dir, test_data / "tokenizer", proxy, args)
            ours: list[Timing] = []
            plain: list[Timing] = []
            for n in range(1, args.repeats + 1):  # interleaved: load drifts hit both alike
                ours.append(run_airgap(n, root, test_data, proxy, args))
                plain.append(run_plain(n, root, tasks_dir, test_data / "tokenizer", proxy, args))
                print(f"  run {n}: airgap {ours[-1]}\n         plain  {plain[-1]}", flush=True)
        report(ours, plain, rows, args)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def report(ours: list[Timing], plain: list[Timing], rows: str, args: argparse.Namespace) -> None:
    assert {t.requests for t in ours} == {t.requests for t in plain}, (
        "the two tools sent different request counts"
    )
    assert {t.acc for t in ours} == {t.acc for t in plain}, "the two tools scored differently"
    m: dict[str, Any] = {
        name: {
            attr: _median(runs, attr) for attr in ("verdict", "startup", "whole", "request_phase")
        }
        for name, runs in (("airgap", ours), ("plain", plain))
    }
    startup_ratio = m["plain"]["startup"] / m["airgap"]["startup"]
    whole_ratio = m["airgap"]["whole"] / m["plain"]["whole"]
    phase_ratio = m["airgap"]["request_phase"] / m["plain"]["request_phase"]
    print(f"\nrows: {rows}; arc_easy limit {args.limit} -> {ours[0].requests} requests; "
          f"concurrency {args.concurrency}; medians of {args.repeats} runs; acc {ours[0].acc:.4f} (both)")  # fmt: skip
    print(f"{'':24}{'airgap-eval run':>18}{'plain lm_eval':>16}")
    rows_ = (
        ("verdict", "verdict (missing bundle)"),
        ("startup", "start-up to 1st request"),
        ("whole", "whole run"),
        ("request_phase", "request phase"),
    )
    for attr, label in rows_:
        print(f"{label:24}{m['airgap'][attr]:>17.2f}s{m['plain'][attr]:>15.2f}s")
    print(
        f"\nverdict: {m['airgap']['verdict']:.2f}s (target <= 1 s), plain lm_eval "
        f"{m['plain']['verdict']:.2f}s; first request: {m['airgap']['startup']:.2f}s (target <= 1.5 s)"
    )
    print(f"start-up ratio (plain / airgap): {startup_ratio:.1f}x   (target >= 5x)")
    print(f"whole-run ratio (airgap / plain): {whole_ratio:.2f}x   (target <= 1.1x)")
    print(f"request-phase ratio (airgap / plain): {phase_ratio:.2f}x   (the request path alone)")


if __name__ == "__main__":
    sys.exit(main())
