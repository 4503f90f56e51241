"""One job through EvalHub 1.0.2's real server (`eval-hub -local`, MLflow configured) with
`exports.oci` and an `experiment`: our adapter alone (it owns the terminal event, so it
exports) pushes the artifact to the registry and logs the run to MLflow; the server shows the
job completed with both."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator

import pytest

from testbed.localservers import MlflowServer, OciRegistry
from testbed.modelserver import VLLMServer
from testbed.tiny import TinyAssets
from tests.evalhub.conftest import ADAPTER, provider
from tests.evalhub.server import EvalHubServer, jobs_dir, require_binary
from tests.exports import default_tag, mlflow_run, mlflow_runs, pull

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

VERSION = "1.0.2"
REPOSITORY = "evals/evalhub"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_assets: TinyAssets,
    oci_registry: OciRegistry, mlflow_server: MlflowServer,
) -> Iterator[EvalHubServer]:  # fmt: skip
    require_binary(VERSION)
    root = tmp_path_factory.mktemp("evalhub-exports")
    (root / "adapter.sh").write_text(ADAPTER)
    env = {
        "AIRGAP_PYTHON": sys.executable, "AIRGAP_TEST_DATA": str(tiny_assets.test_data),
        "OCI_AUTH_CONFIG_PATH": str(oci_registry.docker_config(root / "docker-config.json")),
        "OCI_INSECURE": "true", "MLFLOW_TRACKING_URI": mlflow_server.url,
    }  # fmt: skip
    config = {"mlflow": {"tracking_uri": mlflow_server.url}}
    with EvalHubServer(VERSION, root, [provider("airgap_eval", root / "adapter.sh", env)],
                       extra=config) as hub:  # fmt: skip
        yield hub


def test_job_with_oci_export_and_experiment(
    server: EvalHubServer, vllm_server: VLLMServer, oci_registry: OciRegistry,
    mlflow_server: MlflowServer,
) -> None:  # fmt: skip
    arc = {"id": "arc_easy", "provider_id": "airgap_eval", "parameters": {"num_examples": 6}}
    job_id = server.submit(
        [arc], vllm_server.base_url,
        exports={"oci": {"coordinates": {"oci_host": oci_registry.host,
                                         "oci_repository": REPOSITORY}}},
        experiment={"name": "airgap-evalhub", "tags": [{"key": "suite", "value": "tiny"}]},
    )  # fmt: skip
    try:
        view = server.wait(job_id, 600)
        bench_dir = jobs_dir(job_id) / "0" / "airgap_eval" / "arc_easy"
        log = (bench_dir / "jobrun.log").read_text(errors="replace")[-3000:] if (
            bench_dir / "jobrun.log").is_file() else ""  # fmt: skip
        assert view["status"]["state"] == "completed", f"{json.dumps(view)[:3000]}\n{log}"
        (result,) = view["results"]["benchmarks"]
        print(f"eval-hub {VERSION} job view:\n{json.dumps(view, indent=1)}")

        manifest, files = pull(
            oci_registry, REPOSITORY, default_tag(job_id, "airgap_eval", "arc_easy")
        )
        print(f"pulled artifact manifest:\n{json.dumps(manifest, indent=1)}")
        assert manifest["annotations"]["io.github.eval-hub.job_id"] == job_id
        results_dir = bench_dir / "results"
        status = json.loads(files["status.json"])
        assert status["state"] == "completed" and status["metrics"] == result["metrics"]
        for rel, body in files.items():
            if rel not in ("manifest.json", "logs/adapter.log", "status.json"):
                assert (results_dir / rel).read_bytes() == body, rel

        # The run the server shows is ours, in the experiment the server made for the job.
        run = mlflow_run(mlflow_server.url, result["mlflow_run_id"])
        print(f"MLflow run:\n{json.dumps(run, indent=1)}")
        assert run["info"]["experiment_id"] == view["resource"]["mlflow_experiment_id"]
        ours = [r for r in mlflow_runs(mlflow_server.url, "airgap-evalhub")
                if r["info"]["run_name"] == f"{job_id}_0"]  # fmt: skip
        assert [r["info"]["run_id"] for r in ours] == [result["mlflow_run_id"]]
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert {k: v for k, v in metrics.items() if k != "overall_score"} == pytest.approx(
            result["metrics"]
        )
        assert run["info"]["run_name"] == f"{job_id}_0"
        tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        assert tags.get("suite") == "tiny"
    finally:
        shutil.rmtree(jobs_dir(job_id), ignore_errors=True)
