"""Full-size jobs inside EvalHub's default pod budget: `airgap-eval run` at its defaults
against plain `lm_eval` in the same run, each limited to the provider's `cpu_limit: 500m` and
`memory_limit: 4Gi` (config/providers/lm_evaluation_harness.yaml).

Data: real-format bundles at full size, built here (`--data-only DIR` writes them and stops):
the `mmlu` group in cais/mmlu's schema (57 subjects at their real row counts: 14,042 test
questions, 56,168 loglikelihood prompts) and leaderboard_mmlu_pro in TIGER-Lab/MMLU-Pro's
(12,032 test questions, mostly 10 options, 5-shot from 70 validation rows: ~115,000 prompts).
The text is seeded random words at realistic lengths (memory and CPU follow the number of
questions and the prompt lengths, not the words). Tokenizer: GPT-2 from ../shared/benchmarks
(else the tiny one).
Endpoint: testbed.gpustub, instant (0 ms, unlimited slots) and 40 ms / 64 slots; it runs
outside the limits, as the model server does.

- `airgap-eval run`: the job spec names the task and nothing else (defaults: adaptive
  concurrency, several prompts per request, request cache and samples on).
- plain lm_eval: `lm_eval --model local-completions --tasks <task>` at num_concurrent 64,
  batch_size 1, `--log_samples`, its full task index built at start-up; its
  `datasets.load_dataset` reads the same bundles (a sitecustomize shim: load_from_disk).

Limits: a cgroup made for each command (v2: cpu.max + memory.max under this process's cgroup;
v1: cpu.cfs_quota_us + memory.limit_in_bytes), else none (said in the output). Printed per
job: exit, wall (spawn to exit), CPU seconds, loglikelihood prompts/s over the whole command,
the largest RSS (the process and the children it waited for, getrusage), whether the metrics
are identical, and the machine's load average before and after.

    python bench/fullsize_bench.py                          # mmlu and mmlu_pro, both stubs
    python bench/fullsize_bench.py --tasks mmlu --latency 0 --limit 20   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.gpustub import Config, GpuStub

# cais/mmlu test rows per subject (their sum is 14,042); dev has 5 per subject, validation ~10%
MMLU_TEST = {
    "abstract_algebra": 100, "anatomy": 135, "astronomy": 152, "business_ethics": 100,
    "clinical_knowledge": 265, "college_biology": 144, "college_chemistry": 100,
    "college_computer_science": 100, "college_mathematics": 100, "college_medicine": 173,
    "college_physics": 102, "computer_security": 100, "conceptual_physics": 235,
    "econometrics": 114, "electrical_engineering": 145, "elementary_mathematics": 378,
    "formal_logic": 126, "global_facts": 100, "high_school_biology": 310,
    "high_school_chemistry": 203, "high_school_computer_science": 100,
    "high_school_european_history": 165, "high_school_geography": 198,
    "high_school_government_and_politics": 193, "high_school_macroeconomics": 390,
    "high_school_mathematics": 270, "high_school_microeconomics": 238, "high_school_physics": 151,
    "high_school_psychology": 545, "high_school_statistics": 216, "high_school_us_history": 204,
    "high_school_world_history": 237, "human_aging": 223, "human_sexuality": 131,
    "international_law": 121, "jurisprudence": 108, "logical_fallacies": 163,
    "machine_learning": 112, "management": 103, "marketing": 234, "medical_genetics": 100,
    "miscellaneous": 783, "moral_disputes": 346, "moral_scenarios": 895, "nutrition": 306,
    "philosophy": 311, "prehistory": 324, "professional_accounting": 282,
    "professional_law": 1534, "professional_medicine": 272, "professional_psychology": 612,
    "public_relations": 110, "security_studies": 245, "sociology": 201, "us_foreign_policy": 100,
    "virology": 166, "world_religions": 171,
}  # fmt: skip
# subjects whose questions are passages (mean words per question); the rest average ~40
LONG = {"professional_law": 240, "high_school_european_history": 300,
        "high_school_us_history": 280, "high_school_world_history": 260,
        "professional_medicine": 130, "professional_accounting": 80, "moral_scenarios": 45}  # fmt: skip
PRO_CATEGORIES = [
    "biology",
    "business",
    "chemistry",
    "computer science",
    "economics",
    "engineering",
    "health",
    "history",
    "law",
    "math",
    "other",
    "philosophy",
    "physics",
    "psychology",
]
PRO_TEST, PRO_VALIDATION = 12_032, 70

_WORDS = [
    "the",
    "of",
    "and",
    "a",
    "to",
    "in",
    "is",
    "was",
    "that",
    "for",
    "on",
    "are",
    "with",
    "as",
    "by",
    "be",
    "at",
    "this",
    "from",
    "or",
    "an",
    "which",
    "not",
    "have",
    "it",
    "one",
    "all",
    "were",
    "their",
    "has",
    "more",
    "also",
    "its",
    "been",
    "two",
    "can",
    "other",
    "after",
    "first",
    "energy",
    "market",
    "court",
    "theory",
    "cell",
    "patient",
    "value",
    "function",
    "system",
    "acid",
    "law",
    "state",
    "force",
    "growth",
    "protein",
    "rate",
    "price",
    "number",
    "model",
    "data",
    "equation",
    "reaction",
    "species",
    "contract",
    "tissue",
    "voltage",
    "policy",
    "culture",
    "memory",
    "signal",
]


def _text(rng: random.Random, mean: int) -> str:
    n = max(3, int(rng.gauss(mean, mean / 3)))
    return " ".join(rng.choices(_WORDS, k=n)).capitalize() + "?"


def _mmlu_rows(rng: random.Random, subject: str, n: int) -> dict[str, list[Any]]:
    mean = LONG.get(subject, 40)
    return {
        "question": [_text(rng, mean) for _ in range(n)],
        "subject": [subject] * n,
        "choices": [[_text(rng, 6)[:-1] for _ in range(4)] for _ in range(n)],
        "answer": [rng.randrange(4) for _ in range(n)],
    }


def build_mmlu(out: Path, seed: int = 0) -> int:
    import datasets

    features = datasets.Features({
        "question": datasets.Value("string"), "subject": datasets.Value("string"),
        "choices": datasets.Sequence(datasets.Value("string")),
        "answer": datasets.ClassLabel(names=["A", "B", "C", "D"]),
    })  # fmt: skip
    rng = random.Random(seed)
    total = 0
    for subject, n in MMLU_TEST.items():
        splits = {"test": n, "validation": max(5, n // 9), "dev": 5}
        dd = datasets.DatasetDict({
            s: datasets.Dataset.from_dict(_mmlu_rows(rng, subject, k), features=features)
            for s, k in splits.items()
        })  # fmt: skip
        dd.save_to_disk(str(out / f"cais--mmlu--{subject}"), num_shards={s: 1 for s in dd})
        total += n
    return total


def _pro_rows(rng: random.Random, n: int, start: int, cot: bool) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {k: [] for k in ("question_id", "question", "options", "answer",
                                                  "answer_index", "cot_content", "category", "src")}  # fmt: skip
    for i in range(n):
        k = rng.choice([10] * 8 + [9, 8, 4])  # most MMLU-Pro questions have 10 options
        idx = rng.randrange(k)
        category = rng.choice(PRO_CATEGORIES)
        rows["question_id"].append(start + i)
        rows["question"].append(_text(rng, 120 if category == "law" else 50))
        rows["options"].append([_text(rng, 8)[:-1] for _ in range(k)])
        rows["answer"].append("ABCDEFGHIJ"[idx])
        rows["answer_index"].append(idx)
        rows["cot_content"].append(_text(rng, 120) if cot else "")
        rows["category"].append(category)
        rows["src"].append(f"ori_mmlu-{category.replace(' ', '_')}")
    return rows


def build_mmlu_pro(out: Path, seed: int = 0) -> int:
    import datasets

    features = datasets.Features({
        "question_id": datasets.Value("int64"), "question": datasets.Value("string"),
        "options": datasets.Sequence(datasets.Value("string")), "answer": datasets.Value("string"),
        "answer_index": datasets.Value("int64"), "cot_content": datasets.Value("string"),
        "category": datasets.Value("string"), "src": datasets.Value("string"),
    })  # fmt: skip
    rng = random.Random(seed + 1)
    dd = datasets.DatasetDict({
        "test": datasets.Dataset.from_dict(_pro_rows(rng, PRO_TEST, 70, False), features=features),
        "validation": datasets.Dataset.from_dict(_pro_rows(rng, PRO_VALIDATION, 0, True),
                                                 features=features),
    })  # fmt: skip
    dd.save_to_disk(str(out / "TIGER-Lab--MMLU-Pro"), num_shards={s: 1 for s in dd})
    return PRO_TEST


REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("AIRGAP_EVAL_BENCHMARKS") or REPO.parent / "shared" / "benchmarks")
TASKS = {"mmlu": build_mmlu, "leaderboard_mmlu_pro": build_mmlu_pro}
SHIM = """
import os
import datasets
from pathlib import Path

_root = Path(os.environ["FULLSIZE_TEST_DATA"])

def _load(path, name=None, split=None, **_kwargs):
    dd = datasets.load_from_disk(str(_root / (path.replace("/", "--") + (f"--{name}" if name else ""))))
    return dd[split] if split else dd

datasets.load_dataset = _load
"""


@dataclass
class Result:
    tool: str
    code: int
    wall: float
    cpu: float
    prompts: int
    rss_mib: float
    metrics: dict[str, float]

    def row(self) -> str:
        rate = self.prompts / self.wall if self.wall else 0.0
        return (f"  {self.tool:22} exit {self.code:>3}  {self.wall:>7.1f}s wall  {self.cpu:>7.1f}s CPU  "
                f"{rate:>6.0f} prompts/s ({self.prompts})  largest RSS {self.rss_mib:>6.0f} MiB")  # fmt: skip


class Limits:
    """A cgroup (v2, else v1) holding one command: `cpus` of CPU time, `memory` bytes."""

    def __init__(self, cpus: float, memory: int) -> None:
        self.cpus, self.memory = cpus, memory
        self.kind = "none"
        self.reason = ""
        own = Path("/proc/self/cgroup").read_text().splitlines()
        if Path("/sys/fs/cgroup/cgroup.controllers").is_file():
            self.kind = "v2"
            self.base = Path("/sys/fs/cgroup") / own[0].split(":", 2)[2].lstrip("/")
        elif Path("/sys/fs/cgroup/memory").is_dir() and Path("/sys/fs/cgroup/cpu").is_dir():
            self.kind = "v1"
            rel = {line.split(":")[1]: line.split(":", 2)[2] for line in own}
            self.mem_base = Path("/sys/fs/cgroup/memory") / rel.get("memory", "/").lstrip("/")
            self.cpu_base = Path("/sys/fs/cgroup/cpu") / rel.get("cpu,cpuacct", rel.get("cpu", "/")).lstrip("/")  # fmt: skip

    @contextmanager
    def group(self, name: str) -> Any:
        """The cgroup dirs for one command (yields the files its pid goes into)."""
        made: list[Path] = []
        procs: list[Path] = []
        name = f"fullsize-bench-{os.getpid()}-{name}"  # benches running side by side
        try:
            if self.kind == "v2":
                d = self.base / name
                d.mkdir()
                made.append(d)
                (d / "cpu.max").write_text(f"{int(self.cpus * 100_000)} 100000")
                (d / "memory.max").write_text(str(self.memory))
                (d / "memory.swap.max").write_text("0")
                procs.append(d / "cgroup.procs")
            elif self.kind == "v1":
                m, c = self.mem_base / name, self.cpu_base / name
                for d in (m, c):
                    d.mkdir()
                    made.append(d)
                (m / "memory.limit_in_bytes").write_text(str(self.memory))
                (c / "cpu.cfs_period_us").write_text("100000")
                (c / "cpu.cfs_quota_us").write_text(str(int(self.cpus * 100_000)))
                procs += [m / "cgroup.procs", c / "cgroup.procs"]
        except OSError as e:
            self.reason = f"{type(e).__name__}: {e}"
            procs = []
        try:
            yield procs
        finally:
            for d in reversed(made):
                for _ in range(50):  # the exited process leaves it a moment later
                    try:
                        d.rmdir()
                        break
                    except OSError:
                        time.sleep(0.1)


def run_limited(cmd: list[str], env: dict[str, str], log: Path, limits: Limits, name: str
                ) -> tuple[int, float, float, float]:  # fmt: skip
    """exit code, wall s, CPU s, largest RSS MiB of one command in its own cgroup."""
    with limits.group(name) as procs, log.open("w") as out:

        def join() -> None:  # in the child, before exec: nothing of the command runs unlimited
            for p in procs:
                p.write_text(str(os.getpid()))

        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=join if procs else None)  # fmt: skip
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    return code, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def _metrics(results: Path, task: str) -> dict[str, float]:
    files = sorted(results.rglob("results_*.json"))
    if not files:
        return {}
    res = json.loads(files[-1].read_text())["results"]
    return {f"{t}.{k}": float(v) for t, r in res.items() for k, v in r.items()
            if isinstance(v, int | float) and "stderr" not in k}  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRGAP_EVAL_", "HF_"))}
    return env | extra


def ours(work: Path, task: str, data: Path, stub: GpuStub, limits: Limits, limit: int | None
         ) -> Result:  # fmt: skip
    work.mkdir(parents=True)
    spec: dict[str, Any] = {"id": work.name, "benchmark_id": task,
                            "model": {"url": stub.base_url, "name": "tiny"}, "parameters": {}}  # fmt: skip
    if limit:
        spec["num_examples"] = limit
    (work / "job.json").write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "airgap_eval", "run", "--job-spec", str(work / "job.json"),
           "--test-data", str(data), "--output-dir", str(work / "results"),
           "--work-dir", str(work / "work")]  # fmt: skip
    stub.reset()
    code, wall, cpu, rss = run_limited(cmd, _env(), work / "run.log", limits, f"ours-{work.name}")
    return Result("airgap-eval defaults", code, wall, cpu, int(stub.stats()["prompts"]), rss,
                  _metrics(work / "results", task))  # fmt: skip


def plain(work: Path, task: str, data: Path, stub: GpuStub, limits: Limits, limit: int | None
          ) -> Result:  # fmt: skip
    work.mkdir(parents=True)
    (work / "shim").mkdir()
    (work / "shim" / "sitecustomize.py").write_text(SHIM)
    model_args = ",".join([
        "model=tiny", f"base_url={stub.base_url}/completions", f"tokenizer={data / 'tokenizer'}",
        "tokenizer_backend=huggingface", "num_concurrent=64", "max_length=2048", "max_retries=3",
    ])  # fmt: skip
    cmd = [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args",
           model_args, "--tasks", task, "--batch_size", "1", "--output_path",
           str(work / "results"), "--log_samples"]  # fmt: skip
    if limit:
        cmd += ["--limit", str(limit)]
    env = _env(PYTHONPATH=os.pathsep.join([str(work / "shim"), os.environ.get("PYTHONPATH", "")]),
               FULLSIZE_TEST_DATA=str(data), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_HOME=str(work / "hf"))  # fmt: skip
    stub.reset()
    code, wall, cpu, rss = run_limited(cmd, env, work / "run.log", limits, f"plain-{work.name}")
    return Result("plain lm_eval nc=64", code, wall, cpu, int(stub.stats()["prompts"]), rss,
                  _metrics(work / "results", task))  # fmt: skip


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="mmlu,leaderboard_mmlu_pro")
    ap.add_argument("--latency", default="0,0.04", help="stub latencies (s), comma-separated")
    ap.add_argument("--cpus", type=float, default=0.5)
    ap.add_argument("--memory-gib", type=float, default=4.0)
    ap.add_argument("--limit", type=int, help="questions per subtask (a quick run)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--data-only", type=Path, help="only write the bundles to this dir")
    args = ap.parse_args()
    if args.data_only:
        args.data_only.mkdir(parents=True, exist_ok=True)
        print(f"mmlu: {build_mmlu(args.data_only)} questions, "
              f"mmlu_pro: {build_mmlu_pro(args.data_only)}")  # fmt: skip
        return 0
    root = Path(tempfile.mkdtemp(prefix="fullsize-bench-"))
    limits = Limits(args.cpus, int(args.memory_gib * 2**30))
    ok = True
    try:
        data = root / "test_data"
        data.mkdir()
        tasks = args.tasks.split(",")
        for task in tasks:
            TASKS[task](data)
        tokenizer = SHARED / "raw" / "tokenizer" / "gpt2"
        if tokenizer.is_dir():
            shutil.copytree(tokenizer, data / "tokenizer")
        else:
            from testbed.tiny import build_tokenizer

            build_tokenizer(data / "tokenizer")
        print(f"limits: {args.cpus:g} CPU, {args.memory_gib:g} GiB per command (cgroup "
              f"{limits.kind}); {os.cpu_count()} cores shared with other work", flush=True)  # fmt: skip
        n = 0
        for latency in (float(x) for x in args.latency.split(",")):
            cfg = Config(latency=latency, slots=64 if latency else 1_000_000)
            with GpuStub(cfg) as stub:
                for task in tasks:
                    n += 1
                    print(f"\n== {task}{f', --limit {args.limit}' if args.limit else ''}, stub "
                          f"{latency * 1000:.0f} ms (load before: {load()})", flush=True)  # fmt: skip
                    a = ours(root / f"ours-{n}", task, data, stub, limits, args.limit)
                    print(a.row(), flush=True)
                    b = plain(root / f"plain-{n}", task, data, stub, limits, args.limit)
                    print(b.row(), flush=True)
                    same = bool(a.metrics) and a.metrics == b.metrics
                    ok &= same and a.code == 0
                    print(f"  ours/plain: wall {b.wall / a.wall:.2f}x faster, largest RSS "
                          f"{a.rss_mib / b.rss_mib:.2f}x; metrics identical: {same} "
                          f"(load after: {load()})", flush=True)  # fmt: skip
        if limits.reason:
            print(f"cgroup limits could not be set ({limits.reason}): the figures are unlimited")
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
