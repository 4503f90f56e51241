"""The shipped Kubernetes manifests as a Pod podman can play, changed only where podman or this
machine leave no choice:

- `kind: Job` is refused by `podman kube play`: the Pod is the Job's `spec.template`.
- podman has no native sidecars (it runs every initContainer to completion first): an
  initContainer with `restartPolicy: Always` moves to `containers`, and the test plays the
  kubelet's part, SIGTERM to the sidecar once the main container has exited.
- Secrets become host directories holding one file per key (the Secret's keys, the test's
  values), the ConfigMap is passed with `--configmap`. podman ignores fsGroup and subPath
  (every container gets the whole scratch emptyDir as /tmp).
- Image names -> the images deploy/podman/setup.sh built; endpoints -> the servers the test
  started on the host's 127.0.0.1 (hostNetwork: the pod shares the host's network).

Everything else (env names, mounts, securityContext, resources, the emptyDirs) is played as
shipped.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.storage import parse_s3_uri
from tests.deploy.dockerfile import REPO

K8S = REPO / "deploy" / "kubernetes"
# podman deletes an init container (and its log and exit code) once it ran, unless told so.
KEEP_INIT = {"io.podman.annotations.init.container.type": "always"}


def documents() -> dict[str, list[dict[str, Any]]]:
    """kind -> the documents of that kind in deploy/kubernetes."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.setdefault(doc["kind"], []).append(doc)
    return out


def _one(kind: str) -> dict[str, Any]:
    (doc,) = documents()[kind]
    return doc


@dataclass(frozen=True)
class Places:
    """Where the shipped manifests read the test data and write the results."""

    data_bucket: str
    data_prefix: str
    results_bucket: str
    results_prefix: str


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def containers(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


def places() -> Places:
    every = containers(_one("Job")["spec"]["template"]["spec"])
    sync, sidecar = _env(every["sync"]), _env(every["results-sidecar"])
    bucket, prefix = parse_s3_uri(sidecar["RESULTS_S3_URI"])
    return Places(sync["TEST_DATA_S3_BUCKET"], sync["TEST_DATA_S3_KEY"], bucket, prefix)


def pod_from_job(images: dict[str, str], secret_dirs: dict[str, Path]) -> dict[str, Any]:
    """images: image name as in job.yaml (repository:tag) -> local image;
    secret_dirs: secretName -> a host dir with the Secret's keys as files."""
    job = _one("Job")
    template = copy.deepcopy(job["spec"]["template"])
    spec = template["spec"]
    native = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    spec["initContainers"] = [c for c in spec["initContainers"] if c not in native]
    for container in native:
        del container["restartPolicy"]
    spec["containers"] = native + spec["containers"]
    for container in spec["initContainers"] + spec["containers"]:
        container["image"] = images[container["image"]]
    for volume in spec["volumes"]:
        if "secret" in volume:
            path = secret_dirs[volume.pop("secret")["secretName"]]
            volume["hostPath"] = {"path": str(path), "type": "Directory"}
    spec["hostNetwork"] = True
    metadata = template.get("metadata", {})
    metadata["name"] = job["metadata"]["name"]
    metadata["annotations"] = metadata.get("annotations", {}) | KEEP_INIT
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def job_spec_configmap(model_url: str, **fields: Any) -> dict[str, Any]:
    """The shipped ConfigMap with the model endpoint replaced (and top-level `fields`, e.g.
    the id and callback_url of a job an EvalHub server knows)."""
    configmap = copy.deepcopy(_one("ConfigMap"))
    spec = json.loads(configmap["data"]["job.json"]) | fields
    spec["model"]["url"] = model_url
    configmap["data"]["job.json"] = json.dumps(spec, indent=2)
    return configmap


def secret_keys() -> dict[str, list[str]]:
    """secretName -> the keys of the example Secret (the file names the pod reads)."""
    return {s["metadata"]["name"]: sorted(s["stringData"]) for s in documents()["Secret"]}


def write_secret_dirs(root: Path, values: dict[str, dict[str, str]]) -> dict[str, Path]:
    """One dir per Secret, one file per key, with the Secret's defaultMode, group-owned by the
    pod's fsGroup as the kubelet mounts them. podman ignores fsGroup (no supplementary group),
    so the pod's runAsUser owns them: readable by the pod's user and no one else either way.
    A Secret not in `values` (the optional model auth) is an empty dir."""
    spec = _one("Job")["spec"]["template"]["spec"]
    owner, group = spec["securityContext"]["runAsUser"], spec["securityContext"]["fsGroup"]
    modes = {
        v["secret"]["secretName"]: v["secret"].get("defaultMode", 0o644)
        for v in spec["volumes"]
        if "secret" in v
    }
    dirs = {}
    for name, keys in secret_keys().items():
        d = root / name
        d.mkdir(parents=True)
        given = values.get(name)
        if given is not None:
            missing = set(keys) - set(given)
            if missing:
                raise KeyError(f"no value for {sorted(missing)} of Secret {name}")
            for key in keys:
                (d / key).write_text(given[key])
                os.chown(d / key, owner, group)
                (d / key).chmod(modes.get(name, 0o440))  # a Secret this pod does not mount
        dirs[name] = d
    return dirs


def dump(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path
