"""A stub S3 endpoint for faults a real server will not produce: a listing with keys that
escape the destination (SeaweedFS refuses to store them) and GETs that stall forever."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from xml.sax.saxutils import escape

from tests.httpstub import serving


def _listing(bucket: str, keys: list[str]) -> bytes:
    items = "".join(
        f'<Contents><Key>{escape(k)}</Key><Size>1</Size><ETag>"e"</ETag>'
        "<LastModified>2025-01-01T00:00:00.000Z</LastModified>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
        for k in keys
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Name>{bucket}</Name><Prefix></Prefix><KeyCount>{len(keys)}</KeyCount>"
        f"<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{items}</ListBucketResult>"
    ).encode()


@contextmanager
def stub_s3(keys: list[str], stall_get: bool = False) -> Iterator[str]:
    """Serve a ListObjectsV2 of `keys` (1 byte each); GETs answer `x` or stall."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            bucket = self.path.lstrip("/").split("/")[0].split("?")[0]
            if "list-type=2" in self.path:
                body = _listing(bucket, keys)
            elif stall_get:
                stop.wait(120)
                return
            else:
                body = b"x"
            self._answer(body)

        def do_HEAD(self) -> None:
            if stall_get:
                stop.wait(120)
                return
            self._answer(b"x", head=True)

        def _answer(self, body: bytes, head: bool = False) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/xml")
            self.send_header("ETag", '"e"')
            self.end_headers()
            if not head:
                self.wfile.write(body)

    with serving(Handler) as port:
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop.set()  # before the server's shutdown: stalled handlers wait on it
