"""The token service of a token-auth OCI registry (distribution's `auth.token`), for tests:
GET /token with basic credentials answers a bearer JWT (RS256) granting the scopes asked;
wrong credentials get 401. The key and certificate are made with the `openssl` CLI, so the
test bed needs no crypto package; the JWT names its key by libtrust's key ID, which is how
the registry finds it in `rootcertbundle`."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from testbed.inthread import close_server, serve_in_thread

SERVICE = "airgap-test-registry"
ISSUER = "airgap-test-token-issuer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_der: bytes) -> str:
    """docker/libtrust's KeyID: base32 of the first 240 bits of sha256(DER PKIX key),
    in groups of four joined by ':'."""
    b32 = base64.b32encode(hashlib.sha256(public_der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def _scopes(query: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Everything the user may do on each repository named, whatever action was asked, as
    OpenShift's registry does: oras-py keeps its first token (asked for `pull` by a HEAD)
    and only asks again after a 403, while distribution answers a short scope with 401."""
    access = []
    for scope in query.get("scope", []):
        kind, _, rest = scope.partition(":")
        name = rest.rpartition(":")[0]
        access.append({"type": kind, "name": name, "actions": ["pull", "push"]})
    return access


@dataclass
class TokenService:
    workdir: Path
    username: str
    password: str
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def key(self) -> Path:
        return self.workdir / "key.pem"

    @property
    def cert(self) -> Path:
        return self.workdir / "cert.pem"

    def registry_config(self) -> dict[str, str]:
        return {
            "realm": f"http://127.0.0.1:{self.port}/token",
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(self.cert),
        }

    def _make_key(self) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=airgap-test-token", "-keyout", str(self.key), "-out", str(self.cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "pkey", "-in", str(self.key), "-pubout", "-outform", "DER"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        return libtrust_key_id(der)

    def _sign(self, payload: bytes) -> bytes:
        return subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=payload, check=True, capture_output=True,
        ).stdout  # fmt: skip

    def token(self, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        claims = {
            "iss": ISSUER, "sub": self.username, "aud": SERVICE, "iat": now, "nbf": now - 10,
            "exp": now + 600, "jti": secrets.token_hex(8), "access": access,
        }  # fmt: skip
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        return f"{signing_input}.{_b64url(self._sign(signing_input.encode()))}"

    def start(self) -> TokenService:
        self.kid = self._make_key()
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/token" or self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                token = service.token(_scopes(urllib.parse.parse_qs(url.query)))
                body = json.dumps({"token": token, "access_token": token, "expires_in": 600})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = serve_in_thread(self._server)
        return self

    def stop(self) -> None:
        close_server(self._server)
