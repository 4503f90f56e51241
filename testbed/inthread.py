"""The test bed's in-process HTTP servers (the git server, the registry's token service) run
one way: served on a daemon thread, shut down and closed on stop."""

from __future__ import annotations

import threading
from socketserver import BaseServer


def serve_in_thread(server: BaseServer) -> int:
    """Serve on a daemon thread; returns the port bound (port 0 picks a free one)."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])  # type: ignore[index]


def close_server(server: BaseServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()
