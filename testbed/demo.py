"""`make demo` (`python -m testbed.demo` from the repo root): the whole pod on this machine,
with real parts and the pod's code paths.

A local S3 server (SeaweedFS) holds staged tiny real-format bundles and a tokenizer; a vLLM
CPU server serves a tiny random Llama; then `sync` -> `run` -> `upload` run as separate
processes, exactly as the init container, the adapter and the native sidecar would, with
/test_data read-only for the adapter. Ends with the scores and where the results landed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from common.logs import setup_logging
from testbed.localservers import SeaweedS3, stop_process

log = logging.getLogger(__name__)
DEFAULT_TASKS = ["arc_easy", "blimp_adjunct_island", "hellaswag", "gsm8k"]
DATA_BUCKET, RESULTS_BUCKET = "test-data", "results"
STEPS = 7


def _step(n: int, text: str) -> float:
    log.info("[%d/%d] %s", n, STEPS, text)
    return time.monotonic()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "airgap_eval", *args]


@contextmanager
def _background(
    args: list[str], env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that is stopped (and waited for) whatever happens, also on Ctrl-C."""
    with log_path.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            stop_process(proc, grace_s=30)


def _run(args: list[str], env: dict[str, str], what: str) -> None:
    proc = subprocess.run(args, env=env)
    if proc.returncode != 0:
        raise SystemExit(
            f"demo: {what} failed with exit code {proc.returncode} (see its log above)"
        )


def _job_spec(model_url: str, tasks: list[str], limit: int | None) -> dict[str, Any]:
    return {
        "id": "demo-job",
        "provider_id": "lm_evaluation_harness",
        "benchmark_id": tasks[0] if len(tasks) == 1 else "demo",
        "benchmark_index": 0,
        "model": {"url": model_url, "name": "tiny"},
        "num_examples": limit,
        "parameters": {"tasks": tasks, "tokenizer": "tokenizer", "num_concurrent": 4},
    }


def _scores(results_dir: Path) -> list[tuple[str, str, float]]:
    files = sorted(results_dir.rglob("results_*.json"))
    if not files:
        return []
    results = json.loads(files[-1].read_text())["results"]
    rows = []
    for task, metrics in sorted(results.items()):
        for key, value in metrics.items():
            # lm_eval names scores "metric,filter"; stderr and bookkeeping keys are not scores
            if isinstance(value, (int, float)) and "," in key and "_stderr" not in key:
                rows.append((task, key, float(value)))
    return rows


def demo(workdir: Path, tasks: list[str], limit: int | None) -> None:
    from common.manifest import Manifest
    from common.s3 import client
    from staging.stage import upload_tree
    from tasks.index import default_index_path
    from testbed.modelserver import VLLMServer
    from testbed.tiny import build_all, read_only

    started = time.monotonic()
    if workdir.exists():
        for p in workdir.rglob("*"):  # last run's read-only tree
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(workdir)
    pod = workdir / "pod"
    pod.mkdir(parents=True)
    with ExitStack() as stack:
        t = _step(1, "starting a local S3 server (SeaweedFS)")
        s3 = stack.enter_context(SeaweedS3(workdir / "s3"))
        for bucket in (DATA_BUCKET, RESULTS_BUCKET):
            s3.create_bucket(bucket)
        log.info("      S3 at %s (%.1f s)", s3.endpoint, time.monotonic() - t)

        t = _step(2, "building bundled tiny real-format datasets, a tokenizer and a tiny Llama")
        assets = build_all(workdir / "assets")
        log.info(
            "      %s (%.1f s)",
            ", ".join(sorted(p.name for p in assets.test_data.iterdir())),
            time.monotonic() - t,
        )

        t = _step(3, f"staging to s3://{DATA_BUCKET}/demo/v1 (files first, manifest.json last)")
        upload_tree(
            assets.test_data,
            Manifest.load(assets.test_data / "manifest.json"),
            f"s3://{DATA_BUCKET}/demo/v1",
            s3.connection(),
        )
        log.info("      uploaded (%.1f s)", time.monotonic() - t)

        # Measured on 2 cores: 70-113 s (most of it vLLM's own imports and CPU warm-up).
        t = _step(4, "starting a vLLM CPU endpoint serving the tiny model (usually 1-2 min)")
        vllm = stack.enter_context(VLLMServer(assets.model, log_path=workdir / "vllm.log"))
        log.info("      model at %s (%.1f s)", vllm.base_url, time.monotonic() - t)

        env = {**os.environ, **s3.env(), "PYTHONUNBUFFERED": "1"}
        t = _step(5, "init container: airgap-eval sync")
        sync_env = env | {"TEST_DATA_S3_BUCKET": DATA_BUCKET, "TEST_DATA_S3_KEY": "demo/v1"}
        _run(_cli("sync", "--dest", str(pod / "test_data")), sync_env, "sync")
        read_only(pod / "test_data")
        log.info("      synced and made read-only (%.1f s)", time.monotonic() - t)

        t = _step(6, "adapter: airgap-eval run, with the sidecar (airgap-eval upload) watching")
        if not default_index_path().is_file():
            # Measured on 2 cores: 18-50 s (load-dependent); once per lm_eval version.
            log.info("      first run here: it builds lm_eval's task index once (20-50 s)")
        spec = pod / "meta" / "job.json"
        spec.parent.mkdir()
        spec.write_text(json.dumps(_job_spec(vllm.base_url, tasks, limit), indent=1))
        results = pod / "results"
        results.mkdir()
        sidecar_env = env | {
            "RESULTS_S3_URI": f"s3://{RESULTS_BUCKET}/demo",
            "EVALHUB_JOB_SPEC_PATH": str(spec),
        }
        sidecar = stack.enter_context(
            _background(
                _cli("upload", "--results-dir", str(results)), sidecar_env, workdir / "sidecar.log"
            )
        )
        run_env = {
            k: v for k, v in env.items() if not k.startswith("AWS_")
        }  # the adapter gets no S3 keys
        run_env |= {"AIRGAP_EVAL_TERMINAL_EVENTS": "sidecar"}
        run_code = subprocess.run(
            _cli("run", "--job-spec", str(spec), "--test-data", str(pod / "test_data"),
                 "--output-dir", str(results), "--work-dir", str(pod / "work")),
            env=run_env,
        ).returncode  # fmt: skip
        sidecar_code = sidecar.wait(120)
        log.info(
            "      run exit %d, upload exit %d (%.1f s)",
            run_code,
            sidecar_code,
            time.monotonic() - t,
        )

        _step(7, "results")
        rows = _scores(results)
        width = max([len(m) for _, m, _ in rows] + [6])
        print(f"\n  {'task':<25} {'metric':<{width}} value")
        for task, metric, value in rows:
            print(f"  {task:<25} {metric:<{width}} {value:.4f}")
        keys = [
            o["Key"]
            for o in client(s3.connection())
            .list_objects_v2(Bucket=RESULTS_BUCKET, Prefix="demo/")
            .get("Contents", [])
        ]
        print(
            f"\n  {len(keys)} objects in s3://{RESULTS_BUCKET}/demo/ (local S3, stopped now), e.g.:"
        )
        for k in sorted(keys)[:8]:
            print(f"    s3://{RESULTS_BUCKET}/{k}")
        print(f"\n  local copy: {results}\n  logs: {workdir}/*.log, {results}/logs/")
        print(f"  demo wall time: {time.monotonic() - started:.0f} s\n")
        if run_code or sidecar_code or not rows:
            raise SystemExit(run_code or sidecar_code or 1)


def main(argv: list[str], prog: str = "python -m testbed.demo") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--workdir", type=Path, default=Path(".demo"), help="scratch dir, replaced each run (.demo)"
    )
    ap.add_argument(
        "--tasks",
        default=",".join(DEFAULT_TASKS),
        help="comma-separated lm_eval tasks among the bundled ones",
    )
    ap.add_argument(
        "--limit", type=int, default=None, help="examples per task (default: all bundled rows)"
    )
    args = ap.parse_args(argv)
    setup_logging()
    try:
        demo(args.workdir.resolve(), args.tasks.split(","), args.limit)
    except KeyboardInterrupt:
        log.error("interrupted: every process the demo started has been stopped")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
