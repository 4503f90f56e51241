"""Bounded network steps for the tools that go online (stage on a connected machine).

huggingface_hub retries each call up to 5 times with a 10 s timeout and datasets makes many
calls per dataset: against a Hub that cannot be reached, one `load_dataset` took minutes.
Two bounds here, both plain stdlib (no HF import, so `common` stays light):

- `probe`: one request to the Hub endpoint before any download; refused, DNS or TLS errors
  and silence answer in at most `timeout` seconds, and the caller fails every Hub item at once;
- `run_bounded`: one item's network work in a worker thread, given up after `seconds` without
  progress (a thread cannot be killed: it is left to die on its own timeouts, and whatever it
  fetched is never used).
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from common.errors import ConfigError

T = TypeVar("T")
TIMEOUT_ENV = "AIRGAP_EVAL_NETWORK_TIMEOUT"
STEP_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 10.0
HUB_DEFAULT = "https://huggingface.co"


class StepTimeout(Exception):
    """The item's network work made no progress for the whole bound."""


def network_timeout(flag: float | None = None) -> float:
    """Seconds one item may go without progress: the flag, else the env, else 60."""
    if flag is not None:
        raw, where = str(flag), f"--network-timeout {flag:g}"
    else:
        raw = os.environ.get(TIMEOUT_ENV, "")
        where = f"{TIMEOUT_ENV}={raw}"
        if not raw:
            return STEP_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(
            f"{where} is not a positive number of seconds",
            f"pass --network-timeout SECONDS (or set {TIMEOUT_ENV}), e.g. 60",
        )
    return value


def hub_endpoint() -> str:
    """The Hub the HF libraries will call (HF_ENDPOINT for a mirror)."""
    return (os.environ.get("HF_ENDPOINT") or HUB_DEFAULT).rstrip("/")


def host_of(url: str) -> str:
    return urlsplit(url).netloc or url


def _reason(e: BaseException) -> str:
    inner = getattr(e, "reason", e)
    if isinstance(inner, (TimeoutError, socket.timeout)):
        return "no answer"
    if isinstance(inner, ConnectionRefusedError):
        return "connection refused"
    if isinstance(inner, socket.gaierror):
        return "host name not resolved (DNS)"
    if isinstance(inner, ssl.SSLError):
        return f"TLS error: {inner}"
    return f"{type(inner).__name__}: {inner}"


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when `url` answers at all (any HTTP status), else why it does not. Honours
    HTTPS_PROXY/NO_PROXY as the HF libraries do."""
    request = urllib.request.Request(url, method="HEAD")
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered: reachable, whatever it thinks of a HEAD on /
    except (urllib.error.URLError, OSError) as e:
        why = _reason(e)
        if why == "no answer":
            why = f"no answer in {time.monotonic() - start:.0f} s"
        if proxy := _proxy_for(url):
            why += f", through the proxy {proxy}"
        return why


def _proxy_for(url: str) -> str | None:
    """The proxy (host:port, never its credentials) the env routes `url` through."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return f"{p.hostname}:{p.port}" if p.port else str(p.hostname)


def run_bounded(
    fn: Callable[[], T], seconds: float, progress: Callable[[], object] | None = None
) -> T:
    """fn() in a worker thread; StepTimeout once it has gone `seconds` without finishing and
    without `progress()` changing (e.g. bytes downloaded so far). fn's own errors propagate."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    worker = threading.Thread(target=work, daemon=True, name="bounded-network-step")
    worker.start()
    mark = progress() if progress else None
    last_change = time.monotonic()
    while True:
        worker.join(min(1.0, seconds))
        if not worker.is_alive():
            break
        now = time.monotonic()
        if progress is not None and (seen := progress()) != mark:
            mark, last_change = seen, now
        if now - last_change >= seconds:
            raise StepTimeout(f"no progress in {seconds:.0f} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]
