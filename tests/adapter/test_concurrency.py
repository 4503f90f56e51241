"""Concurrency of `airgap-eval run` against testbed.gpustub (a latency-bound GPU server stand-in
that counts the requests in flight and derives logprobs from the prompt): real lm_eval tasks,
the tiny bundles, the CLI as a pod runs it. Every run's per-sample answers are compared with a
serial run's: concurrency, batching and turn-aways may change when answers come, never what
they are."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapter.concurrency import START, Limit, Window
from testbed.gpustub import Config, GpuStub
from tests.adapter.conftest import REPO, RunResult

TASKS = ["arc_easy", "hellaswag", "blimp_adjunct_island"]


def _spec(path: Path, url: str, **parameters: Any) -> Path:
    path.write_text(json.dumps({
        "id": "job-1", "benchmark_id": TASKS[0], "model": {"url": url, "name": "tiny"},
        "parameters": {"tasks": TASKS, **parameters},
    }))  # fmt: skip
    return path


def _answers(out_dir: Path) -> dict[str, Any]:
    """Every sample's filtered answers, by task and doc."""
    got: dict[str, Any] = {}
    for f in sorted(out_dir.rglob("samples_*.jsonl")):
        for line in f.read_text().splitlines():
            s = json.loads(line)
            got[f"{f.name.split('_20')[0]}/{s['doc_id']}"] = s["filtered_resps"]
    assert got, f"no samples under {out_dir}"
    return got


Runner = Callable[..., tuple[RunResult, dict[str, float]]]


@pytest.fixture(scope="module")
def run_against(tiny_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """`airgap-eval run` on the tiny bundles (all rows) against a fresh stub."""
    root = tmp_path_factory.mktemp("concurrency")
    n = iter(range(100))

    def run(
        cfg: Config, env: dict[str, str] | None = None, **parameters: Any
    ) -> tuple[RunResult, dict[str, float]]:
        work = root / str(next(n))
        work.mkdir()
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HF_", "AIRGAP_EVAL_", "EVALHUB_", "OPENAI_", "NLTK_"))
        }
        with GpuStub(cfg) as stub:
            spec = _spec(work / "job.json", stub.base_url, **parameters)
            proc = subprocess.run(
                [sys.executable, "-m", "adapter", "--job-spec", str(spec), "--test-data", str(tiny_tree),
                 "--output-dir", str(work / "results"), "--work-dir", str(work / "work")],
                cwd=REPO, env=clean | (env or {}), capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            stats = stub.stats()
        res = RunResult(proc.returncode, proc.stdout + proc.stderr, work / "results")
        assert res.code == 0, res.output[-4000:]
        return res, stats

    return run


@pytest.fixture(scope="module")
def serial(run_against: Runner) -> tuple[RunResult, dict[str, float]]:
    return run_against(Config(latency=0.005, slots=64), num_concurrent=1)


def test_explicit_num_concurrent_1_never_has_two_requests_in_flight(
    serial: tuple[RunResult, dict[str, float]],
) -> None:
    res, stats = serial
    assert stats["max_in_flight"] == 1
    assert stats["requests"] == stats["prompts"] > 40  # no batch_size: one prompt each
    assert res.status.metrics


def test_adaptive_default_scores_identically_to_serial(
    serial: tuple[RunResult, dict[str, float]], run_against: Runner
) -> None:
    ref, ref_stats = serial
    res, stats = run_against(Config(latency=0.005, slots=64))  # no num_concurrent, no batch_size
    assert _answers(res.out_dir) == _answers(ref.out_dir)
    assert res.status.metrics == ref.status.metrics
    assert stats["prompts"] == ref_stats["prompts"]
    assert stats["requests"] < stats["prompts"]  # several loglikelihood prompts per request
    assert stats["max_in_flight"] > 1


def test_ceiling_from_env_and_spec_is_respected(
    serial: tuple[RunResult, dict[str, float]], run_against: Runner
) -> None:
    ref, _ = serial
    res, stats = run_against(Config(latency=0.02, slots=64), env={"AIRGAP_EVAL_MAX_CONCURRENT": "3"},
                             batch_size=1)  # fmt: skip
    assert 1 < stats["max_in_flight"] <= 3
    assert _answers(res.out_dir) == _answers(ref.out_dir)
    res, stats = run_against(
        Config(latency=0.02, slots=64),
        env={"AIRGAP_EVAL_MAX_CONCURRENT": "2"},
        max_concurrent=3,
        batch_size=1,
    )  # the env beats the spec
    assert stats["max_in_flight"] == 2


def test_explicit_concurrency_and_batch_size_are_exact(
    serial: tuple[RunResult, dict[str, float]], run_against: Runner
) -> None:
    ref, ref_stats = serial
    res, stats = run_against(Config(latency=0.02, slots=64), num_concurrent=3, batch_size=2)
    assert stats["max_in_flight"] == 3
    # each loglikelihood call (one per task group) sends pairs, its last one maybe alone
    assert math.ceil(ref_stats["prompts"] / 2) <= stats["requests"] <= ref_stats["prompts"] // 2 + 3
    assert _answers(res.out_dir) == _answers(ref.out_dir)


def test_turn_away_storm_completes_with_identical_answers(
    serial: tuple[RunResult, dict[str, float]], run_against: Runner
) -> None:
    ref, _ = serial
    for status in (429, 503):
        storm = Config(
            latency=0.01, slots=64, reject_above=2, reject_status=status, retry_after=0.02
        )
        res, stats = run_against(storm, max_retries=1)  # turn-aways are not failed attempts
        assert stats["rejected"] > 0, stats
        assert _answers(res.out_dir) == _answers(ref.out_dir)
        assert res.status.metrics == ref.status.metrics


def test_endpoint_refusing_prompt_lists_gets_one_per_request(
    serial: tuple[RunResult, dict[str, float]], run_against: Runner
) -> None:
    ref, _ = serial
    res, stats = run_against(Config(latency=0.005, slots=64, single_prompt=True))
    assert _answers(res.out_dir) == _answers(ref.out_dir)
    assert stats["requests"] == stats["prompts"]
    assert "one prompt per request from now on" in res.output


# --- the controller alone ----------------------------------------------------------------


def _window(latency: float, answers: int, _seconds: float, peak: int) -> Window:
    return Window(started=0.0, answers=answers, latency_sum=latency * answers, peak_in_flight=peak)


def test_limit_grows_while_latency_is_flat_and_shrinks_when_requests_queue() -> None:
    lim = Limit(ceiling=256, adaptive=True)
    assert lim.value == START
    # a server with 64 slots at 40 ms: flat latency up to 64 in flight, queueing beyond
    for _ in range(30):
        n = lim.value
        latency = 0.04 * max(1.0, n / 64)
        lim.on_window(_window(latency, 2 * n, 2 * latency, n), now=2 * latency)
    assert max(lim.history) >= 64
    assert 40 <= lim.value <= 100, lim.history


def test_limit_halves_on_trouble_once_per_burst_and_stays_in_bounds() -> None:
    lim = Limit(ceiling=16, adaptive=True)
    for _ in range(10):
        lim.on_window(_window(0.04, 2 * lim.value, 0.08, lim.value), now=0.08)
    assert lim.value == 16  # the ceiling
    lim.on_trouble(now=100.0)
    lim.on_trouble(now=100.01)  # the same burst
    assert lim.value == 8
    for t in range(10):
        lim.on_trouble(now=200.0 + t)
    assert lim.value == 1


def test_fixed_limit_never_moves() -> None:
    lim = Limit(ceiling=1, adaptive=False)
    lim.on_window(_window(0.001, 100, 0.1, 1), now=0.1)
    lim.on_trouble(now=5.0)
    assert lim.history == [1]


def test_limit_holds_at_start_when_the_client_is_the_bottleneck() -> None:
    """An instant endpoint: the client's event loop does 1,000 answers a second whatever the
    concurrency, so latency only grows with it. No reason to grow; no reason to starve."""
    lim = Limit(ceiling=128, adaptive=True)
    for _ in range(60):
        n = lim.value
        lim.on_window(_window(n / 1000, 2 * n, 0, n), now=2 * n / 1000)
    assert START <= lim.value <= 1.5 * START, lim.history
    assert max(lim.history) <= 2 * START
