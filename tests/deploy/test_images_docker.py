"""The three images, built and run against MinIO (testcontainers): sync -> run -> upload as the
pod runs them, under an arbitrary UID in group 0 with a read-only root filesystem. Needs a
Docker daemon: skipped where none is reachable (as on CI). The same scenario without Docker,
against SeaweedFS, is tests/deploy/test_slurm.py::test_steps_run_locally_and_a_failed_run_is_still_uploaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.dockerfile import REPO, TARGETS

pytestmark = pytest.mark.docker

ARBITRARY_UID = "1000730000:0"  # what OpenShift's restricted SCC hands out
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
def docker_client() -> Any:
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as e:  # no socket, permission denied, daemon down: all mean "no Docker"
        pytest.skip(
            f"no Docker daemon reachable ({type(e).__name__}: {e}); these tests build images"
        )
    return client


@pytest.fixture(scope="module")
def images(docker_client: Any) -> dict[str, Any]:
    built = {}
    for target in TARGETS:
        image, _ = docker_client.images.build(
            path=str(REPO), target=target, tag=f"airgap-eval-{target}:test", rm=True
        )
        built[target] = image
    return built


@pytest.fixture
def minio() -> Iterator[Any]:
    from testcontainers.community.minio import MinioContainer

    with MinioContainer() as container:
        yield container


def _run(docker_client: Any, image: Any, minio: Any, **kwargs: Any) -> tuple[int, str]:
    """One container as Kubernetes runs ours: arbitrary UID, read-only root, tmpfs scratch,
    sharing MinIO's network namespace so S3 is http://127.0.0.1:9000."""
    container = docker_client.containers.run(
        image.id,
        detach=True,
        user=ARBITRARY_UID,
        read_only=True,
        tmpfs={"/tmp": "", "/cache": ""},
        network_mode=f"container:{minio.get_wrapped_container().id}",
        **kwargs,
    )
    try:
        code = container.wait(timeout=600)["StatusCode"]
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def test_images_run_as_non_root_and_carry_only_their_stack(
    docker_client: Any, images: dict[str, Any]
) -> None:
    probe = "import importlib.util as u; print([m for m in ('lm_eval', 'torch') if u.find_spec(m)])"
    expected = {"initcontainer": "[]", "sidecar": "[]", "adapter": "['lm_eval']"}
    for target, image in images.items():
        assert image.attrs["Config"]["User"] == "1001:0"
        assert set(image.attrs["Config"]["Volumes"]) == {"/test_data", "/results"}
        out = docker_client.containers.run(
            image.id, entrypoint=["python", "-c", probe], remove=True
        ).decode()
        assert out.strip() == expected[target], target
        size_mb = image.attrs["Size"] / 1e6
        print(f"{target}: {size_mb:.0f} MB")
        if target != "adapter":
            assert size_mb < 400, f"{target} image is {size_mb:.0f} MB"


def test_sync_run_upload_against_minio(
    docker_client: Any, images: dict[str, Any], minio: Any, tmp_path: Path
) -> None:
    from common.manifest import build_manifest

    staged = tmp_path / "staged"
    (staged / "tokenizer").mkdir(parents=True)
    (staged / "tokenizer" / "tokenizer_config.json").write_text("{}")
    build_manifest(staged).dump(staged / "manifest.json")
    s3 = minio.get_client()
    s3.make_bucket("evals")
    for path in staged.rglob("*"):
        if path.is_file():
            s3.fput_object("evals", f"test-data/{path.relative_to(staged)}", str(path))
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(JOB))
    spec.chmod(0o644)
    creds = {
        "AWS_ACCESS_KEY_ID": minio.access_key,
        "AWS_SECRET_ACCESS_KEY": minio.secret_key,
        "AWS_S3_ENDPOINT": "http://127.0.0.1:9000",
    }
    test_data = docker_client.volumes.create()
    results = docker_client.volumes.create()
    try:
        code, logs = _run(
            docker_client,
            images["initcontainer"],
            minio,
            environment=creds | {"TEST_DATA_S3_BUCKET": "evals", "TEST_DATA_S3_KEY": "test-data"},
            volumes={test_data.name: {"bind": "/test_data", "mode": "rw"}},
        )
        assert code == 0, logs
        code, logs = _run(
            docker_client,
            images["adapter"],
            minio,
            volumes={
                test_data.name: {"bind": "/test_data", "mode": "ro"},
                results.name: {"bind": "/results", "mode": "rw"},
                str(spec): {"bind": "/meta/job.json", "mode": "ro"},
            },
        )
        assert code == 9, logs  # MISSING_DATA: the tree has no arc_easy bundle
        code, logs = _run(
            docker_client,
            images["sidecar"],
            minio,
            command=["--once"],
            environment=creds | {"RESULTS_S3_URI": "s3://evals/results"},
            volumes={
                results.name: {"bind": "/results", "mode": "rw"},
                str(spec): {"bind": "/meta/job.json", "mode": "ro"},
            },
        )
        assert code == 0, logs
        status = json.loads(s3.get_object("evals", "results/job-7/arc_easy/status.json").read())
        assert status["state"] == "failed" and status["error"]["code"] == "MISSING_DATA"
    finally:
        test_data.remove(force=True)
        results.remove(force=True)
