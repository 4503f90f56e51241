"""The three images, built by deploy/podman/setup.sh and run with podman: a non-root default
user; `--help` under an arbitrary UID in group 0 with a read-only root filesystem and only the
documented writable mounts; the init and sidecar images carry none of lm_eval, datasets,
transformers or torch (the adapter carries the first three, never torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.gitserver import GitHttpServer
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


def test_init_image_fetches_git_test_data_under_an_arbitrary_uid(
    images: dict[str, str], git_server: GitHttpServer, tmp_path: Path
) -> None:
    """git in the init image, as EvalHub's init container is used: its env, its secret files,
    its metadata volume; read-only root, an OpenShift UID, the git server on the host."""
    files = {"data/tokenizer/tokenizer.json": b"{}", "data/b--c/dataset_dict.json": b"[]",
             "other.txt": b"not synced"}  # fmt: skip
    commit = git_server.create_repo("image-data", files)
    secret, dest, meta = tmp_path / "secret", tmp_path / "test_data", tmp_path / "meta"
    for d in (secret, dest, meta):
        d.mkdir()
        d.chmod(0o777)
    (secret / "username").write_text(git_server.username)
    (secret / "password").write_text(git_server.password)
    podman(
        "run", "--rm", "--network", "host", "--user", ARBITRARY_UID, "--read-only",
        "--tmpfs", "/tmp", "-v", f"{dest}:/test_data", "-v", f"{meta}:/run/init-metadata",
        "-v", f"{secret}:/var/run/secrets/test-data:ro",
        "-e", f"TEST_DATA_GIT_URL={git_server.url('image-data')}", "-e", "TEST_DATA_GIT_REF=main",
        "-e", "TEST_DATA_GIT_SUBPATH=data", "-e", "TEST_DATA_GIT_INSECURE=true",
        images["initcontainer"], timeout=300,
    )  # fmt: skip
    got = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*")
           if p.is_file() and ".airgap-eval" not in p.parts}  # fmt: skip
    assert got == {k.removeprefix("data/"): v for k, v in files.items() if k.startswith("data/")}
    assert (meta / ".git-metadata").read_text() == commit + "\n"
