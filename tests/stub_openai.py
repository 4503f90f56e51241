"""A fault-injecting stand-in for an OpenAI-compatible server: it only answers wrongly
(401, 5xx, a hang, no logprobs). Real scoring tests use vLLM (testbed.modelserver)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.httpstub import serving


@dataclass
class Fault:
    models_status: int = 200
    completions_status: int = 200
    hang_s: float = 0.0  # sleep before answering a completion
    echo_logprobs: bool = False  # a completions answer without prompt logprobs by default
    served: list[str] = field(default_factory=lambda: ["tiny"])
    hits: list[str] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    fault: Fault

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        f = self.fault
        f.hits.append(f"GET {self.path}")
        f.auth_headers.append(self.headers.get("Authorization", ""))
        if f.models_status != 200:
            self._send(f.models_status, {"error": {"message": "refused"}})
            return
        self._send(
            200,
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "max_model_len": 512} for m in f.served],
            },
        )

    def do_POST(self) -> None:
        f = self.fault
        f.hits.append(f"POST {self.path}")
        f.auth_headers.append(self.headers.get("Authorization", ""))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if f.hang_s:
            time.sleep(f.hang_s)
        if f.completions_status != 200:
            self._send(f.completions_status, {"error": {"message": "injected fault"}})
            return
        logprobs = {"token_logprobs": [None, -1.0], "top_logprobs": [None, {"x": -1.0}]}
        self._send(
            200,
            {
                "choices": [
                    {"index": 0, "text": "x", "logprobs": logprobs if f.echo_logprobs else None}
                ]
            },
        )


@contextmanager
def stub_server(fault: Fault) -> Iterator[str]:
    """Yields the base URL (http://127.0.0.1:PORT/v1)."""
    with serving(type("Handler", (_Handler,), {"fault": fault})) as port:
        yield f"http://127.0.0.1:{port}/v1"
