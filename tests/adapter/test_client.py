"""adapter.client's request path in-process, against testbed.gpustub: what it costs per request
(one TCP connection for a whole run, not one per request: a new connection per request is what
lm_eval's serial path pays) and what it holds (token ids once, not a second copy for the run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.model import CacheHook
from lm_eval.models.openai_completions import LocalCompletionsAPI

from adapter import client
from adapter.harness import CompletionsLM
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


def test_token_ids_are_lm_evals_and_tokenized_ahead_in_bounded_batches(
    tiny_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batched tokenizing gives lm_eval the ids its own encoding gives, holds at most a
    batch of requests' ids beside lm_eval's own (not the whole run's a second time), and the
    ids lm_eval keeps share their int objects."""
    monkeypatch.setattr(client, "TOKENIZE_AHEAD", 10)
    reqs = _requests(45)
    seen: dict[str, Any] = {}

    def capture(lm: Any) -> Any:
        def tokens(new_reqs: list[Any], **kwargs: Any) -> list[tuple[float, bool]]:
            seen[type(lm).__name__] = [(ctx, cont) for _key, ctx, cont in new_reqs]
            return [(0.0, True)] * len(new_reqs)

        return tokens

    ours = _lm(tiny_tree / "tokenizer", "http://127.0.0.1:9/v1/completions", num_concurrent=1)
    plain = LocalCompletionsAPI(model="tiny", base_url="http://127.0.0.1:9/v1/completions",
                                tokenizer=str(tiny_tree / "tokenizer"), max_length=2048,
                                tokenizer_backend="huggingface")  # fmt: skip
    batches: list[int] = []
    memo_sizes: list[int] = []
    real_call = ours.tokenizer.__call__

    def counting(texts: list[str], **kwargs: Any) -> Any:
        batches.append(len(texts))
        memo_sizes.append(len(ours._memo))
        return real_call(texts, **kwargs)

    monkeypatch.setattr(ours, "tokenizer", counting)
    monkeypatch.setattr(ours, "_loglikelihood_tokens", capture(ours))
    monkeypatch.setattr(plain, "_loglikelihood_tokens", capture(plain))
    ours.loglikelihood(reqs)
    plain.loglikelihood(reqs)
    assert seen["CompletionsLM"] == seen["LocalCompletionsAPI"]
    # 45 requests, 10 at a time: 5 calls of at most 10 contexts (shared by 4 choices) + 10 wholes
    assert len(batches) == 5 and max(batches) <= 20
    assert max(memo_sizes) <= 20  # what is left of the batch before when the next is tokenized
    assert ours._memo == {}
    # each token id is one shared int object across all requests (8 bytes a token, not 36)
    ids = [t for ctx, cont in seen["CompletionsLM"] for t in ctx + cont if t > 256]
    assert ids and all(t is ours._ints[t] for t in ids)
    # and a question's context ids one list for its choices tokenized in one batch (lm_eval
    # keeps one per request)
    contexts = [ctx for ctx, _cont in seen["CompletionsLM"]]
    first = [i - i % 4 for i in range(len(contexts))]  # the question's first choice
    assert all(contexts[i] is contexts[f] for i, f in enumerate(first) if i // 10 == f // 10)
    assert len({id(c) for c in contexts}) < len(contexts) / 2
    # the Rust tokenizer's path (taken once it matched on the first texts) gives the same ids
    rust = _lm(tiny_tree / "tokenizer", "http://127.0.0.1:9/v1/completions", num_concurrent=1)
    monkeypatch.setattr(rust, "_loglikelihood_tokens", capture(rust))
    rust.loglikelihood(reqs)
    assert rust._rust is True
    assert seen["CompletionsLM"] == seen["LocalCompletionsAPI"]


def test_answers_orjson_refuses_are_parsed_as_python_does() -> None:
    """A server that writes NaN or -Infinity logprobs (Python's json does) is still read; a
    broken answer is the JSONDecodeError the request loop retries on."""
    import json
    import math

    assert client.load(b'{"lp": [-Infinity, 0.5]}') == {"lp": [-math.inf, 0.5]}
    assert math.isnan(client.load(b"[NaN]")[0])
    assert client.load(b'{"a": 1}') == {"a": 1}
    with pytest.raises(json.JSONDecodeError):
        client.load(b'{"choices": [')
    assert json.loads(client.dump({"prompt": [[1, 2]], "seed": 1234})) == {
        "prompt": [[1, 2]],
        "seed": 1234,
    }
