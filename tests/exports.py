"""Reading exports back for the tests: an OCI artifact pulled from the registry with oras-py
(manifest and every layer, untarred), an MLflow run through the tracking server's REST API."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import urllib.parse
import urllib.request
from typing import Any

import oras.provider

from testbed.localservers import OciRegistry


def default_tag(job_id: str, provider_id: str, benchmark_id: str, index: int = 0) -> str:
    """EvalHub's tag rule, written out here so the test checks the SDK's, not reuses it."""
    key = f"{job_id}:{provider_id}:{benchmark_id}:{index}"
    return "evalhub-" + hashlib.sha256(key.encode()).hexdigest()


def pull(
    registry: OciRegistry, repository: str, tag: str
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(the manifest, {file name: bytes}) of an artifact, as oras-py reads them."""
    provider = oras.provider.Registry(insecure=True)
    provider.auth.set_basic_auth(registry.username, registry.password)
    ref = f"{registry.host}/{repository}:{tag}"
    manifest = provider.get_manifest(ref)
    container = provider.get_container(ref)
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        blob = provider.get_blob(container, layer["digest"]).content
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    data = tar.extractfile(member)
                    assert data is not None
                    files[member.name.lstrip("/")] = data.read()
    return manifest, files


def mlflow_run(tracking_uri: str, run_id: str) -> dict[str, Any]:
    query = urllib.parse.urlencode({"run_id": run_id})
    with urllib.request.urlopen(f"{tracking_uri}/api/2.0/mlflow/runs/get?{query}") as r:
        return dict(json.loads(r.read())["run"])


def mlflow_runs(tracking_uri: str, experiment: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"experiment_name": experiment})
    try:
        with urllib.request.urlopen(
            f"{tracking_uri}/api/2.0/mlflow/experiments/get-by-name?{query}"
        ) as r:
            exp_id = json.loads(r.read())["experiment"]["experiment_id"]
    except urllib.error.HTTPError:
        return []
    body = json.dumps({"experiment_ids": [exp_id]}).encode()
    req = urllib.request.Request(
        f"{tracking_uri}/api/2.0/mlflow/runs/search", data=body, method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req) as r:
        return list(json.loads(r.read()).get("runs", []))
