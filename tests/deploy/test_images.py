"""The three images, built by deploy/podman/setup.sh and run with podman: a non-root default
user; `--help` under an arbitrary UID in group 0 with a read-only root filesystem and only the
documented writable mounts; the init and sidecar images carry none of lm_eval, datasets,
transformers or torch (the adapter carries the first three, never torch)."""

from __future__ import annotations

import json

import pytest

from tests.deploy.dockerfile import TARGETS
from tests.deploy.podman import build_images, inspect, podman

pytestmark = [pytest.mark.podman, pytest.mark.timeout(3600)]

ARBITRARY_UID = "1000730000:0"  # what OpenShift's restricted SCC hands out
HEAVY = ("lm_eval", "datasets", "transformers", "torch")
CARRIES = {"initcontainer": [], "sidecar": [], "adapter": ["lm_eval", "datasets", "transformers"]}
# docs/deploy.md: what each image writes. Everything else is the read-only image.
WRITABLE = {
    "initcontainer": ["/test_data", "/tmp"],
    "sidecar": ["/results", "/tmp"],
    "adapter": ["/results", "/cache", "/tmp"],
}


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    return build_images()


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_default_user_is_non_root_in_group_0(images: dict[str, str], target: str) -> None:
    config = inspect(images[target])["Config"]
    assert config["User"] == "1001:0"
    assert set(config["Volumes"]) == {"/test_data", "/results"}
    out = podman("run", "--rm", "--entrypoint", "id", images[target]).stdout
    assert out.startswith("uid=1001(airgap) gid=0(root)"), out


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_help_under_an_arbitrary_uid_with_a_read_only_root(
    images: dict[str, str], target: str
) -> None:
    mounts = [f"--tmpfs={path}:rw,mode=1777" for path in WRITABLE[target]]
    proc = podman(
        "run", "--rm", "--user", ARBITRARY_UID, "--read-only", "--read-only-tmpfs=false",
        *mounts, images[target], "--help",
    )  # fmt: skip
    assert f"usage: airgap-eval {TARGETS[target]}" in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_writable_dirs_are_writable_by_an_arbitrary_uid(
    images: dict[str, str], target: str
) -> None:
    """Without a mount over them (`docker run` with no -v): group 0 owns them, g=u."""
    script = "; ".join(
        f"touch {d}/probe && echo ok {d}" for d in ("/test_data", "/results", "/cache")
    )
    proc = podman(
        "run", "--rm", "--user", ARBITRARY_UID, "--entrypoint", "sh", images[target], "-c", script
    )  # fmt: skip
    assert proc.stdout.split("\n")[:3] == ["ok /test_data", "ok /results", "ok /cache"]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_image_carries_only_its_stack(images: dict[str, str], target: str) -> None:
    probe = (
        "import importlib.util, json; "
        f"print(json.dumps([m for m in {HEAVY!r} if importlib.util.find_spec(m)]))"
    )
    out = podman("run", "--rm", "--entrypoint", "python", images[target], "-c", probe).stdout
    assert json.loads(out) == CARRIES[target]
