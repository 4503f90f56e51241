"""Kill mid-run, then resume: with --cache-dir, the rerun sends only the requests that had not
finished, and the finished job matches."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from testbed.modelserver import RecordingProxy, VLLMServer
from testbed.tiny import TinyAssets
from tests.e2e.helpers import (
    RUN_TIMEOUT_S,
    airgap_run,
    cached_requests,
    explain,
    job_spec,
    read_results,
    read_samples,
    run_args,
    scores,
)

# The first test also waits for the shared vLLM server (up to minutes on a busy machine).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

TASKS = ["arc_easy", "blimp_adjunct_island", "hellaswag"]  # 20 + 12 + 12 loglikelihood requests


def test_killed_run_resumes_from_the_request_cache(
    tiny_assets: TinyAssets, vllm_server: VLLMServer, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    # The proxy slows each request down so the kill lands half-way; the URL stays the same
    # for all three runs (the cache file is keyed by it).
    with RecordingProxy(vllm_server.root_url, delay_s=0.3) as proxy:
        spec = job_spec(proxy.base_url, TASKS, num_concurrent=1)
        first = subprocess.Popen(
            run_args(spec, tmp_path / "killed", tiny_assets.test_data, cache),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while cached_requests(cache) < 5 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before it could be killed"
        os.killpg(first.pid, signal.SIGKILL)  # as a preempted pod or a Slurm timeout would
        first.wait()
        cached = cached_requests(cache)

        proxy.delay_s = 0.0
        t_resume = time.monotonic()
        resumed = airgap_run(spec, tmp_path / "resumed", tiny_assets.test_data, cache)
        assert resumed.returncode == 0, explain(resumed)
        sent_on_resume = proxy.count(since=t_resume)

        # A third run finds every request cached and sends none.
        t_again = time.monotonic()
        again = airgap_run(spec, tmp_path / "again", tiny_assets.test_data, cache)
        assert again.returncode == 0, explain(again)
        sent_again = proxy.count(since=t_again)

    results_dir = tmp_path / "resumed" / "results"
    total = sum(len(s["arguments"]) for task in TASKS for s in read_samples(results_dir, task))
    assert 0 < cached < total
    assert sent_on_resume == total - cached
    assert sent_again == 0
    assert cached_requests(cache) == total
    print(f"resume: killed after {cached}/{total} requests; the rerun sent {total - cached}")

    resumed_scores = read_results(results_dir)
    again_scores = read_results(tmp_path / "again" / "results")
    for task in TASKS:
        assert scores(resumed_scores, task) == scores(again_scores, task)
