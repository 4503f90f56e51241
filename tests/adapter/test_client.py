"""adapter.client's request path in-process, against testbed.gpustub: what it costs per request
(one TCP connection for a whole run, not one per request: a new connection per request is what
lm_eval's serial path pays)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.model import CacheHook

from adapter.evaluate import CompletionsLM
from adapter.progress import RunProgress
from testbed.gpustub import Config, GpuStub


def _requests(n: int) -> list[Instance]:
    # four choices per question, as a multiple-choice task asks: contexts repeat
    return [Instance("loglikelihood", {}, (f"Question {i // 4}: what is {i // 4} squared?\nAnswer:",
                                           f" {i % 4}"), i, ("t", i // 4, 1))
            for i in range(n)]  # fmt: skip


def _lm(tokenizer: Path, url: str, **kwargs: Any) -> CompletionsLM:
    lm = CompletionsLM(model="tiny", base_url=url, tokenizer=str(tokenizer), max_retries=1,
                       tokenizer_backend="huggingface", max_length=2048, **kwargs)  # fmt: skip
    lm.progress = RunProgress()
    lm.set_cache_hook(CacheHook(None))
    return lm


def test_num_concurrent_1_sends_every_request_over_one_connection(tiny_tree: Path) -> None:
    """At num_concurrent 1 each request waits for the one before: a connection set up per
    request (or one torn down by a `Connection: close`) adds its round trips to every one."""
    with GpuStub(Config(latency=0.0)) as stub:
        lm = _lm(tiny_tree / "tokenizer", f"{stub.base_url}/completions", num_concurrent=1,
                 batch_size=1)  # fmt: skip
        out = lm.loglikelihood(_requests(24))
        stats = stub.stats()
    assert len(out) == 24
    assert (stats["requests"], stats["max_in_flight"]) == (24, 1)
    assert stats["connections"] == 1
