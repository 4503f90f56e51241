"""EvalHub's real server (`eval-hub-server` from PyPI, one install dir per version made by
`make setup-evalhub`) in local mode: its own config dir, in-memory sqlite, providers whose
local runtime command is ours. Jobs go in and are read back through its REST API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from testbed.localservers import free_port, stop_process, wait_for_port

REPO = Path(__file__).resolve().parents[2]
INSTALL_ROOT = REPO / ".evalhub"  # make setup-evalhub: .evalhub/<version>/bin/eval-hub
VERSIONS = ("0.4.2", "1.0.2")  # what EvalHub's lm_eval adapter pins; the current 1.0.x
TERMINAL = ("completed", "failed", "cancelled")


def binary(version: str) -> Path:
    return INSTALL_ROOT / version / "bin" / "eval-hub"


def require_binary(version: str) -> None:
    """`make test` installs every version these tests use: a missing one is a setup error."""
    if not binary(version).is_file():
        pytest.fail(f"eval-hub-server {version} not installed: run `make setup-evalhub`")


class EvalHubServer:
    def __init__(
        self,
        version: str,
        root: Path,
        providers: list[dict[str, Any]],
        collections: Sequence[Path] = (),
        extra: dict[str, Any] | None = None,  # more of config.yaml (e.g. `mlflow`)
    ) -> None:
        self.version, self.root, self.providers = version, root, providers
        self.collections = list(collections)  # EvalHub's collection YAML files, as they are
        self.extra = extra or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "eval-hub.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        cfg = self.root / "config"
        (cfg / "providers").mkdir(parents=True, exist_ok=True)
        config = {
            "service": {
                "port": self.port,
                "host": "127.0.0.1",
                "ready_file": str(self.root / "ready"),
                "termination_file": str(self.root / "termination-log"),
            },
            "database": {
                "driver": "sqlite",
                "url": f"file::evalhub_{self.port}:?mode=memory&cache=shared",
            },
            # 1.0.x opens its own metrics port (8081 on all interfaces) unless told not to.
            "prometheus": {"enabled": False},
            **self.extra,
        }
        # JSON is YAML: no YAML library needed to write EvalHub's config files.
        (cfg / "config.yaml").write_text(json.dumps(config, indent=1))
        for provider in self.providers:
            (cfg / "providers" / f"{provider['id']}.yaml").write_text(
                json.dumps(provider, indent=1)
            )
        if self.collections:
            (cfg / "collections").mkdir(exist_ok=True)
            for path in self.collections:
                shutil.copy(path, cfg / "collections" / path.name)
        return cfg

    def start(self, ready_s: float = 30.0) -> EvalHubServer:
        exe = binary(self.version)
        if not exe.is_file():
            raise FileNotFoundError(f"{exe} missing: run `make setup-evalhub`")
        cfg = self._write_config()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(exe), "-local", "-configdir", str(cfg)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
            )  # fmt: skip
        wait_for_port(self.port, ready_s, self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> EvalHubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}/api/v1/evaluations/{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: HTTP {e.code}: {e.read()[:2000]!r}") from None

    def submit(self, benchmarks: list[dict[str, Any]], model_url: str, **extra: Any) -> str:
        job = self.request(
            "POST", "jobs",
            {"name": "airgap-eval test", "model": {"url": model_url, "name": "tiny"},
             "benchmarks": benchmarks, **extra},
        )  # fmt: skip
        return str(job["resource"]["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"jobs/{job_id}"))

    def wait(self, job_id: str, timeout_s: float) -> dict[str, Any]:
        """The job view once its state is terminal (all benchmarks reported)."""
        deadline = time.monotonic() + timeout_s
        while True:
            view = self.job(job_id)
            if view["status"]["state"] in TERMINAL:
                return view
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} still {view['status']['state']} after {timeout_s:.0f} s: "
                    f"{json.dumps(view)[:3000]}\n--- server log tail ---\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def jobs_dir(job_id: str) -> Path:
    """Where local mode writes a job's spec and log (fixed in the server's source)."""
    return Path("/tmp/evalhub-jobs") / job_id
