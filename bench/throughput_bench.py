"""Whole-job throughput of `airgap-eval run` at its defaults against plain `lm_eval` at
num_concurrent 1 (EvalHub's default), on one endpoint in the same run, with identical metrics;
and the client's own ceiling.

Endpoint: testbed.gpustub, a latency-bound GPU server stand-in (default 40 ms a request,
64 sequences at once, a FIFO queue beyond; logprobs a pure function of the prompt, so the two
tools' scores compare exactly). `--vllm` runs the same comparison against a real vLLM CPU
server with the tiny model (smaller: `--vllm-docs`).

Data: real rows built by ../shared/benchmarks/build_bundles.py — arc_easy in full (2,376 test
docs) and hellaswag cut to `--hellaswag-docs` (200) validation docs, ~10,300 loglikelihood
requests. `--docs N` caps arc_easy too, for a quick run.

- `airgap-eval run`: the job spec sets neither num_concurrent nor batch_size (adaptive
  concurrency, several prompts per request); offline, request cache and samples on. Then the
  same at `num_concurrent: 1` (one request in flight, as plain lm_eval below): its ms per
  request must not exceed lm_eval's (`--no-serial` skips it).
- plain lm_eval: `lm_eval --model local-completions` with num_concurrent=1, batch_size 1,
  reading the same bundles through task YAMLs that are the tasks' own configs pointed at the
  bundles' arrow files (same docs, prompts and requests); it builds its full task index at
  start-up, as `lm_eval --tasks` does.

A third job runs airgap-eval's defaults against the same stub answering 429 (Retry-After 0.1 s)
whenever more than 12 requests are in it: it must complete with the same metrics.

Printed: whole-job seconds (spawn to exit) and the request phase (first request to last answer,
seen by the stub) of each, their ratios, req/s, and every metric side by side (must be equal).

Client ceiling (`--ceiling`, also part of a full run): loglikelihood requests per second through
`loglikelihood` (tokenizing, the request cache, HTTP, parsing) against the stub at 0 ms and
unlimited slots, for our model class with our request cache (defaults; and one prompt per
request) and lm_eval's own `local-completions` in its CachingLM at num_concurrent 64.

    python bench/throughput_bench.py                 # the full stub comparison + ceiling
    python bench/throughput_bench.py --docs 300      # quick
    python bench/throughput_bench.py --vllm --vllm-docs 100
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.gpustub import Config, GpuStub

REPO = Path(__file__).resolve().parent.parent
# the real rows beside the checkout; a worktree elsewhere names them in AIRGAP_EVAL_BENCHMARKS
SHARED = Path(os.environ.get("AIRGAP_EVAL_BENCHMARKS") or REPO.parent / "shared" / "benchmarks")
TASKS = {"arc_easy": ("arc", "arc_easy.yaml"), "hellaswag": ("hellaswag", "hellaswag.yaml")}
STORM_ABOVE = 12  # the storm stub's 429 threshold: requests in it (the adaptive start is 8)
SLUGS = {"arc_easy": "allenai--ai2_arc--ARC-Easy", "hellaswag": "Rowan--hellaswag"}


@dataclass
class Job:
    name: str
    whole_s: float
    phase_s: float  # first request to last answer, at the server
    requests: int  # prompts scored
    http_requests: int
    max_in_flight: int
    metrics: dict[str, float]

    @property
    def rate(self) -> float:
        return self.requests / self.phase_s if self.phase_s else 0.0


# --- data ------------------------------------------------------------------------------------


def build_data(
    root: Path, arc_docs: int | None, hellaswag_docs: int, tokenizer: Path | None
) -> Path:
    """Real rows (../shared/benchmarks), arc_easy and hellaswag test/validation splits cut."""
    import datasets

    out = root / "test_data"
    subprocess.run([sys.executable, str(SHARED / "build_bundles.py"), "--out", str(out),
                    "--no-legacy-aliases", "--blimp", "adjunct_island"],
                   check=True, capture_output=True)  # fmt: skip
    for task, split, n in (
        ("arc_easy", "test", arc_docs),
        ("hellaswag", "validation", hellaswag_docs),
    ):
        if n is None:
            continue
        path = out / SLUGS[task]
        dd = datasets.load_from_disk(str(path))
        dd[split] = dd[split].select(range(min(n, len(dd[split]))))
        tmp = path.with_name(path.name + ".cut")
        dd.save_to_disk(str(tmp), num_shards={s: 1 for s in dd})
        shutil.rmtree(path)
        tmp.rename(path)
    if tokenizer is not None:
        shutil.rmtree(out / "tokenizer")
        shutil.copytree(tokenizer, out / "tokenizer")
    return out


def plain_task_dir(root: Path, test_data: Path) -> Path:
    """Each task's own lm_eval config, reading the bundle's arrow files instead of the Hub."""
    import lm_eval

    tasks_root = Path(lm_eval.__file__).parent / "tasks"
    out = root / "plain_tasks"
    out.mkdir()
    for task, (folder, yaml_name) in TASKS.items():
        bundle = test_data / SLUGS[task]
        import datasets

        dd = datasets.load_from_disk(str(bundle))
        files = {s: str(next((bundle / s).glob("*.arrow"))) for s in dd if len(dd[s])}
        text = (tasks_root / folder / yaml_name).read_text()
        for split in set(dd) - set(files):  # the arrow builder refuses an empty file
            text = re.sub(rf"(?m)^(\w+_split): {split}$", r"\1: null", text)
        text = re.sub(r"(?m)^tag:\n(  - .*\n)+", "", text)
        text = re.sub(r"(?m)^task: .*$", f"task: {task}_local", text)
        text = re.sub(r"(?m)^dataset_path: .*$", "dataset_path: arrow", text)
        text = re.sub(r"(?m)^dataset_name: .*$", "dataset_name: null", text)
        text += "dataset_kwargs:\n  data_files:\n" + "".join(
            f"    {split}: {json.dumps(path)}\n" for split, path in files.items())  # fmt: skip
        dest = out / task
        dest.mkdir()
        (dest / f"{task}_local.yaml").write_text(text)
        if (tasks_root / folder / "utils.py").is_file():
            shutil.copy(tasks_root / folder / "utils.py", dest / "utils.py")
    return out


# --- the two tools -----------------------------------------------------------------------------


def _metrics(results_dir: Path, suffix: str = "") -> dict[str, float]:
    files = sorted(results_dir.rglob("results_*.json"))
    assert files, f"no results under {results_dir}"
    res = json.loads(files[-1].read_text())["results"]
    out = {}
    for task in TASKS:
        for key, value in res[task + suffix].items():
            if isinstance(value, int | float) and "stderr" not in key:
                out[f"{task}.{key}"] = float(value)
    return out


def _timed(
    name: str, cmd: list[str], env: dict[str, str], stub: Any, log: Path
) -> tuple[float, dict[str, float]]:
    stub.reset()
    t0 = time.monotonic()
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=7200)
    whole = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}); log {log}:\n{log.read_text()[-3000:]}")
    return whole, stub.stats()


def _job(name: str, whole: float, stats: dict[str, float], metrics: dict[str, float]) -> Job:
    return Job(name, whole, stats["last"] - stats["first"], int(stats["prompts"]),
               int(stats["requests"]), int(stats["max_in_flight"]), metrics)  # fmt: skip


def run_airgap(root: Path, name: str, test_data: Path, stub: Any, model: str,
               parameters: dict[str, Any]) -> Job:  # fmt: skip
    work = root / name
    work.mkdir()
    spec = {"id": name, "benchmark_id": "arc_easy", "model": {"url": stub.base_url, "name": model},
            "parameters": {"tasks": list(TASKS), **parameters}}  # fmt: skip
    (work / "job.json").write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "airgap_eval", "run", "--job-spec", str(work / "job.json"),
           "--test-data", str(test_data), "--output-dir", str(work / "results"),
           "--work-dir", str(work / "work")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRGAP_EVAL_", "HF_"))}
    whole, stats = _timed(name, cmd, env, stub, work / "run.log")
    return _job(name, whole, stats, _metrics(work / "results"))


def run_plain(
    root: Path, tasks_dir: Path, tokenizer: Path, stub: Any, model: str, max_length: int
) -> Job:
    work = root / "plain"
    work.mkdir()
    model_args = ",".join([f"model={model}", f"base_url={stub.base_url}/completions",
                           f"tokenizer={tokenizer}", "tokenizer_backend=huggingface",
                           "num_concurrent=1", f"max_length={max_length}", "max_retries=3"])  # fmt: skip
    cmd = [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args", model_args,
           "--tasks", ",".join(f"{t}_local" for t in TASKS), "--include_path", str(tasks_dir),
           "--batch_size", "1", "--output_path", str(work / "results"), "--log_samples"]  # fmt: skip
    env = dict(os.environ) | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                              "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(work / "hf")}  # fmt: skip
    whole, stats = _timed("plain lm_eval", cmd, env, stub, work / "run.log")
    return _job("plain lm_eval nc=1", whole, stats, _metrics(work / "results", "_local"))


def compare(jobs: list[Job], base: Job, title: str) -> bool:
    print(f"\n== {title}")
    print(
        f"{'':28}{'whole job':>11}{'request phase':>15}{'prompts/s':>11}{'HTTP req':>10}{'ms/HTTP req':>13}{'max in flight':>15}"
    )
    for j in [base, *jobs]:
        print(
            f"{j.name:28}{j.whole_s:>10.1f}s{j.phase_s:>14.1f}s{j.rate:>11.0f}{j.http_requests:>10}"
            f"{1000 * j.phase_s / max(j.http_requests, 1):>13.1f}{j.max_in_flight:>15}"
        )
    same = True
    for j in jobs:
        equal = j.metrics == base.metrics
        same &= equal
        print(f"{j.name}: whole-job {base.whole_s / j.whole_s:.1f}x faster, request phase "
              f"{base.phase_s / j.phase_s:.1f}x; metrics identical to {base.name}: {equal}")  # fmt: skip
    print("metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(base.metrics.items())))
    for j in jobs:
        if j.metrics != base.metrics:
            print(f"  {j.name} differs: " + ", ".join(
                f"{k} {v:.6f} vs {base.metrics.get(k)}" for k, v in sorted(j.metrics.items())
                if v != base.metrics.get(k)))  # fmt: skip
    return same


# --- the client ceiling ------------------------------------------------------------------------


CEILING_SCRIPT = r"""
import json, sys, tempfile, time
from pathlib import Path
from lm_eval.api.instance import Instance
from lm_eval.api.model import CachingLM
from lm_eval.models.openai_completions import LocalCompletionsAPI
from adapter.cache import RequestCache
from adapter.harness import CompletionsLM
from adapter.progress import RunProgress
url, tokenizer, kind, n_docs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = json.loads(Path(sys.argv[5]).read_text())[:n_docs]
reqs = [Instance("loglikelihood", r, (f"Question: {r['question']}\nAnswer:", " " + c), i, ("arc_easy", i, 1))
        for i, (r, c) in enumerate((r, c) for r in rows for c in r["choices"]["text"])]
common = dict(model="tiny", base_url=url, tokenizer=tokenizer, tokenizer_backend="huggingface",
              max_length=2048, max_retries=3)
db = tempfile.mkdtemp() + "/cache"
if kind == "plain":
    cached = CachingLM(LocalCompletionsAPI(num_concurrent=64, **common), db)
else:
    cached = CompletionsLM(num_concurrent=None, batch_size=None if kind == "ours" else 1, **common)
    cached.progress = RunProgress()
    cached.use_request_cache(RequestCache(db + "_rank0.db"))
t0 = time.monotonic()
out = cached.loglikelihood(reqs)
print(json.dumps({"requests": len(reqs), "seconds": time.monotonic() - t0,
                  "sum": sum(o[0] for o in out)}))
"""


def ceiling(root: Path, test_data: Path, docs: int) -> None:
    rows = root / "arc_rows.json"
    if not rows.exists():
        import datasets

        ds = datasets.load_from_disk(str(test_data / SLUGS["arc_easy"]))["test"]
        rows.write_text(
            json.dumps([{"question": r["question"], "choices": r["choices"]} for r in ds])
        )
    print(f"\n== client ceiling: loglikelihood requests/s against the stub at 0 ms, unlimited slots "
          f"({os.cpu_count()} cores, shared)")  # fmt: skip
    with GpuStub(Config(latency=0.0, slots=100_000)) as stub:
        sums = set()
        for kind, label in (("ours", "airgap-eval, defaults (adaptive, prompts batched)"),
                            ("ours-batch1", "airgap-eval, adaptive, batch_size 1"),
                            ("plain", "lm_eval local-completions, num_concurrent 64")):  # fmt: skip
            proc = subprocess.run([sys.executable, "-c", CEILING_SCRIPT, f"{stub.base_url}/completions",
                                   str(test_data / "tokenizer"), kind, str(docs), str(rows)],
                                  capture_output=True, text=True, cwd=REPO, timeout=1800)  # fmt: skip
            if proc.returncode != 0:
                sys.exit(f"ceiling run {kind} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            sums.add(round(r["sum"], 6))
            print(f"  {label:52} {r['requests'] / r['seconds']:>6.0f} req/s "
                  f"({r['requests']} requests in {r['seconds']:.1f}s)")  # fmt: skip
        print(f"  same loglikelihoods from all three: {len(sums) == 1}")


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, help="arc_easy test docs (default: all 2,376)")
    ap.add_argument("--hellaswag-docs", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.04)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--no-storm", action="store_true", help="skip the run against the 429 stub")
    ap.add_argument("--no-serial", action="store_true", help="skip airgap-eval at num_concurrent 1")
    ap.add_argument("--ceiling", action="store_true", help="only the client ceiling")
    ap.add_argument("--ceiling-docs", type=int, default=1000)
    ap.add_argument(
        "--vllm", action="store_true", help="against vLLM CPU and the tiny model instead"
    )
    ap.add_argument("--vllm-docs", type=int, default=100)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not (SHARED / "build_bundles.py").is_file():
        sys.exit(f"needs the real rows at {SHARED}")

    root = Path(tempfile.mkdtemp(prefix="throughput-bench-"))
    try:
        if args.vllm:
            return bench_vllm(root, args)
        test_data = build_data(root, args.docs, args.hellaswag_docs, None)
        if args.ceiling:
            ceiling(root, test_data, args.ceiling_docs)
            return 0
        cfg = Config(latency=args.latency, slots=args.slots)
        storm = Config(
            latency=args.latency, slots=args.slots, reject_above=STORM_ABOVE, retry_after=0.1
        )
        print(f"stub: {args.latency * 1000:.0f} ms a request, {args.slots} slots; the storm stub also "
              f"answers 429 + Retry-After 0.1 s above {STORM_ABOVE} requests in it; "
              f"{os.cpu_count()} cores shared with whatever else runs", flush=True)  # fmt: skip
        jobs = []
        with GpuStub(cfg) as stub:
            jobs.append(run_airgap(root, "airgap-eval defaults", test_data, stub, "tiny", {}))
            print(f"  {jobs[-1]}", flush=True)
            if not args.no_serial:
                jobs.append(run_airgap(root, "airgap-eval nc=1", test_data, stub, "tiny",
                                       {"num_concurrent": 1, "batch_size": 1}))  # fmt: skip
                print(f"  {jobs[-1]}", flush=True)
            tasks_dir = plain_task_dir(root, test_data)
            base = run_plain(root, tasks_dir, test_data / "tokenizer", stub, "tiny", 2048)
            print(f"  {base}", flush=True)
        if not args.no_storm:
            with GpuStub(storm) as stub:
                jobs.append(
                    run_airgap(root, "airgap-eval defaults, 429s", test_data, stub, "tiny", {})
                )
                print(f"  {jobs[-1]}; turned away: {stub.stats()['rejected']:.0f}", flush=True)
        same = compare(jobs, base, f"stub {args.latency * 1000:.0f} ms / {args.slots} slots")
        ceiling(root, test_data, args.ceiling_docs)
        return 0 if same else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def bench_vllm(root: Path, args: argparse.Namespace) -> int:
    from testbed.modelserver import VLLMServer
    from testbed.tiny import build_all

    assets = build_all(root / "tiny")
    test_data = build_data(root, args.vllm_docs, args.vllm_docs, assets.tokenizer)
    tasks_dir = plain_task_dir(root, test_data)
    print(
        f"vLLM CPU, tiny model; arc_easy {args.vllm_docs} + hellaswag {args.vllm_docs} docs",
        flush=True,
    )
    with VLLMServer(assets.model, log_path=root / "vllm.log") as server:
        jobs = [
            run_airgap(root, "airgap-eval defaults", test_data, VLLMCounters(server), "tiny", {})
        ]
        base = run_plain(
            root, tasks_dir, test_data / "tokenizer", VLLMCounters(server), "tiny", 512
        )
    return 0 if compare(jobs, base, "vLLM CPU (tiny model)") else 1


class VLLMCounters:
    """A vLLM server seen through the stub's interface (`reset`, `stats`): its finished-request
    counter; no arrival times, so the request phase reads as the whole job."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.base_url = server.base_url
        self.t0 = 0.0

    def reset(self) -> None:
        self.t0 = time.time()
        self.before = self.server.metric("vllm:request_success_total")

    def stats(self) -> dict[str, float]:
        n = self.server.metric("vllm:request_success_total") - self.before
        return {
            "first": self.t0,
            "last": time.time(),
            "prompts": n,
            "requests": n,
            "max_in_flight": 0,
        }


if __name__ == "__main__":
    sys.exit(main())
