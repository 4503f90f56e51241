"""adapter.cache: lm_eval's request-cache file, read and written by the adapter. A rerun asks
only for what is missing, lm_eval's own CachingLM reads the same file, answers reach the file
while the run goes on, and looking up a request the file lacks costs no query to sqlite."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.model import CacheHook, CachingLM

from adapter.cache import COMMIT_EVERY_S, CachingMixin, RequestCache
from adapter.harness import CompletionsLM
from adapter.progress import RunProgress
from testbed.gpustub import Config, GpuStub


def _requests(n: int) -> list[Instance]:
    return [Instance("loglikelihood", {}, (f"Question {i // 4}: {i // 4} squared?\nAnswer:",
                                           f" {i % 4}"), i, ("t", i // 4, 1))
            for i in range(n)]  # fmt: skip


def _lm(tokenizer: Path, url: str) -> CompletionsLM:
    lm = CompletionsLM(model="tiny", base_url=url, tokenizer=str(tokenizer), max_retries=1,
                       tokenizer_backend="huggingface", max_length=2048)  # fmt: skip
    lm.progress = RunProgress()
    return lm


def _rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM unnamed").fetchone()[0])


def test_a_rerun_asks_the_endpoint_only_for_what_the_cache_lacks(
    tiny_tree: Path, tmp_path: Path
) -> None:
    db = tmp_path / "model_rank0.db"
    reqs = _requests(80)
    with GpuStub(Config(latency=0.0)) as stub:
        url = f"{stub.base_url}/completions"
        first = RequestCache(str(db))
        lm = _lm(tiny_tree / "tokenizer", url)
        lm.use_request_cache(first)
        before = lm.loglikelihood(reqs[:40])
        first.close()
        assert _rows(db) == 40
        asked_first = stub.stats()["prompts"]

        again = RequestCache(str(db))
        lm = _lm(tiny_tree / "tokenizer", url)
        lm.use_request_cache(again)
        after = lm.loglikelihood(reqs)
        again.close()
        asked_second = stub.stats()["prompts"] - asked_first
    assert asked_second == 40  # the 40 the first run did not ask for
    assert after[:40] == before
    assert _rows(db) == 80


def test_lm_evals_own_cachinglm_reads_the_file(tiny_tree: Path, tmp_path: Path) -> None:
    """The file stays lm_eval's: plain `lm_eval --use_cache` on it answers without asking."""
    reqs = _requests(12)
    with GpuStub(Config(latency=0.0)) as stub:
        cache = RequestCache(str(tmp_path / "model_rank0.db"))
        lm = _lm(tiny_tree / "tokenizer", f"{stub.base_url}/completions")
        lm.use_request_cache(cache)
        ours = lm.loglikelihood(reqs)
        cache.close()

    class Unreachable:
        def set_cache_hook(self, hook: CacheHook) -> None:
            pass

        def loglikelihood(self, requests: list[Instance]) -> list[Any]:
            raise AssertionError(f"asked for {len(requests)} cached requests")

    theirs = CachingLM(Unreachable(), str(tmp_path / "model_rank0.db"))  # type: ignore[arg-type]
    assert theirs.loglikelihood(reqs) == ours


def test_answers_reach_the_file_while_the_run_goes_on(tmp_path: Path) -> None:
    """A killed adapter keeps what was answered more than COMMIT_EVERY_S before."""
    now = [0.0]
    db = tmp_path / "model_rank0.db"
    cache = RequestCache(str(db), clock=lambda: now[0])
    for i in range(3):
        cache.put(f"k{i}", (-1.0, True))
    time.sleep(0.2)
    assert _rows(db) == 0  # one transaction, not one per answer
    now[0] += COMMIT_EVERY_S
    cache.put("k3", (-2.0, False))
    deadline = time.monotonic() + 5
    while _rows(db) < 4:
        assert time.monotonic() < deadline, "the answers were not committed"
        time.sleep(0.02)
    cache.close()


def test_a_request_the_file_lacks_costs_no_query(tmp_path: Path) -> None:
    """The cost lm_eval's CachingLM paid: a round trip to sqlite's thread per request."""
    cache = RequestCache(str(tmp_path / "model_rank0.db"))
    cache.put("there", (-1.0, True))
    cache.close()
    cache = RequestCache(str(tmp_path / "model_rank0.db"))
    db = cache._db

    class NoQueries:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"sqlite was asked: {name}")

    cache._db = NoQueries()  # type: ignore[assignment]
    assert all(cache.get(f"absent{i}") is None for i in range(1000))
    cache._db = db
    assert cache.get("there") == (-1.0, True)
    cache.close()


class _Model:
    """Answers every request anew (its n-th answer is n) and reports it, as lm_eval's API
    models report to their cache hook."""

    def __init__(self) -> None:
        self.asked: list[Any] = []
        self.cache_hook = CacheHook(None)

    def set_cache_hook(self, hook: CacheHook) -> None:
        self.cache_hook = hook

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            self.asked.append(req.args)
            out.append(f"answer {len(self.asked)}")
            self.cache_hook.add_partial("generate_until", req.args, out[-1])
        return out


class _Cached(CachingMixin, _Model):
    pass


@pytest.mark.parametrize(("do_sample", "asked_again"), [(False, 0), (True, 2)])
def test_a_sampled_generation_is_never_answered_from_the_cache(
    tmp_path: Path, do_sample: bool, asked_again: int
) -> None:
    reqs = [Instance("generate_until", {}, (f"q{i}", {"until": ["\n"], "do_sample": do_sample}),
                     i) for i in range(2)]  # fmt: skip
    model = _Cached()
    model.use_request_cache(RequestCache(str(tmp_path / "model_rank0.db")))
    first = model.generate_until(reqs)
    second = model.generate_until(reqs)
    assert len(model.asked) == 2 + asked_again
    assert (second == first) == (not do_sample)
