"""deploy/kubernetes-pvc (EvalHub 1.0's `test_data_ref.pvc`) played for real: the shipped Job
rendered by `kubectl kustomize` (the overlay removes the sync init container and mounts the
claim read-only at /test_data), the claim a podman volume holding the staged tiny tree. The
adapter scores arc_easy from it and the sidecar uploads the results."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.localservers import SeaweedS3
from testbed.modelserver import VLLMServer
from testbed.tiny import TinyAssets
from tests.deploy import kubeplay
from tests.deploy.dockerfile import REPO
from tests.deploy.podman import IMAGES, VERSION, build_images, inspect, podman
from tests.deploy.test_pod import Play, s3  # noqa: F401  (the module's own S3 server)

pytestmark = [pytest.mark.podman, pytest.mark.e2e, pytest.mark.timeout(3600)]

OVERLAY = REPO / "deploy" / "kubernetes-pvc"


def rendered() -> dict[str, list[dict[str, Any]]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, check=True
    ).stdout
    docs: dict[str, list[dict[str, Any]]] = {}
    for doc in yaml.safe_load_all(out):
        if doc:
            docs.setdefault(doc["kind"], []).append(doc)
    return docs


@pytest.fixture
def pvc_play(
    s3: SeaweedS3,  # noqa: F811
    tiny_assets: TinyAssets,
    vllm_server: VLLMServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Play, str]]:
    build_images()
    where = kubeplay.places()  # the results bucket, from the base manifests
    s3.create_bucket(where.results_bucket)
    monkeypatch.setattr(kubeplay, "documents", rendered)
    monkeypatch.setattr(kubeplay, "places", lambda: where)
    spec = kubeplay._one("Job")["spec"]["template"]["spec"]
    (claim,) = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
                if "persistentVolumeClaim" in v]  # fmt: skip
    play = Play(tmp_path, s3, vllm_server.base_url)
    play.clean()
    podman("volume", "rm", "--force", claim, check=False)
    podman("volume", "create", claim)
    # The claim as an operator fills it: the staged tree, readable by the pod's user.
    podman(
        "run", "--rm", "--network", "none", "--user", "0", "-v", f"{claim}:/claim",
        "-v", f"{tiny_assets.test_data}:/staged:ro", "--entrypoint", "sh",
        f"localhost/{IMAGES['sidecar']}:{VERSION}", "-c", "cp -R /staged/. /claim/ && chmod -R a+rX /claim",
    )  # fmt: skip
    yield play, claim
    play.clean()
    podman("volume", "rm", "--force", claim, check=False)


def test_pvc_pod_runs_from_the_read_only_claim_without_an_init_container(
    pvc_play: tuple[Play, str],
) -> None:
    play, claim = pvc_play
    assert "sync" not in kubeplay.containers(play.spec)
    play.play()
    assert play.exit_code("adapter", 900) == 0, play.logs()["adapter"]
    assert play.kubelet_stops_the_sidecar() == 0, play.logs()["results-sidecar"]

    adapter = inspect(play.container("adapter"), "container")
    mounts = {m["Destination"]: m for m in adapter["Mounts"]}
    assert mounts["/test_data"]["RW"] is False and mounts["/test_data"]["Name"] == claim

    objects = play.uploaded()
    status = json.loads(objects["status.json"])
    assert status["state"] == "completed", status
    results = [k for k in objects if k.rsplit("/", 1)[-1].startswith("results_")]
    scores = json.loads(objects[results[0]])["results"]["arc_easy"]
    assert 0.0 <= scores["acc,none"] <= 1.0
