"""podman for the image tests: the configuration and the images deploy/podman/setup.sh makes.

No Docker daemon and no registry here (or in CI): the three images are built with podman on a
local Debian base, and the tests run them with podman (its CLI, `podman kube play`, and its
Docker API for docker, docker-py and testcontainers). A missing podman fails these tests with
the command that fixes it; it never skips them.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tomllib
from typing import Any

import pytest

from tests.deploy.dockerfile import REPO

SETUP = REPO / "deploy" / "podman" / "setup.sh"
INSTALL = "apt-get install -y podman buildah runc debootstrap uidmap slirp4netns fuse-overlayfs"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# Dockerfile target -> image repository (the names deploy/kubernetes/job.yaml uses)
IMAGES = {
    "initcontainer": "airgap-eval-init",
    "sidecar": "airgap-eval-sidecar",
    "adapter": "airgap-eval-adapter",
}
# The local base setup.sh imports: other test images (the S3 server) build on it too.
BASE_PREFIX = "localhost/airgap-eval-base:"


def ref(target: str) -> str:
    return f"localhost/{IMAGES[target]}:{VERSION}"


@functools.cache
def env() -> dict[str, str]:
    """CONTAINERS_CONF and CONTAINERS_STORAGE_CONF as setup.sh writes them."""
    if shutil.which("podman") is None:
        pytest.fail(f"podman is not installed: {INSTALL}, then {SETUP.relative_to(REPO)}")
    out = subprocess.run([str(SETUP), "--env"], capture_output=True, text=True, check=True)
    pairs = (line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    return {k: v for k, v in pairs}


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args],
        env=os.environ | env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def inspect(name: str, kind: str = "image") -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(podman(kind, "inspect", name).stdout)
    return data[0]


@functools.cache
def build_images() -> dict[str, str]:
    """Run setup.sh (seconds when nothing changed: podman's layer cache) -> target: image."""
    env()
    proc = subprocess.run([str(SETUP)], capture_output=True, text=True, timeout=3000)
    if proc.returncode != 0:
        pytest.fail(f"{SETUP.relative_to(REPO)} failed:\n{proc.stdout}\n{proc.stderr}")
    print(proc.stdout)
    return {target: ref(target) for target in IMAGES}


def base_image() -> str:
    build_images()
    names = podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    found = sorted(n for n in names if n.startswith(BASE_PREFIX))
    assert found, f"no {BASE_PREFIX}* image: {SETUP.relative_to(REPO)} makes it"
    return found[-1]
