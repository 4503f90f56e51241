"""deploy/kubernetes: every manifest validates against the real Kubernetes JSON schemas (strict:
an unknown or misspelled field fails), and the pod has the shape the tools rely on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.errors import ExitCode
from common.s3settings import RESULTS_SECRET_DIR, TEST_DATA_SECRET_DIR, resolve_connection
from tests.deploy.dockerfile import TARGETS, stages

K8S = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
# Native sidecars (initContainer restartPolicy: Always) are on by default from 1.29.
OLDEST = "1.29"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _resources() -> list[tuple[str, dict[str, Any]]]:
    return [(f, d) for f, d in _documents() if d["kind"] != "Kustomization"]


def _one(kind: str) -> dict[str, Any]:
    found = [d for _, d in _resources() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    spec: dict[str, Any] = _one("Job")["spec"]["template"]["spec"]
    return spec


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    every = pod.get("initContainers", []) + pod["containers"]
    found = [c for c in every if c["name"] == name]
    assert found, f"no container {name}"
    return found[0]


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def _volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["volumes"]}


@pytest.mark.parametrize("version", [OLDEST, "latest"])
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    from kubernetes_validate import utils

    target = str(utils.latest_version()) if version == "latest" else version
    for name, doc in _resources():
        try:
            utils.validate(doc, target, strict=True)
        except utils.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{name}: {doc['kind']} invalid for Kubernetes {target} at {path}: {e}")


def test_the_validator_rejects_a_misspelled_field(pod: dict[str, Any]) -> None:
    """Guards the test above: strict mode must catch the typo it exists to catch."""
    from kubernetes_validate import utils

    job = json.loads(json.dumps(_one("Job")))
    job["spec"]["template"]["spec"]["initContainers"][1]["restartPolicyy"] = "Always"
    with pytest.raises(utils.ValidationError, match="restartPolicyy"):
        utils.validate(job, OLDEST, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = next(d for _, d in _documents() if d["kind"] == "Kustomization")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_sync_runs_first_then_the_sidecar_as_a_native_sidecar(pod: dict[str, Any]) -> None:
    names = [c["name"] for c in pod["initContainers"]]
    assert names == ["sync", "results-sidecar"]
    assert "restartPolicy" not in pod["initContainers"][0]
    assert pod["initContainers"][1]["restartPolicy"] == "Always"
    assert [c["name"] for c in pod["containers"]] == ["adapter"]
    assert pod["restartPolicy"] == "Never"


def test_images_match_the_dockerfile_targets(pod: dict[str, Any]) -> None:
    images = {"sync": "initcontainer", "results-sidecar": "sidecar", "adapter": "adapter"}
    all_stages = stages()
    for container, target in images.items():
        assert target in TARGETS
        labels = " ".join(all_stages[target].all("LABEL"))
        repo = _container(pod, container)["image"].rsplit(":", 1)[0]
        assert f'org.opencontainers.image.title="{repo}"' in labels, (container, repo)


def test_data_flows_through_shared_empty_dirs(pod: dict[str, Any]) -> None:
    volumes = _volumes(pod)
    sync, sidecar, adapter = (_container(pod, n) for n in ("sync", "results-sidecar", "adapter"))
    data_in, data_out = _mounts(sync)["/test_data"], _mounts(adapter)["/test_data"]
    assert data_in["name"] == data_out["name"] and "emptyDir" in volumes[data_in["name"]]
    assert not data_in.get("readOnly")
    assert data_out["readOnly"] is True  # the adapter must work from a read-only /test_data
    results = _mounts(adapter)["/results"]
    assert results["name"] == _mounts(sidecar)["/results"]["name"]
    assert "emptyDir" in volumes[results["name"]] and not results.get("readOnly")


def test_job_spec_comes_from_the_configmap_at_meta_job_json(pod: dict[str, Any]) -> None:
    configmap = _one("ConfigMap")
    volume = _volumes(pod)[_mounts(_container(pod, "adapter"))["/meta"]["name"]]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert volume["configMap"]["items"] == [{"key": "job.json", "path": "job.json"}]
    for name in ("adapter", "results-sidecar"):
        assert _mounts(_container(pod, name))["/meta"]["readOnly"] is True


def test_job_spec_is_accepted_by_evalhub_and_by_the_adapter() -> None:
    from evalhub.adapter import JobSpec

    from adapter.parameters import parse_parameters
    from common.jobspec import parse_job_spec

    data = json.loads(_one("ConfigMap")["data"]["job.json"])
    JobSpec.model_validate(data)  # EvalHub's own model: every required field present
    spec = parse_job_spec(data, "deploy/kubernetes/configmap-job-spec.yaml")
    params = parse_parameters(spec.parameters)  # unknown parameters would raise
    assert params.tokenizer is not None and params.tokenizer.startswith("/test_data/")


def test_s3_credentials_are_secret_files_only_where_s3_is_used(pod: dict[str, Any]) -> None:
    volumes = _volumes(pod)
    expected = {"sync": TEST_DATA_SECRET_DIR, "results-sidecar": RESULTS_SECRET_DIR}
    secret_names = {d["metadata"]["name"] for _, d in _resources() if d["kind"] == "Secret"}
    for name, path in expected.items():
        mount = _mounts(_container(pod, name))[str(path)]
        assert mount["readOnly"] is True
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] in secret_names
        assert secret["defaultMode"] == 0o440
    s3_secrets = {
        volumes[_mounts(_container(pod, n))[str(p)]["name"]]["secret"]["secretName"]
        for n, p in expected.items()
    }
    adapter_secrets = {
        volumes[m["name"]]["secret"]["secretName"]
        for m in _container(pod, "adapter")["volumeMounts"]
        if "secret" in volumes[m["name"]]
    }
    assert not adapter_secrets & s3_secrets, "the adapter must not get S3 credentials"
    from evalhub.adapter import auth  # where eval-hub-sdk's model auth looks by default

    model_auth = _mounts(_container(pod, "adapter"))[str(auth._MODEL_AUTH_DIR)]
    assert volumes[model_auth["name"]]["secret"]["optional"] is True
    every = pod["initContainers"] + pod["containers"]
    for c in every:  # never as env vars: they would show in `kubectl describe`
        refs = [e for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
        assert not refs and "envFrom" not in c, c["name"]


@pytest.mark.parametrize("secret_name", ["airgap-eval-test-data-s3", "airgap-eval-results-s3"])
def test_example_secret_keys_are_the_file_names_the_tools_read(
    secret_name: str, tmp_path: Path
) -> None:
    secret = next(
        d for _, d in _resources() if d["kind"] == "Secret" and d["metadata"]["name"] == secret_name
    )
    for key, value in secret["stringData"].items():
        (tmp_path / key).write_text(value)
    conn = resolve_connection(secret_dir=tmp_path, env={})
    data = secret["stringData"]
    assert conn.endpoint == data["AWS_S3_ENDPOINT"]
    assert conn.access_key == data["AWS_ACCESS_KEY_ID"] and conn.has_keys
    assert conn.region == data["AWS_DEFAULT_REGION"]


def test_adapter_args_and_env_are_accepted_by_airgap_eval_run(pod: dict[str, Any]) -> None:
    from adapter.config import parser

    adapter = _container(pod, "adapter")
    args = parser("airgap-eval run").parse_args(adapter["args"])
    assert str(args.test_data) == "/test_data" and str(args.output_dir) == "/results"
    assert str(args.job_spec) == "/meta/job.json"
    assert str(args.work_dir).startswith(_mounts(adapter)["/cache"]["mountPath"])
    env = {e["name"]: e["value"] for e in adapter["env"]}
    assert env["AIRGAP_EVAL_TERMINAL_EVENTS"] == "sidecar"
    for name in ("sync", "results-sidecar"):
        assert "args" not in _container(pod, name)  # the image's ENTRYPOINT and env suffice


def test_restricted_security_context_with_writable_scratch(pod: dict[str, Any]) -> None:
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["runAsUser"] == 1001  # the images' USER
    assert pod["automountServiceAccountToken"] is False
    volumes = _volumes(pod)
    for c in pod["initContainers"] + pod["containers"]:
        ctx = c["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False, c["name"]
        assert ctx["readOnlyRootFilesystem"] is True, c["name"]
        assert ctx["capabilities"] == {"drop": ["ALL"]}, c["name"]
        tmp = _mounts(c)["/tmp"]
        assert "emptyDir" in volumes[tmp["name"]] and not tmp.get("readOnly"), c["name"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), c["name"]
        assert c["terminationMessagePath"] == "/dev/termination-log"
        assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    for volume in volumes.values():
        if "emptyDir" in volume:
            assert volume["emptyDir"].get("sizeLimit"), volume["name"]


def test_bad_input_fails_the_job_without_a_retry() -> None:
    rules = _one("Job")["spec"]["podFailurePolicy"]["rules"]
    fail = next(r for r in rules if r["action"] == "FailJob")["onExitCodes"]
    not_retried = {
        ExitCode.CONFIG,
        ExitCode.AUTH,
        ExitCode.NOT_FOUND,
        ExitCode.INTEGRITY,
        ExitCode.UNSAFE_PATH,
        ExitCode.MISSING_DATA,
    }
    assert fail["operator"] == "In" and set(fail["values"]) == {int(c) for c in not_retried}
    ignore = next(r for r in rules if r["action"] == "Ignore")
    assert ignore["onPodConditions"][0]["type"] == "DisruptionTarget"


def test_network_policy_denies_all_but_dns_model_and_s3() -> None:
    policy = _one("NetworkPolicy")["spec"]
    template_labels = _one("Job")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= template_labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["ingress"] == []
    ports = [{p["port"] for p in rule["ports"]} for rule in policy["egress"]]
    assert ports == [{53}, {8000}, {9000}]  # DNS, the model service, S3
    for rule in policy["egress"]:
        assert rule["to"], "an egress rule without `to` would allow every destination"
    model_url = json.loads(_one("ConfigMap")["data"]["job.json"])["model"]["url"]
    assert ":8000/" in model_url
