"""Offline egress guard: a connection to any host but the model endpoint (and loopback, where
EvalHub's sidecar proxy listens) fails at once, naming the host, instead of hanging on DNS
or a connect timeout.

It is a `sys.addaudithook` on the `socket.getaddrinfo` and `socket.connect` events: that
covers every Python client (requests, aiohttp, urllib3, httpx, huggingface_hub) without
patching any of them. Audit hooks cannot be removed, so `disable()` only switches it off.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

from common.errors import EgressBlocked

log = logging.getLogger(__name__)


_state: dict[str, Any] = {"enabled": False, "names": set(), "ips": set(), "hooked": False}
blocked: list[str] = []  # every refused attempt, also when a library swallowed the error


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _allowed(host: str) -> bool:
    return host in _state["names"] or host in _state["ips"] or _is_loopback(host)


def _refuse(host: str, port: Any) -> None:
    target = f"{host}:{port}" if port not in (None, 0, "") else host
    blocked.append(target)
    allowed = sorted(_state["names"]) or ["(loopback only)"]
    msg = (
        f"blocked network connection to {target}: offline mode allows only the model "
        f"endpoint {', '.join(allowed)} and loopback"
    )
    log.error(msg)
    raise EgressBlocked(
        msg,
        "stage what the job needs under the test data (airgap-eval stage), or run online "
        "(--offline off) where the cluster allows it",
    )


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _state["enabled"]:
        return
    if event == "socket.getaddrinfo":
        host, port = args[0], args[1]
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        if host and not _allowed(str(host)):
            _refuse(str(host), port)
    elif event == "socket.connect":
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6) and isinstance(
            address, tuple
        ):
            host = str(address[0])
            if not _allowed(host):
                _refuse(host, address[1])


def _resolve(host: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()  # the endpoint check reports an unresolvable model host


def enable(urls: list[str]) -> None:
    """Allow the hosts of `urls` (and their addresses, resolved now) plus loopback."""
    names = {h for u in urls if u and (h := urlsplit(u).hostname)}
    _state["enabled"] = False
    ips = set().union(*(_resolve(h) for h in names)) if names else set()
    _state.update(names=names, ips=ips, enabled=True)
    if not _state["hooked"]:
        sys.addaudithook(_hook)
        _state["hooked"] = True
    log.info("egress guard on: only %s and loopback", ", ".join(sorted(names)) or "nothing")


def disable() -> None:
    _state["enabled"] = False
