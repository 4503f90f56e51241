"""The images through the Docker API (podman's, see conftest.py): `docker run` exactly as
docs/deploy.md shows it, and docker-py + testcontainers with an S3 container, sync -> run ->
upload under an arbitrary UID in group 0 with a read-only root filesystem."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.s3 import client
from common.s3settings import S3Connection
from testbed.localservers import wait_until_serving
from testbed.modelserver import VLLMServer
from testbed.tiny import TinyAssets
from tests.deploy.dockerfile import REPO
from tests.deploy.podman import ref

pytestmark = [pytest.mark.podman, pytest.mark.timeout(3600)]

ARBITRARY_UID = "1000730000:0"  # what OpenShift's restricted SCC hands out
S3_PORT = 8333
DOCS = REPO / "docs" / "deploy.md"
JOB = {
    "id": "job-7",
    "provider_id": "lm_evaluation_harness",
    "benchmark_id": "arc_easy",
    "benchmark_index": 0,
    "model": {"url": "http://127.0.0.1:9/v1", "name": "tiny"},
    "parameters": {},
    "callback_url": "",
}


@pytest.fixture(scope="module")
def docker_client(docker_host: str) -> Any:
    import docker

    client = docker.DockerClient(base_url=docker_host)
    client.ping()
    return client


@pytest.fixture
def s3_container(
    docker_host: str, s3_image: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, S3Connection]]:
    """testcontainers with the locally built S3 image. Ryuk, its reaper, cannot be pulled
    here (the `with` block removes the container); the mapped port is reached on the host
    (podman's container listing has no HostConfig for testcontainers' in-a-container guess)."""
    from testcontainers.core.config import ConnectionMode, testcontainers_config
    from testcontainers.core.container import DockerContainer

    monkeypatch.setenv("DOCKER_HOST", docker_host)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    monkeypatch.setattr(
        testcontainers_config, "connection_mode_override", ConnectionMode.docker_host
    )
    with DockerContainer(s3_image).with_exposed_ports(S3_PORT) as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(S3_PORT)
        conn = S3Connection(
            endpoint=f"http://{host}:{port}",
            access_key="airgap-test-key",
            secret_key="airgap-test-secret",
            read_timeout=5.0,
        )
        wait_until_serving(conn, 60)
        yield container, conn


def _run(docker_client: Any, image: str, s3: Any, **kwargs: Any) -> tuple[int, str]:
    """One container as Kubernetes runs ours: arbitrary UID, read-only root, tmpfs scratch,
    sharing the S3 container's network namespace so S3 is http://127.0.0.1:8333."""
    container = docker_client.containers.run(
        image,
        detach=True,
        user=ARBITRARY_UID,
        read_only=True,
        tmpfs={"/tmp": "", "/cache": ""},
        network_mode=f"container:{s3.get_wrapped_container().id}",
        **kwargs,
    )
    try:
        code = container.wait(timeout=600)["StatusCode"]
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True, v=True)  # and its anonymous volumes


def test_sync_run_upload_via_docker_py_against_an_s3_container(
    docker_client: Any, s3_container: tuple[Any, S3Connection], tmp_path: Path
) -> None:
    from common.manifest import build_manifest

    container, conn = s3_container
    staged = tmp_path / "staged"
    (staged / "tokenizer").mkdir(parents=True)
    (staged / "tokenizer" / "tokenizer_config.json").write_text("{}")
    build_manifest(staged).dump(staged / "manifest.json")
    s3 = client(conn)
    s3.create_bucket(Bucket="evals")
    for path in staged.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "evals", f"test-data/{path.relative_to(staged)}")
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(JOB))
    spec.chmod(0o644)
    creds = {
        "AWS_ACCESS_KEY_ID": conn.access_key,
        "AWS_SECRET_ACCESS_KEY": conn.secret_key,
        "AWS_S3_ENDPOINT": f"http://127.0.0.1:{S3_PORT}",
    }
    test_data = docker_client.volumes.create()
    results = docker_client.volumes.create()
    try:
        code, logs = _run(
            docker_client,
            ref("initcontainer"),
            container,
            environment=creds | {"TEST_DATA_S3_BUCKET": "evals", "TEST_DATA_S3_KEY": "test-data"},
            volumes={test_data.name: {"bind": "/test_data", "mode": "rw"}},
        )
        assert code == 0, logs
        code, logs = _run(
            docker_client,
            ref("adapter"),
            container,
            volumes={
                test_data.name: {"bind": "/test_data", "mode": "ro"},
                results.name: {"bind": "/results", "mode": "rw"},
                str(spec): {"bind": "/meta/job.json", "mode": "ro"},
            },
        )
        assert code == 9, logs  # MISSING_DATA: the tree has no arc_easy bundle
        code, logs = _run(
            docker_client,
            ref("sidecar"),
            container,
            command=["--once"],
            environment=creds | {"RESULTS_S3_URI": "s3://evals/results"},
            volumes={
                results.name: {"bind": "/results", "mode": "rw"},
                str(spec): {"bind": "/meta/job.json", "mode": "ro"},
            },
        )
        assert code == 0, logs
        body = s3.get_object(Bucket="evals", Key="results/job-7/arc_easy/status.json")["Body"]
        status = json.loads(body.read())
        assert status["state"] == "failed" and status["error"]["code"] == "MISSING_DATA"
    finally:
        test_data.remove(force=True)
        results.remove(force=True)


def _doc_blocks(heading: str) -> list[str]:
    """The ```bash blocks of one `## ` section of docs/deploy.md, in order."""
    text = DOCS.read_text()
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end > 0 else None]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def _docker(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    docker = shutil.which("docker")
    assert docker, "the docker client is not installed (CI: apt-get install -y docker.io)"
    return subprocess.run(
        ["bash", "-euxo", "pipefail", "-c", script],
        cwd=cwd,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_docker_run_as_docs_deploy_md_shows_it(
    docker_host: str,
    s3_container: tuple[Any, S3Connection],
    tiny_assets: TinyAssets,
    vllm_server: VLLMServer,
    tmp_path: Path,
) -> None:
    """Both recipes of the `docker run` section, run as written; only the endpoints differ
    (the model: vLLM on the host; minio.local: the S3 container, as the containers see it)."""
    from common.manifest import Manifest
    from staging.stage import upload_tree

    local, with_s3 = _doc_blocks("Local: `docker run` with a mounted `/test_data`")
    _, conn = s3_container
    spec = dict(JOB, model={"url": vllm_server.base_url, "name": "tiny"})
    spec["parameters"] = {"tokenizer": "/test_data/tokenizer"}
    (tmp_path / "job.json").write_text(json.dumps(spec))
    shutil.copytree(tiny_assets.test_data, tmp_path / "staged")
    results = tmp_path / "results"
    results.mkdir()
    os.chown(results, -1, 0)  # the doc's `chgrp 0 results; chmod g+w results`
    results.chmod(0o775)
    env = {"DOCKER_HOST": docker_host}

    proc = _docker(local, tmp_path, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = json.loads((results / "status.json").read_text())
    assert status["state"] == "completed", status
    assert list(results.rglob("results_*.json")), sorted(p.name for p in results.rglob("*"))

    s3 = client(conn)
    s3.create_bucket(Bucket="evals")
    upload_tree(
        tiny_assets.test_data,
        Manifest.load(tiny_assets.test_data / "manifest.json"),
        "s3://evals/test-data/v1",
        conn,
    )
    port = str(conn.endpoint).rsplit(":", 1)[1]
    script = with_s3.replace("http://minio.local:9000", f"http://host.containers.internal:{port}")
    env |= {
        "AWS_ACCESS_KEY_ID": str(conn.access_key),
        "AWS_SECRET_ACCESS_KEY": str(conn.secret_key),
    }
    volumes = ("td", "res")
    subprocess.run(["docker", "volume", "rm", "-f", *volumes], env=os.environ | env, check=False)
    try:
        proc = _docker(script, tmp_path, env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", *volumes], env=os.environ | env)
    body = s3.get_object(Bucket="evals", Key="results/job-7/arc_easy/status.json")["Body"]
    status = json.loads(body.read())
    assert status["state"] == "completed", status
    listed = s3.list_objects_v2(Bucket="evals", Prefix="results/job-7/arc_easy/")
    assert any("/results_" in o["Key"] for o in listed.get("Contents", [])), listed
