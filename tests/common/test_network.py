"""The two bounds of common.network against real sockets and real threads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from common.errors import ConfigError
from common.network import StepTimeout, network_timeout, probe, run_bounded
from testbed.localservers import free_port
from tests.httpstub import serving, silent


class _NotFound(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def silent_port() -> Iterator[int]:
    with silent() as port:
        yield port


def test_probe_any_answer_is_reachable() -> None:
    with serving(_NotFound) as port:
        assert probe(f"http://127.0.0.1:{port}") is None


def test_probe_refused_and_silent(silent_port: int) -> None:
    assert probe(f"http://127.0.0.1:{free_port()}") == "connection refused"
    start = time.monotonic()
    assert probe(f"http://127.0.0.1:{silent_port}", timeout=1.5) == "no answer in 2 s"
    assert time.monotonic() - start < 5


def test_run_bounded_waits_while_there_is_progress() -> None:
    ticks = {"n": 0}

    def slow_but_moving() -> str:
        for _ in range(8):
            time.sleep(0.4)
            ticks["n"] += 1
        return "done"

    # 3.2 s of work, never 1.5 s without progress: it finishes
    assert run_bounded(slow_but_moving, 1.5, lambda: ticks["n"]) == "done"


def test_run_bounded_gives_up_without_progress() -> None:
    start = time.monotonic()
    with pytest.raises(StepTimeout, match="no progress in 1 s"):
        run_bounded(lambda: time.sleep(30), 1.0, lambda: 0)
    assert time.monotonic() - start < 3


def test_run_bounded_passes_errors_through() -> None:
    def broken() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        run_bounded(broken, 5.0)


def test_network_timeout_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRGAP_EVAL_NETWORK_TIMEOUT", raising=False)
    assert network_timeout() == 60.0
    monkeypatch.setenv("AIRGAP_EVAL_NETWORK_TIMEOUT", "15")
    assert network_timeout() == 15.0
    assert network_timeout(5) == 5.0  # the flag wins
    monkeypatch.setenv("AIRGAP_EVAL_NETWORK_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="AIRGAP_EVAL_NETWORK_TIMEOUT"):
        network_timeout()
