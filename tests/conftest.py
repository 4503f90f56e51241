"""Shared fixtures: a real S3 server (SeaweedFS) for the session, a fresh bucket per test,
the real benchmark rows in ../shared/benchmarks when present, and for the e2e and pod tests
the tiny assets (built once) and one vLLM CPU server serving the tiny model (started once;
never two at a time on a small machine); for the exports and git test data an OCI registry
(token auth), an MLflow tracking server and a git smart-HTTP server, each started once."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import ConfigError
from testbed.gitserver import GitHttpServer
from testbed.localservers import MlflowServer, OciRegistry, SeaweedS3
from testbed.modelserver import VLLMServer, vllm_python
from testbed.tiny import TinyAssets, build_all, read_only

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCHMARKS = REPO.parent / "shared" / "benchmarks"
_bucket_ids = itertools.count()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def bucket(s3_server: SeaweedS3) -> str:
    name = f"test-bucket-{next(_bucket_ids)}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture
def s3_env(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The server's credentials and endpoint in the env, as a pod would get them."""
    env = s3_server.env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture(scope="session")
def shared_benchmarks() -> Path:
    if not (SHARED_BENCHMARKS / "raw" / "SOURCES.json").is_file():
        pytest.skip(f"real benchmark rows not found at {SHARED_BENCHMARKS}")
    return SHARED_BENCHMARKS


@pytest.fixture(scope="session")
def vllm_ready() -> None:
    try:
        vllm_python()
    except ConfigError as e:
        pytest.skip(e.one_line())


@pytest.fixture(scope="session")
def tiny_assets(vllm_ready: None, tmp_path_factory: pytest.TempPathFactory) -> TinyAssets:
    assets = build_all(tmp_path_factory.mktemp("tiny"))
    read_only(assets.test_data)
    return assets


@pytest.fixture(scope="session")
def vllm_server(
    tiny_assets: TinyAssets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VLLMServer]:
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    with VLLMServer(tiny_assets.model, log_path=log) as server:
        yield server


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    with OciRegistry(tmp_path_factory.mktemp("registry")) as registry:
        yield registry


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHttpServer]:
    with GitHttpServer(tmp_path_factory.mktemp("git")) as server:
        yield server
