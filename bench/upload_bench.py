"""Sidecar upload latency: terminal status.json -> every object of a 50 MB results dir visible
in S3 (target <= 2 s), against `aws s3 cp --recursive` of the same dir, both measured here in
the same run on a local SeaweedFS.

    python bench/upload_bench.py [--mb 50] [--rounds 3]

The sidecar runs as a real subprocess (`python -m sidecar`) watching the results dir, as in a
pod. Cold: it has uploaded nothing before the terminal status. Warm: a periodic partial upload
already sent the samples, as during a long run, so only what changed at the end moves.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common.manifest import Manifest, entries_for, iter_tree  # noqa: E402
from common.s3 import client  # noqa: E402
from common.s5cmd import find_binary  # noqa: E402
from common.status import StatusRecord  # noqa: E402
from testbed.localservers import SeaweedS3  # noqa: E402

BUCKET = "bench"


def make_results(root: Path, total_mb: int) -> int:
    """lm_eval-like output: results JSON, per-task samples JSONL, logs, status.json."""
    out = root / "tiny-model"
    out.mkdir(parents=True)
    (out / "results_2025-01-01.json").write_text(json.dumps({"results": {"t": {"acc,none": 0.5}}}))
    tasks = 10
    per_task = total_mb * 1_000_000 // tasks
    for i in range(tasks):
        rows = []
        size = 0
        n = 0
        while size < per_task:
            row = (
                json.dumps({"doc_id": n, "resps": os.urandom(300).hex(), "task": f"task_{i}"})
                + "\n"
            )
            rows.append(row)
            size += len(row)
            n += 1
        (out / f"samples_task_{i}_2025-01-01.jsonl").write_text("".join(rows))
    (root / "logs").mkdir()
    (root / "logs" / "adapter.log").write_text("line\n" * 2000)
    StatusRecord(component="run", job_id="bench", benchmark_id="b").write(root / "status.json")
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def visible(s3: object, prefix: str) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):  # type: ignore[attr-defined]
        keys |= {o["Key"][len(prefix) :] for o in page.get("Contents", [])}
    return keys


def remote_manifest(s3: object, prefix: str) -> dict[str, str] | None:
    try:
        body = s3.get_object(Bucket=BUCKET, Key=prefix + "manifest.json")["Body"].read()  # type: ignore[attr-defined]
    except Exception:
        return None
    return {rel: e.sha256 for rel, e in Manifest.model_validate_json(body).files.items()}


def sidecar_round(server: SeaweedS3, results: Path, job: str, warm: bool) -> tuple[float, float]:
    """(terminal status -> all objects visible, terminal status -> `uploaded` marker), seconds."""
    for name in ("done", "uploaded"):
        (results / name).unlink(missing_ok=True)
    shutil.rmtree(results / ".airgap-eval", ignore_errors=True)
    StatusRecord(component="run", job_id="bench", benchmark_id="b").write(results / "status.json")
    env = {**os.environ, **server.env(), "RESULTS_SECRET_DIR": "/nonexistent"}
    args = [
        sys.executable, "-m", "sidecar", "--results-dir", str(results),
        "--dest", f"s3://{BUCKET}/sidecar", "--job-id", job, "--benchmark-id", "b",
    ]  # fmt: skip
    if warm:
        args += ["--partial-every", "1"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    ready = "partial upload:" if warm else "waiting for the adapter"
    seen = []
    while ready not in (line := proc.stderr.readline()):
        seen.append(line)
        if not line:
            raise RuntimeError(f"sidecar exited before {ready!r}:\n{''.join(seen)}")
    s3 = client(server.connection())
    prefix = f"sidecar/{job}/b/"
    rec = StatusRecord(component="run", job_id="bench", benchmark_id="b")
    rec.finish()
    log = results / "logs" / "adapter.log"
    big = [p for p in iter_tree(results) if p.name not in ("done", "status.json", "adapter.log")]
    want = {rel: e.sha256 for rel, e in entries_for(results, big).items()}
    t0 = time.monotonic()
    rec.write(results / "status.json")
    with log.open("a") as f:
        f.write("done\n")  # the end of a run changes a few small files
    (results / "done").write_text("0\n")
    want |= {
        rel: e.sha256 for rel, e in entries_for(results, [results / "status.json", log]).items()
    }
    # The manifest goes up last, after every file verified: once it lists the final tree
    # (sha256 per file) and the listing holds every key, everything is visible.
    while remote_manifest(s3, prefix) != want or not set(want) <= visible(s3, prefix):
        time.sleep(0.02)
    t_visible = time.monotonic() - t0
    while not (results / "uploaded").exists():
        time.sleep(0.01)
    t_marker = time.monotonic() - t0
    proc.stderr.read()
    if proc.wait(60) != 0:
        raise RuntimeError(f"sidecar exited with {proc.returncode}")
    return t_visible, t_marker


def aws_round(server: SeaweedS3, results: Path, job: str) -> float:
    aws = shutil.which("aws") or str(Path(sys.executable).parent / "aws")
    env = {**os.environ, **server.env()}
    t0 = time.monotonic()
    subprocess.run(
        [aws, "s3", "cp", "--recursive", "--only-show-errors", "--endpoint-url", server.endpoint,
         str(results), f"s3://{BUCKET}/aws/{job}/"],
        env=env, check=True,
    )  # fmt: skip
    return time.monotonic() - t0


def s5cmd_round(server: SeaweedS3, results: Path, job: str) -> float:
    """The floor: the raw s5cmd binary copying the dir, no watching, hashing or verifying."""
    env = {**os.environ, **server.env()}
    t0 = time.monotonic()
    subprocess.run(
        [find_binary() or "s5cmd", "--endpoint-url", server.endpoint, "cp", f"{results}/*",
         f"s3://{BUCKET}/s5cmd/{job}/"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SeaweedS3(Path(tmp) / "weed") as server:
        server.create_bucket(BUCKET)
        results = Path(tmp) / "results"
        size = make_results(results, opts.mb)
        files = sum(1 for p in results.rglob("*") if p.is_file())
        print(f"results dir: {files} files, {size / 1e6:.1f} MB; SeaweedFS on 127.0.0.1")
        cold, warm, marker, theirs, floor = [], [], [], [], []
        for i in range(opts.rounds):
            c, m = sidecar_round(server, results, f"cold{i}", warm=False)
            w, _ = sidecar_round(server, results, f"warm{i}", warm=True)
            a = aws_round(server, results, f"r{i}")
            f = s5cmd_round(server, results, f"r{i}")
            floor.append(f)
            cold.append(c)
            warm.append(w)
            marker.append(m)
            theirs.append(a)
            print(
                f"round {i + 1}: sidecar terminal->visible cold {c:.2f} s (uploaded marker {m:.2f} s), "
                f"warm {w:.2f} s; aws s3 cp --recursive {a:.2f} s; raw s5cmd cp {f:.2f} s"
            )
        c, w = statistics.median(cold), statistics.median(warm)
        mk, a = statistics.median(marker), statistics.median(theirs)
        print(
            f"median cold: terminal status -> all objects visible {c:.2f} s (target <= 2 s: {'met' if c <= 2 else 'MISSED'})"
        )
        print(f"median cold: terminal status -> `uploaded` marker {mk:.2f} s")
        print(f"median warm (after a partial upload): terminal -> all visible {w:.2f} s")
        print(f"median: aws s3 cp --recursive {a:.2f} s")
        print(f"median: raw s5cmd cp (the floor) {statistics.median(floor):.2f} s")
        print(f"ratio cold sidecar / aws s3 cp: {c / a:.2f} (speed-up {a / c:.1f}x)")
        print(f"ratio warm sidecar / aws s3 cp: {w / a:.2f} (speed-up {a / w:.1f}x)")


if __name__ == "__main__":
    main()
