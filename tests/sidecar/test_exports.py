"""The sidecar's exports against real servers: the OCI artifact (Debian's docker-registry with
token auth) pulled back and compared byte for byte with what S3 received, also after the
adapter died; a refused push; the MLflow run (a real `mlflow server`) against the results;
a tracking server that is down."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from testbed.localservers import MlflowServer, OciRegistry, SeaweedS3, free_port
from tests.exports import default_tag, mlflow_run, pull
from tests.sidecar.conftest import BENCH, JOB_ID, FakeAdapter, Receiver, objects, spawn, write_spec
from tests.sidecar.test_upload import PREFIX, base_args

PROVIDER = "airgap_lm_eval"  # write_spec's provider_id


def spec_with(path: Path, callback_url: str, **extra: object) -> Path:
    write_spec(path, callback_url)
    spec = json.loads(path.read_text()) | extra
    path.write_text(json.dumps(spec))
    return path


def oci_export(registry: OciRegistry, repository: str, **coords: object) -> dict[str, object]:
    return {
        "oci": {"coordinates": {"oci_host": registry.host, "oci_repository": repository, **coords}}
    }


def oci_env(
    env: dict[str, str], registry: OciRegistry, tmp_path: Path, **kw: str
) -> dict[str, str]:
    auth = registry.docker_config(tmp_path / "config.json", **kw)
    return {**env, "OCI_AUTH_CONFIG_PATH": str(auth), "OCI_INSECURE": "true"}


def run_once(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = spawn([*args, "--once"], env)
    out, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def test_completed_job_is_pushed_as_evalhubs_artifact_and_logged_to_mlflow(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, receiver: Receiver,
    sidecar_env: dict[str, str], tmp_path: Path, oci_registry: OciRegistry,
    mlflow_server: MlflowServer,
) -> None:  # fmt: skip
    adapter.results()
    adapter.complete()
    spec = spec_with(
        tmp_path / "job.json", receiver.url,
        exports=oci_export(oci_registry, "evals/sidecar", annotations={"team": "eval"}),
        experiment_name="airgap-sidecar",
    )  # fmt: skip
    env = oci_env(sidecar_env, oci_registry, tmp_path) | {"MLFLOW_TRACKING_URI": mlflow_server.url}
    done = run_once([*base_args(adapter, bucket, tmp_path), "--job-spec", str(spec)], env)
    assert done.returncode == 0, done.stdout

    tag = default_tag(JOB_ID, PROVIDER, BENCH)
    manifest, files = pull(oci_registry, "evals/sidecar", tag)
    assert manifest["artifactType"] == "application/vnd.eval-hub.github.io"
    assert manifest["annotations"] == manifest["annotations"] | {
        "io.github.eval-hub.job_id": JOB_ID,
        "io.github.eval-hub.benchmark_id": BENCH,
        "io.github.eval-hub.provider_id": PROVIDER,
        "team": "eval",
    }
    # Byte for byte what S3 holds: results, samples, logs, status.json and the manifest.
    in_s3 = {k.removeprefix(PREFIX): v for k, v in objects(s3_server, bucket, PREFIX).items()}
    assert files == in_s3
    assert {"status.json", "manifest.json", "logs/adapter.log"} <= set(files)

    event = receiver.accepted_terminal()[0]
    assert event["status"] == "completed"
    assert event["artifacts"]["oci_reference"].startswith(
        f"{oci_registry.host}/evals/sidecar:{tag}@sha256:"
    )
    run = mlflow_run(mlflow_server.url, event["mlflow_run_id"])
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics == {"acc": 0.5, "acc_stderr": 0.01, "overall_score": 0.5}
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["benchmark_id"] == BENCH and params["model_name"] == "tiny"
    assert run["info"]["run_name"] == f"{JOB_ID}_0"


def test_dead_adapter_results_are_pushed_with_the_failed_status(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, sidecar_env: dict[str, str],
    tmp_path: Path, oci_registry: OciRegistry,
) -> None:  # fmt: skip
    adapter.results()
    adapter.status()  # running, then gone: `done` without a terminal status
    (adapter.root / "done").write_text("137\n")
    spec = spec_with(
        tmp_path / "job.json", "", exports=oci_export(oci_registry, "evals/dead", oci_tag="run-1")
    )
    done = run_once([*base_args(adapter, bucket, tmp_path), "--job-spec", str(spec)],
                    oci_env(sidecar_env, oci_registry, tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stdout
    assert "[UPLOAD]" not in done.stdout, done.stdout
    _, files = pull(oci_registry, "evals/dead", "run-1")
    status = json.loads(files["status.json"])
    assert status["state"] == "failed" and status["error"]["code"] == "ADAPTER_DIED"
    in_s3 = {k.removeprefix(PREFIX): v for k, v in objects(s3_server, bucket, PREFIX).items()}
    assert files == in_s3


def test_refused_push_is_one_upload_line_and_s3_keeps_the_results(
    s3_server: SeaweedS3, bucket: str, adapter: FakeAdapter, receiver: Receiver,
    sidecar_env: dict[str, str], tmp_path: Path, oci_registry: OciRegistry,
) -> None:  # fmt: skip
    adapter.results()
    adapter.complete()
    spec = spec_with(tmp_path / "job.json", receiver.url,
                     exports=oci_export(oci_registry, "evals/refused"))  # fmt: skip
    env = oci_env(sidecar_env, oci_registry, tmp_path, password="wrong")
    done = run_once([*base_args(adapter, bucket, tmp_path), "--job-spec", str(spec)], env)
    assert done.returncode == 0, done.stdout
    lines = [ln for ln in done.stdout.splitlines() if "[UPLOAD]" in ln]
    assert len(lines) == 1 and "refused the credentials" in lines[0], done.stdout
    assert "Traceback" not in done.stdout
    assert f"{PREFIX}status.json" in objects(s3_server, bucket, PREFIX)
    event = receiver.accepted_terminal()[0]
    assert event["status"] == "completed" and "oci_reference" not in event.get("artifacts", {})


def test_mlflow_down_is_one_warning_and_the_job_completes(
    bucket: str, adapter: FakeAdapter, receiver: Receiver, sidecar_env: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    adapter.results()
    adapter.complete()
    spec = spec_with(tmp_path / "job.json", receiver.url, experiment_name="nowhere")
    env = sidecar_env | {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    done = run_once([*base_args(adapter, bucket, tmp_path), "--job-spec", str(spec)], env)
    assert done.returncode == 0, done.stdout
    warnings = [ln for ln in done.stdout.splitlines() if "MLflow" in ln]
    assert len(warnings) == 1 and "not logged" in warnings[0], done.stdout
    assert "Traceback" not in done.stdout
    assert receiver.statuses() == ["running", "completed"]
