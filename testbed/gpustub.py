"""A stand-in for a latency-bound GPU model server (vLLM, TGI, SGLang on a GPU), for the
throughput bench and the concurrency tests.

It answers `/v1/completions` the way vLLM answers lm_eval's loglikelihood requests (echo,
prompt logprobs, `max_tokens` 1) and short generations, with:

- a fixed latency per request, whatever the prompt length (`--latency`);
- `--slots` sequences served at once (a request of k prompts takes k slots, as vLLM's
  max_num_seqs counts sequences); more wait in a FIFO queue, so latency grows with load;
- logprobs that are a pure function of the prompt's token ids, so the scores of two runs
  compare exactly, whatever the order, concurrency or batching of their requests;
- optional turn-aways: 429 (or 503) with `Retry-After` while more than `--reject-above`
  requests are in the server (running + queued);
- optionally one prompt per request only (`--single-prompt`: 400 to a list, as some servers);
- counters at `GET /stats` (requests, prompts, the most requests in flight at once, turn-aways,
  TCP connections the completions came over, the times of the first token-id request and the
  last answer) and `POST /stats/reset`.

    python -m testbed.gpustub --port 8000 --latency 0.04 --slots 64 [--reject-above 80]

`GpuStub` runs it as a subprocess (its own interpreter: the client under test keeps its
core) and is a context manager.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.localservers import LocalEndpoint, free_port, stop_process, wait_for_port

MODEL = "tiny"
MAX_MODEL_LEN = 2048
VOCAB = 50257


def token_logprob(prev: int, tok: int) -> float:
    """A deterministic pseudo-logprob in (-10, 0] for `tok` after `prev`."""
    return -((zlib.crc32(f"{prev}:{tok}".encode()) % 10_000) / 1000.0)


def echo_choice(index: int, prompt: list[int]) -> dict[str, Any]:
    """vLLM's choice for echo + logprobs=1 + max_tokens=1: one entry per prompt token (None
    first) plus the generated token. The top-1 entry is the token itself when its logprob is
    above -2 (a "greedy" token), else a better-scored other token."""
    token_lps: list[float | None] = [None]
    top: list[dict[str, float] | None] = [None]
    for prev, tok in itertools.pairwise(prompt):
        lp = token_logprob(prev, tok)
        token_lps.append(lp)
        top.append({str(tok): lp} if lp > -2.0 else {str((tok + 1) % VOCAB): -0.5})
    last = prompt[-1] if prompt else 0
    token_lps.append(-0.5)
    top.append({str((last + 1) % VOCAB): -0.5})
    return {
        "index": index,
        "text": "",
        "logprobs": {"token_logprobs": token_lps, "top_logprobs": top},
        "finish_reason": "length",
    }


def words(text: str) -> list[int]:
    """Token ids for a text prompt (a probe's): one per word."""
    return [zlib.crc32(w.encode()) % VOCAB for w in text.split()]


def generation_choice(index: int, prompt: Any) -> dict[str, Any]:
    seed = zlib.crc32(json.dumps(prompt).encode())
    return {"index": index, "text": f" {seed % 97}", "logprobs": None, "finish_reason": "stop"}


@dataclass
class Config:
    latency: float = 0.04
    slots: int = 64
    reject_above: int | None = None  # requests in the server (running + queued)
    reject_status: int = 429
    retry_after: float = 0.05
    single_prompt: bool = False  # answer 400 to a request of several prompts


class Slots:
    """`n` sequence slots handed out first come, first served (a request takes k at once)."""

    def __init__(self, n: int) -> None:
        self.free = n
        self.waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def take(self, k: int) -> None:
        if not self.waiting and self.free >= k:
            self.free -= k
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((k, fut))
        await fut

    def give(self, k: int) -> None:
        self.free += k
        while self.waiting and self.free >= self.waiting[0][0]:
            need, fut = self.waiting.popleft()
            self.free -= need
            fut.set_result(None)


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = self.prompts = self.rejected = self.in_flight = self.max_in_flight = 0
        self.first = self.last = 0.0  # wall clock: the first token-id request, the last answer
        self.peers: set[Any] = set()  # client (host, port)s: one per TCP connection

    def as_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "prompts": self.prompts,
            "rejected": self.rejected,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "first": self.first,
            "last": self.last,
            "connections": len(self.peers),
        }


def make_app(cfg: Config) -> Any:
    from aiohttp import web

    stats = Stats()
    slots = Slots(cfg.slots)

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": MODEL, "object": "model", "max_model_len": MAX_MODEL_LEN}]})  # fmt: skip

    async def get_stats(_request: web.Request) -> web.Response:
        return web.json_response(stats.as_dict())

    async def reset_stats(_request: web.Request) -> web.Response:
        stats.reset()
        return web.json_response({})

    async def completions(request: web.Request) -> web.Response:
        stats.in_flight += 1
        stats.peers.add(request.transport and request.transport.get_extra_info("peername"))
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            if cfg.reject_above is not None and stats.in_flight > cfg.reject_above:
                stats.rejected += 1
                return web.json_response(
                    {"error": {"message": "server busy", "type": "overloaded"}},
                    status=cfg.reject_status,
                    headers={"Retry-After": f"{cfg.retry_after:g}"},
                )
            body = await request.json()
            prompt = body.get("prompt")
            if body.get("model") != MODEL or prompt is None:
                return web.json_response({"error": {"message": "bad request"}}, status=400)
            # one token-id list, a list of them, a string or a list of strings
            many = isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], list | str)
            prompts = prompt if many else [prompt]
            if isinstance(prompts[0], list):  # token ids: lm_eval's (a probe sends text)
                stats.first = stats.first or time.time()
            if cfg.single_prompt and len(prompts) > 1:
                return web.json_response(
                    {"error": {"message": "one prompt per request"}}, status=400
                )
            k = min(len(prompts), cfg.slots)
            await slots.take(k)
            try:
                await asyncio.sleep(cfg.latency)
            finally:
                slots.give(k)
            stats.requests += 1
            stats.prompts += len(prompts)
            echo = bool(body.get("echo")) and bool(body.get("logprobs"))
            choices = [
                echo_choice(i, p if isinstance(p, list) else words(p)) if echo
                else generation_choice(i, p)
                for i, p in enumerate(prompts)
            ]  # fmt: skip
            return web.json_response({"id": "cmpl-stub", "object": "text_completion",
                                      "model": MODEL, "choices": choices})  # fmt: skip
        finally:
            stats.in_flight -= 1
            stats.last = time.time()

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/stats/reset", reset_stats)
    app.router.add_post("/v1/completions", completions)
    return app


def serve(port: int, cfg: Config) -> None:
    from aiohttp import web

    web.run_app(make_app(cfg), host="127.0.0.1", port=port, print=None, access_log=None,
                backlog=1024)  # fmt: skip


class GpuStub(LocalEndpoint):
    """The stub in its own process, on a free 127.0.0.1 port."""

    def __init__(self, cfg: Config | None = None, log_path: Path | None = None) -> None:
        self.cfg = cfg or Config()
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cfg = self.cfg
        cmd = [sys.executable, "-m", "testbed.gpustub", "--port", str(self.port),
               "--latency", str(cfg.latency), "--slots", str(cfg.slots),
               "--reject-status", str(cfg.reject_status), "--retry-after", str(cfg.retry_after)]  # fmt: skip
        if cfg.reject_above is not None:
            cmd += ["--reject-above", str(cfg.reject_above)]
        if cfg.single_prompt:
            cmd.append("--single-prompt")
        return cmd

    def start(self) -> GpuStub:
        out = self.log_path.open("wb") if self.log_path else subprocess.DEVNULL
        repo = str(Path(__file__).resolve().parent.parent)
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
        )
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_for_port(self.port, 30.0, self.proc)
        return self

    def stats(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.root_url}/stats", timeout=10) as r:
            return dict(json.loads(r.read()))

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.root_url}/stats/reset", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=10).close()

    def stop(self) -> None:
        stop_process(self.proc, sig=signal.SIGINT)

    def __enter__(self) -> GpuStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--latency", type=float, default=0.04, help="seconds per request")
    ap.add_argument("--slots", type=int, default=64, help="sequences served at once")
    ap.add_argument(
        "--reject-above", type=int, help="turn requests away above this many in the server"
    )
    ap.add_argument("--reject-status", type=int, default=429, choices=[429, 503])
    ap.add_argument("--retry-after", type=float, default=0.05, help="Retry-After seconds")
    ap.add_argument("--single-prompt", action="store_true", help="refuse lists of prompts (400)")
    args = ap.parse_args(argv)
    serve(args.port, Config(args.latency, args.slots, args.reject_above, args.reject_status,
                            args.retry_after, args.single_prompt))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
