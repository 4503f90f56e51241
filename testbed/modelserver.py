"""A real OpenAI-compatible model endpoint on this machine: vLLM's CPU build serving a model dir.

vLLM lives in its own venv (it pins its own torch and transformers): `.venv-vllm` beside the
package's checkout, or `$AIRGAP_EVAL_VLLM_PYTHON`. Used by the e2e tests, the start-up bench
and the demo. One server at a time is plenty on a small machine.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common.errors import ConfigError, DeadlineError, ModelEndpointError
from testbed.localservers import LocalEndpoint, free_port, stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON_ENV = "AIRGAP_EVAL_VLLM_PYTHON"
_PR_SET_PDEATHSIG = 1


def vllm_python() -> Path:
    """The interpreter that has vLLM (and torch): env override, else the checkout's venv."""
    python = Path(os.environ.get(VLLM_PYTHON_ENV) or REPO_ROOT / ".venv-vllm" / "bin" / "python")
    if not python.is_file():
        raise ConfigError(
            f"no vLLM python at {python}",
            f"run `make setup-vllm`, or set {VLLM_PYTHON_ENV} to a python that has vllm installed",
        )
    return python


def vllm_python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Env for a subprocess of the vLLM python: offline, and our checkout importable."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {
        **os.environ,
        "PYTHONPATH": pythonpath,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        **(extra or {}),
    }


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM when the process that started it dies, even by SIGKILL,
    # so a killed test run never leaves vLLM eating the machine.
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _default_threads() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass
class VLLMServer(LocalEndpoint):
    """`with VLLMServer(model_dir) as server:` -> `server.base_url` serves `server.name`.

    Start it from the main thread: the parent-death signal is tied to the starting thread.
    """

    model_dir: Path
    name: str = "tiny"
    max_model_len: int = 512
    threads: int = field(default_factory=_default_threads)
    log_path: Path | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir), "--served-model-name", self.name,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--max-model-len", str(self.max_model_len),
            "--enforce-eager", "--disable-uvicorn-access-log",
            # The worker runs inside the engine process: one process fewer to start.
            "--distributed-executor-backend", "uni",
        ]  # fmt: skip

    def start(self, ready_s: float = 600.0) -> VLLMServer:
        if not (self.model_dir / "config.json").is_file():
            raise ConfigError(
                f"{self.model_dir} is not a model dir (no config.json)",
                "pass a dir written by `save_pretrained` (python -m testbed.tiny model ...)",
            )
        self.port = self.port or free_port()
        if self.log_path is None:
            self.log_path = self.model_dir.parent / f"vllm-{self.port}.log"
        threads = str(self.threads)
        env = vllm_python_env(
            {
                "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the default would take a slice of RAM
                # No core pinning on a shared box; a fixed, small thread count instead.
                "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                "OMP_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
                "TORCH_NUM_THREADS": threads,
                "TOKENIZERS_PARALLELISM": "false",
            }
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: stop() takes the engine too
                preexec_fn=_die_with_parent,
            )
        try:
            self._wait_ready(ready_s)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _wait_ready(self, ready_s: float) -> None:
        assert self.proc is not None
        end = time.monotonic() + ready_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise ModelEndpointError(
                    f"vLLM exited with code {self.proc.returncode} before it served "
                    f"{self.model_dir}; last log lines ({self.log_path}):\n{self.log_tail()}",
                    "read the log above; a wrong model dir or too little memory are the usual causes",
                )
            if self.served_models() == [self.name]:
                return
            time.sleep(0.5)
        raise DeadlineError(
            f"vLLM did not answer {self.root_url}/v1/models within {ready_s:.0f}s; "
            f"last log lines ({self.log_path}):\n{self.log_tail()}",
            "the machine may be busy: retry, or raise the ready deadline",
        )

    def served_models(self) -> list[str] | None:
        """Model ids the server lists, None while it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.root_url}/v1/models", timeout=2) as r:
                return [m["id"] for m in json.load(r)["data"]]
        except (OSError, ValueError, KeyError):
            return None

    def metric(self, name: str) -> float:
        """Sum of a Prometheus counter over its labels (e.g. `vllm:request_success_total`)."""
        with urllib.request.urlopen(f"{self.root_url}/metrics", timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self, grace_s: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        stop_process(self.proc, grace_s, group=True)
        # vLLM's engine core can outlive the API server by a moment: take the whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        # Runs on KeyboardInterrupt too (Ctrl-C leaves the `with` block through here).
        self.stop()


class RecordingProxy(LocalEndpoint):
    """A pass-through HTTP proxy in front of a model server that records each request (path,
    arrival time on the monotonic clock, body) and can delay requests: it measures a client's
    time to its first request, counts the requests of a resumed run, and slows a run down
    enough to kill it half-way. Bodies pass through unchanged.
    """

    def __init__(self, upstream: str, delay_s: float = 0.0) -> None:
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self.upstream = (host, int(port or 80))
        self.delay_s = delay_s
        self.arrivals: list[tuple[str, float, bytes]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = int(self._server.server_address[1])
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="proxy", daemon=True
        )

    @staticmethod
    def scoring_request(path: str, body: bytes) -> bool:
        """A completions request whose prompt is token ids: what lm_eval sends for each
        request it evaluates (a preflight probe sends text)."""
        if not path.endswith("/completions"):
            return False
        try:
            return isinstance(json.loads(body).get("prompt"), list)
        except (ValueError, AttributeError):
            return False

    def times(self, since: float = 0.0) -> list[float]:
        """Arrival times of scoring requests since `since` (time.monotonic())."""
        with self._lock:
            return [t for p, t, b in self.arrivals if t >= since and self.scoring_request(p, b)]

    def count(self, since: float = 0.0) -> int:
        return len(self.times(since))

    def first(self, since: float = 0.0) -> float | None:
        return min(self.times(since), default=None)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the clients use it

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    proxy.arrivals.append((self.path, arrived, body))
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=600)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client went away (killed on purpose)
                finally:
                    conn.close()

            do_GET = do_POST = _forward

        return Handler

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def main(argv: list[str] | None = None) -> int:
    """`python -m testbed.modelserver MODEL_DIR`: serve until Ctrl-C (handy by hand)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m testbed.modelserver", description=main.__doc__)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--name", default="tiny")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    # Ctrl-C and SIGTERM both unwind the `with` (which stops vLLM), even where a shell
    # started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with VLLMServer(args.model_dir.resolve(), name=args.name, port=args.port) as server:
        print(f"serving {server.name!r} at {server.base_url} (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.proc.wait()  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    sys.exit(main())
