"""A git smart-HTTP server on 127.0.0.1: git's own `http-backend` (the CGI program Gitea,
GitLab and cgit front) behind a small threaded WSGI server that checks basic auth. Smart HTTP
is what a shallow fetch needs; dumb HTTP cannot serve one."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from testbed.inthread import close_server, serve_in_thread

_CGI_VARS = (
    "REQUEST_METHOD", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH", "PATH_INFO",
    "REMOTE_ADDR", "HTTP_CONTENT_ENCODING", "HTTP_GIT_PROTOCOL",
)  # fmt: skip


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git with no user config (a test's commits are the same on every machine)."""
    env = {
        "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "airgap", "GIT_AUTHOR_EMAIL": "airgap@example.invalid",
        "GIT_COMMITTER_NAME": "airgap", "GIT_COMMITTER_EMAIL": "airgap@example.invalid",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }  # fmt: skip
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True)
    return done.stdout.decode().strip()


@dataclass
class GitHttpServer:
    """Serves the bare repositories under `root` at http://127.0.0.1:PORT/<name>.git."""

    root: Path
    username: str = "airgap-git"
    password: str = "airgap-git-secret"
    port: int = 0
    requests: list[str] = field(default_factory=list)  # "METHOD path?query", for assertions
    _server: WSGIServer | None = None

    def url(self, repo: str) -> str:
        return f"http://127.0.0.1:{self.port}/{repo}.git"

    def create_repo(self, name: str, files: dict[str, bytes], branch: str = "main") -> str:
        """A bare repo `name.git` with one commit of `files` on `branch`; returns its SHA."""
        work = self.root / f"{name}.work"
        git("init", "-q", "-b", branch, str(work))
        for rel, body in files.items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_bytes(body)
        return self.commit(name, work, branch, first=True)

    def commit(self, name: str, work: Path, branch: str = "main", first: bool = False) -> str:
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "test data", cwd=work)
        bare = self.root / f"{name}.git"
        if first:
            git("init", "-q", "--bare", str(bare))
        git("push", "-q", str(bare), f"HEAD:refs/heads/{branch}", cwd=work)
        return git("rev-parse", "HEAD", cwd=work)

    def _authorized(self, environ: dict[str, Any]) -> bool:
        header = environ.get("HTTP_AUTHORIZATION", "")
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return header == f"Basic {expected}"

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING", "")
        self.requests.append(f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}?{query}")
        if not self._authorized(environ):
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Length", "0")],
            )
            return [b""]
        env = {k: str(environ[k]) for k in _CGI_VARS if k in environ}
        env |= {
            "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": self.username, "PATH": "/usr/local/bin:/usr/bin:/bin",
        }  # fmt: skip
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        out = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = "200 OK", []
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = value.strip()
            elif key:
                headers.append((key, value.strip()))
        start_response(status, headers)
        return [payload]

    def start(self) -> GitHttpServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self._server = make_server(
            "127.0.0.1", self.port, self._app,
            server_class=_ThreadingServer, handler_class=_QuietHandler,
        )  # fmt: skip
        self.port = serve_in_thread(self._server)
        return self

    def stop(self) -> None:
        close_server(self._server)

    def __enter__(self) -> GitHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
