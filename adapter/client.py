"""The request loop of our lm_eval API models: a subclass of lm_eval's `TemplateAPI` models
(lm_eval is not forked or patched) overriding four methods: `get_batched_requests` (the async
request loop), `__init__` (concurrency and batching), `loglikelihood` and `tok_encode` (one
batched tokenizer call).

What it changes, and why:

- Concurrency: fixed when the job spec sets num_concurrent (1 means one request in flight,
  never more), else adaptive (adapter.concurrency) up to a ceiling. All work goes through
  this async path, also at 1: lm_eval's serial path opens a new connection per request.
- Busy servers: 429 and 503 are turn-aways, not failures: the request waits for
  `Retry-After` (or backs off), the adaptive limit drops, and it is sent again for as long as
  `timeout` allows since its first try. Other failures get `max_retries` attempts in all,
  as in lm_eval; 400/401/403/404/422 fail at once (a retry cannot fix them).
- Several prompts per request for loglikelihood work when batch_size and num_concurrent are
  both unset (`AUTO_BATCH`): consecutive items of lm_eval's length-sorted order, as its own batching
  takes them. An endpoint that refuses a list of prompts (4xx, or a wrong number of choices)
  gets one prompt per request from then on.
- Stop sequences: the OpenAI API (and vLLM's server) take at most 4; lm_eval's completions
  path sends every `until` string (gsm8k_platinum_cot_llama has 5: HTTP 400 on every
  request). The first 4 go to the server, the rest cut the answer here, where the server
  would have stopped (greedy text before a stop is the same either way).
- Client cost: each payload is serialised once (not per attempt), answers are parsed where
  they arrive, and no per-request progress bar or tenacity wrapper sits in the loop.

The answers are the ones lm_eval's serial path produces (same payloads — including the EOS
stop string its async path forgets — same parsing, same cache writes), in the same order.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
from lm_eval.models.api_models import LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER

from adapter.concurrency import Gate, Limit

log = logging.getLogger(__name__)

TOKENIZE_AHEAD = 1024  # requests tokenized in one call, ahead of lm_eval's encoding loop
AUTO_BATCH = 8  # loglikelihood prompts per request when the spec sets no batch_size
FATAL = frozenset({400, 401, 403, 404, 405, 413, 422})
TURN_AWAY = frozenset({429, 503})
MAX_PAUSE = 30.0  # an absurd Retry-After is capped
MAX_STOP = 4  # stop sequences an OpenAI-compatible server accepts


def split_stops(payload: dict[str, Any]) -> list[str]:
    """Keep the first MAX_STOP stop strings in the payload; return the rest (cut here)."""
    stop = payload.get("stop")
    if not isinstance(stop, list) or len(stop) <= MAX_STOP:
        return []
    payload["stop"] = stop[:MAX_STOP]
    return [s for s in stop[MAX_STOP:] if s]


def dump(payload: dict[str, Any]) -> bytes:
    """The request body: orjson (~5x faster than json on token id lists), json for what
    orjson refuses (a gen_kwargs value that is not plain JSON, e.g. a numpy scalar)."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        return json.dumps(payload).encode()


def load(raw: bytes) -> Any:
    """An answer: orjson (a vLLM echo answer holds a logprob dict per prompt token), json
    for what only Python's parser takes (NaN or -Infinity logprobs)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def cut_at(text: str, stops: list[str]) -> str:
    for s in stops:
        text = text.split(s, 1)[0]
    return text


class TurnedAway(Exception):
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        super().__init__(f"HTTP {resp.status}")
        self.info, self.status = resp.request_info, resp.status
        self.retry_after = retry_after(resp.headers.get("Retry-After"))


class Refused(Exception):
    """The endpoint refused a request of several prompts."""


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds; an HTTP date is treated as absent)."""
    try:
        return min(max(float(value), 0.0), MAX_PAUSE) if value else None
    except ValueError:
        return None


class AdaptiveRequests:
    """Mixed in front of lm_eval's LocalCompletionsAPI / LocalChatCompletion (see
    adapter.harness). `num_concurrent=None` means adaptive, `batch_size=None` automatic."""

    _limit: Limit
    _auto_batch: int

    def __init__(self, *args: Any, num_concurrent: int | None = None, max_concurrent: int = 128,
                 batch_size: int | None = None, **kwargs: Any) -> None:  # fmt: skip
        adaptive = num_concurrent is None
        ceiling = max_concurrent if adaptive else int(num_concurrent or 1)
        # lm_eval takes its async path (ours) only above 1; the Limit is what bounds requests
        super().__init__(*args, num_concurrent=max(2, ceiling),  # type: ignore[call-arg]
                         batch_size=batch_size or 1, **kwargs)  # fmt: skip
        self._limit = Limit(ceiling=ceiling, adaptive=adaptive)
        # several prompts per request only when the spec leaves both unset: an explicit
        # num_concurrent alone asks for lm_eval's own behaviour, one prompt per request
        self._auto_batch = AUTO_BATCH if batch_size is None and adaptive else 0
        self.turn_aways = 0
        self._memo: dict[str, list[Any]] = {}  # text -> [token ids, uses left]
        self._ahead: Iterator[Any] | None = None  # requests not tokenized yet
        self._ints: list[int] = []  # one int object per token id, shared by all requests
        self._rust: bool | None = None  # the Rust tokenizer answers directly (None: not checked)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> Any:
        """lm_eval's own loglikelihood, its two tokenizer calls per request answered from
        batched calls (the same ids: the same strings, the same flags). lm_eval encodes the
        requests in their order: the batches run `TOKENIZE_AHEAD` requests ahead of it and each
        entry goes at its last use, so the ids are held once (by lm_eval), not twice, and a
        context's ids once for all its continuations."""
        api: Any = self
        if api.tokenizer_backend == "huggingface":
            self._ahead = iter(requests)
        try:
            return super().loglikelihood(requests, disable_tqdm)  # type: ignore[misc]
        finally:
            self._memo, self._ahead = {}, None

    def _tokenize_ahead(self) -> bool:
        """Tokenize the next requests' strings in one call; False when none are left."""
        chunk = list(itertools.islice(self._ahead or (), TOKENIZE_AHEAD))
        if not chunk:
            self._ahead = None
            return False
        uses: collections.Counter[str] = collections.Counter()
        for req in chunk:
            context, continuation = req.args[0], req.args[1]
            # TemplateLM._encode_pair encodes context+continuation and the context without
            # its trailing spaces; an empty context encodes the continuation alone
            uses.update((context + continuation, context.rstrip()) if context else (continuation,))
        new = [t for t in uses if t not in self._memo]
        ids = self._encode(new) if new else []
        top = max(map(max, filter(None, ids)), default=-1)
        if top >= len(self._ints):
            self._ints = list(range(top + 1))
        share = self._ints.__getitem__
        for text, found in zip(new, ids, strict=True):
            # the tokenizer makes a fresh int object per id and lm_eval keeps every
            # request's ids until the run ends: shared ints make that 8 bytes a token, not 36
            self._memo[text] = [list(map(share, found)), 0]
        for text, n in uses.items():
            self._memo[text][1] += n
        return True

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """The tokenizer's ids for `texts`. A transformers fast tokenizer wraps a Rust one whose
        `encode_batch_fast` (no offsets, no per-text Python objects) takes ~25% less CPU: used
        once it gave the same ids as the wrapper on the first texts of this run."""
        api: Any = self
        # TemplateAPI.tok_encode's default: special tokens only with add_bos_token
        special = bool(api.add_bos_token)
        rust = getattr(getattr(api.tokenizer, "_tokenizer", None), "encode_batch_fast", None)
        if rust is not None and self._rust:
            return [e.ids for e in rust(texts, add_special_tokens=special)]
        ids: list[list[int]] = api.tokenizer(
            texts, add_special_tokens=special, return_attention_mask=False
        ).input_ids
        if self._rust is None:
            sample = texts[:64]
            self._rust = (
                rust is not None
                and [e.ids for e in rust(sample, add_special_tokens=special)] == ids[: len(sample)]
            )
        return ids

    def _memoized(self, string: str) -> list[int] | None:
        entry = self._memo.get(string)
        if entry is None and self._ahead is not None and self._tokenize_ahead():
            entry = self._memo.get(string)
        if entry is None:
            return None
        entry[1] -= 1
        if entry[1] <= 0:  # its last use: lm_eval keeps it, we let go
            del self._memo[string]
        # one list for every request of a context (a question's 4 or 10 choices): lm_eval only
        # reads the ids it keeps (TemplateAPI._loglikelihood_tokens concatenates, slices)
        return entry[0]

    def tok_encode(self, string: Any, left_truncate_len: int | None = None,
                   add_special_tokens: bool = False, **kwargs: Any) -> Any:  # fmt: skip
        if isinstance(string, str) and not (left_truncate_len or add_special_tokens or kwargs):
            ids = self._memoized(string)
            if ids is not None:
                return ids
        return super().tok_encode(string, left_truncate_len=left_truncate_len,  # type: ignore[misc]
                                  add_special_tokens=add_special_tokens, **kwargs)  # fmt: skip

    # lm_eval's hook: every concurrent loglikelihood/generation call lands here
    async def get_batched_requests(
        self,
        requests: list[Any],
        cache_keys: list[Any],
        *,
        generate: bool = True,
        ctxlens: list[Any] | None = None,
        **kwargs: Any,
    ) -> list[list[Any]]:
        api: Any = self
        ctxlens = ctxlens or [None] * len(requests)
        answers: list[Any] = [None] * len(requests)
        todo = collections.deque(range(len(requests)))
        gate = Gate(self._limit)
        conn = aiohttp.TCPConnector(limit=self._limit.ceiling, ssl=api.verify_certificate)
        timeout = aiohttp.ClientTimeout(total=api.timeout)
        headers = {**api.header, "Content-Type": "application/json"}

        async def send(idx: list[int], session: aiohttp.ClientSession) -> None:
            msgs = [requests[i] for i in idx]
            payload = api._create_payload(
                api.create_message(msgs),
                generate=generate,
                gen_kwargs=copy.deepcopy(kwargs.get("gen_kwargs")),
                seed=api._seed,
                eos=api.eos_string,
            )
            extra_stops = split_stops(payload) if generate else []
            body = dump(payload)
            auto = len(idx) > 1 and self._auto_batch > 1
            outputs = await self._post(session, gate, body, headers, several=auto)
            ctx = [ctxlens[i] for i in idx]
            got = (api.parse_generations(outputs=outputs) if generate
                   else api.parse_logprobs(outputs=outputs, tokens=msgs, ctxlens=ctx))  # fmt: skip
            if len(got) != len(idx):
                problem = f"{len(idx)} prompts in a request, {len(got)} answers"
                if auto:
                    raise Refused(problem)
                raise RuntimeError(f"the model endpoint sent {problem}")
            for i, answer in zip(idx, got, strict=True):
                if answer is None and generate:  # as lm_eval: a null text is kept, not cached
                    answers[i] = LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER
                    continue
                if extra_stops:
                    answer = cut_at(answer, extra_stops)
                answers[i] = answer
                if cache_keys[i] is not None:
                    api.cache_hook.add_partial(
                        "generate_until" if generate else "loglikelihood", cache_keys[i], answer
                    )

        async def worker(session: aiohttp.ClientSession) -> None:
            while todo:
                n = self._batch_for(generate)
                idx = [todo.popleft() for _ in range(min(n, len(todo)))]
                try:
                    await send(idx, session)
                except Refused as e:
                    if self._auto_batch > 1:
                        log.info("the endpoint does not take several prompts per request (%s): "
                                 "one prompt per request from now on", e)  # fmt: skip
                    self._auto_batch = 1
                    for i in idx:
                        await send([i], session)

        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            n = min(self._limit.ceiling, len(requests))  # a worker per request slot
            workers = [asyncio.create_task(worker(session)) for _ in range(n)]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
        self._log_limit(len(requests))
        return [answers]

    def _batch_for(self, generate: bool) -> int:
        api: Any = self
        if self._auto_batch == 0 or generate or not api.tokenized_requests:
            return int(api._batch_size)
        return self._auto_batch

    async def _post(self, session: aiohttp.ClientSession, gate: Gate, body: bytes,
                    headers: dict[str, str], *, several: bool) -> Any:  # fmt: skip
        api: Any = self
        first = time.monotonic()
        attempts = 0
        while True:
            await gate.acquire()
            sent = time.monotonic()
            latency: float | None = None
            try:
                async with session.post(api.base_url, data=body, headers=headers) as resp:
                    if resp.status in TURN_AWAY:
                        raise TurnedAway(resp)
                    if resp.status >= 400:
                        text = (await resp.text())[:300]
                        if several and resp.status in (400, 413, 422):
                            raise Refused(f"HTTP {resp.status}: {text}")
                        log.warning("model request failed: HTTP %d: %s", resp.status, text)
                        if resp.status in FATAL:
                            attempts = api.max_retries  # no retry can fix it
                        resp.raise_for_status()
                    raw = await resp.read()
                latency = time.monotonic() - sent
                return load(raw)
            except TurnedAway as e:
                self.turn_aways += 1
                if time.monotonic() - first + (e.retry_after or 0) > api.timeout:
                    raise aiohttp.ClientResponseError(
                        e.info,
                        (),
                        status=e.status,
                        message=f"still turned away after {api.timeout:g}s (timeout)",
                    ) from None
                await gate.pause(e.retry_after if e.retry_after is not None else 0.5)
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
                attempts += 1
                if attempts >= api.max_retries:
                    raise
                log.info("model request failed (attempt %d of %d), retrying", attempts,
                         api.max_retries)  # fmt: skip
                await asyncio.sleep(min(10.0, 0.5 * 2**attempts))
            finally:
                await gate.release(latency)

    def _log_limit(self, n: int) -> None:
        lim = self._limit
        if lim.adaptive:
            log.info("%d requests: adaptive concurrency ended at %d (took %s; ceiling %d); "
                     "%d turn-aways so far", n, lim.value,
                     ",".join(map(str, lim.history[-12:])), lim.ceiling, self.turn_aways)  # fmt: skip
