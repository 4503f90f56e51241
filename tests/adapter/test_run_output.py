"""What a user reads from `airgap-eval run`: no git noise outside a git checkout, progress over
the whole job on a resumed run (what the request cache holds counts as done), no ETA until it
means something, a closing line naming the scores, the status record and the exit code, and a
line when the pod's default dirs are used."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.model import hash_args

from adapter import cli
from adapter.config import parser, resolve_config
from adapter.progress import RunProgress
from common.status import read_status
from testbed.gpustub import Config, GpuStub
from tests.adapter.conftest import REPO

TASKS = ["arc_easy", "blimp_adjunct_island"]


def _run(tmp_path: Path, url: str, cache: Path, out: Path, *extra: str) -> tuple[int, str]:
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({
        "id": "job-1", "benchmark_id": TASKS[0], "model": {"url": url, "name": "tiny"},
        "parameters": {"tasks": TASKS},
    }))  # fmt: skip
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "AIRGAP_EVAL_", "EVALHUB_", "OPENAI_", "NLTK_", "GIT_"))
    } | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "adapter", "--job-spec", str(spec), "--test-data",
         str(tmp_path / "test_data"), "--output-dir", str(out), "--work-dir",
         str(tmp_path / "work"), "--cache-dir", str(cache), *extra],
        cwd=tmp_path,  # not a git checkout, as in a pod
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def test_a_resumed_run_counts_the_whole_job_and_ends_with_where_things_are(
    tiny_tree: Path, tmp_path: Path
) -> None:
    (tmp_path / "test_data").symlink_to(tiny_tree)
    cache = tmp_path / "cache"
    with GpuStub(Config(latency=0.001)) as stub:  # one URL: the cache is keyed by it
        code, first = _run(tmp_path, stub.base_url, cache, tmp_path / "r1", "--limit", "3")
        assert code == 0, first[-3000:]
        code, output = _run(tmp_path, stub.base_url, cache, tmp_path / "r2")
    assert code == 0, output[-3000:]
    for text in (first, output):
        assert "fatal:" not in text and "not a git repository" not in text
    record = read_status(tmp_path / "r2" / "status.json")
    assert record is not None
    job = record.progress["requests"]
    first_record = read_status(tmp_path / "r1" / "status.json")
    assert first_record is not None
    cached = first_record.progress["requests"]["total"]
    assert job["from_cache"] == cached > 0  # the first run's answers
    assert job["done"] == job["total"] > cached  # the whole job, not only what was left
    assert sum(t["total"] for t in record.progress["tasks"].values()) == job["total"]
    assert f"resuming: {cached} of {job['total']} requests are in the request cache" in output
    last = output.strip().splitlines()[-1]
    scores = next((tmp_path / "r2").glob("results_*.json"))
    assert "run completed: exit 0" in last, last
    assert (
        f"scores: {scores}" in last and f"status record: {tmp_path / 'r2' / 'status.json'}" in last
    )
    print(last)


def _requests(task: str, n: int) -> list[Instance]:
    return [Instance("loglikelihood", {}, (f"q{task}{i}", " a"), i, (task, i, 1)) for i in range(n)]


class _Task:
    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances


def test_no_eta_until_it_means_something() -> None:
    now = [100.0]
    a, b = _requests("a", 100), _requests("b", 100)
    cache = {hash_args("loglikelihood", r.args) for r in a[:50]}  # a resumed run
    progress = RunProgress({"a": _Task(a), "b": _Task(b)}, clock=lambda: now[0])
    left = a[50:] + b
    progress.expect("loglikelihood", left, cache)
    job = progress.snapshot()["requests"]
    assert (job["done"], job["total"], job["from_cache"]) == (50, 200, 50)
    # the first answers: far too early to extrapolate (the old ETA said 11150 s here)
    for r in left[:3]:
        now[0] += 0.01
        progress.finished("loglikelihood", r.args)
    assert progress.snapshot()["requests"]["eta_s"] is None
    assert "ETA" not in progress.line()
    # 5 s and 5% of what was left later: a rate worth extrapolating
    for r in left[3:15]:
        now[0] += 0.5
        progress.finished("loglikelihood", r.args)
    job = progress.snapshot()["requests"]
    assert job["done"] == 65 and job["eta_s"] is not None
    rate = 15 / (now[0] - 100.01)
    assert job["eta_s"] == round(135 / rate)
    assert progress.line().startswith("requests: 65/200 (32%, 50 from the request cache)")
    assert f"ETA {job['eta_s']} s" in progress.line()


def test_without_task_instances_the_given_requests_are_the_job() -> None:
    progress = RunProgress()
    progress.expect("loglikelihood", _requests("a", 4))
    assert progress.snapshot()["tasks"] == {"a": {"done": 0, "total": 4}}


def _args(*argv: str) -> argparse.Namespace:
    return parser("run").parse_args(["--tasks", "arc_easy", "--model-url", "http://m/v1", *argv])


def test_the_default_dirs_are_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = resolve_config(_args(), {})
    assert settings.defaulted == ("--output-dir", "--work-dir")
    assert resolve_config(_args("--output-dir", "o"), {"AIRGAP_EVAL_WORK_DIR": "w"}).defaulted == ()
    settings = replace(settings, output_dir=tmp_path / "results")  # not the real /results
    fresh: dict[Path, Any] = {settings.output_dir: True, settings.work_dir: False}
    with caplog.at_level(logging.INFO):
        cli._say_defaults(settings, fresh)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == (
        f"no --output-dir or AIRGAP_EVAL_OUTPUT_DIR given: using the default "
        f"{tmp_path / 'results'} (created now)"
    )
    assert caplog.records[0].levelno == logging.WARNING
    assert lines[1].startswith("no --work-dir or AIRGAP_EVAL_WORK_DIR given: using the default")
