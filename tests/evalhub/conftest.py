"""One real EvalHub server per version (module scope), with two providers whose local runtime
command is ours: `airgap_eval` runs `airgap-eval run` alone (it sends the terminal event);
`airgap_eval_sidecar` runs it beside `airgap-eval upload`, which uploads to SeaweedFS and
sends the terminal event. Both read the spec the server wrote ($EVALHUB_JOB_SPEC_PATH)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.localservers import SeaweedS3
from testbed.tiny import TinyAssets
from tests.evalhub.server import VERSIONS, EvalHubServer, jobs_dir, require_binary

# The provider's benchmark entries, as EvalHub's lm_evaluation_harness.yaml has them.
BENCHMARKS = [
    {"id": "arc_easy", "name": "arc_easy", "category": "reasoning", "metrics": ["acc", "acc_norm"],
     "primary_score": {"metric": "acc_norm", "lower_is_better": False},
     "pass_criteria": {"threshold": 0.25}},
    {"id": "gsm8k", "name": "gsm8k", "category": "math", "metrics": ["exact_match"],
     "primary_score": {"metric": "exact_match", "lower_is_better": False},
     "pass_criteria": {"threshold": 0.5}},
    # groups over two staged tasks (GROUPS below, passed as parameters.include_path)
    {"id": "tiny_suite_mean", "name": "tiny_suite_mean", "category": "reasoning",
     "metrics": ["acc"], "primary_score": {"metric": "acc"}, "pass_criteria": {"threshold": 0.9}},
    {"id": "tiny_suite_plain", "name": "tiny_suite_plain", "category": "reasoning",
     "metrics": ["acc"], "primary_score": {"metric": "acc"}, "pass_criteria": {"threshold": 0.1}},
    # not staged in the tiny test data: the missing-bundle case
    {"id": "arc_challenge", "name": "arc_challenge", "category": "reasoning",
     "metrics": ["acc", "acc_norm"], "primary_score": {"metric": "acc_norm"},
     "pass_criteria": {"threshold": 0.25}},
]  # fmt: skip

# An lm_eval group with its own aggregate (as mmlu, blimp) and one without (EvalHub's adapter
# then averages the subtasks itself).
GROUPS = {
    "tiny_suite_mean.yaml": """\
group: tiny_suite_mean
task: [arc_easy, blimp_adjunct_island]
aggregate_metric_list:
  - metric: acc
    aggregation: mean
    weight_by_size: false
metadata:
  version: 1.0
""",
    "tiny_suite_plain.yaml": """\
group: tiny_suite_plain
task: [arc_easy, blimp_adjunct_island]
metadata:
  version: 1.0
""",
}

# EvalHub's local runtime runs the command with `sh -c` and EVALHUB_JOB_SPEC_PATH set to
# /tmp/evalhub-jobs/<job>/<index>/<provider>/<benchmark>/meta/job.json.
ADAPTER = """\
JOB_DIR=$(dirname "$(dirname "$EVALHUB_JOB_SPEC_PATH")")
exec "$AIRGAP_PYTHON" -m airgap_eval run --test-data "$AIRGAP_TEST_DATA" \\
    --output-dir "$JOB_DIR/results" --work-dir "$JOB_DIR/work"
"""
# The pod's two containers: the adapter leaves the terminal event to the sidecar, which finds
# a killed adapter by its stale heartbeat.
WITH_SIDECAR = """\
JOB_DIR=$(dirname "$(dirname "$EVALHUB_JOB_SPEC_PATH")")
mkdir -p "$JOB_DIR/results"
AIRGAP_EVAL_TERMINAL_EVENTS=sidecar "$AIRGAP_PYTHON" -m airgap_eval run \\
    --test-data "$AIRGAP_TEST_DATA" --output-dir "$JOB_DIR/results" --work-dir "$JOB_DIR/work" \\
    --heartbeat 1 --wait-uploaded 60 &
echo $! > "$JOB_DIR/adapter.pid"
"$AIRGAP_PYTHON" -m airgap_eval upload --results-dir "$JOB_DIR/results" --stale-after 6
wait
"""


def provider(pid: str, script: Path, env: dict[str, str]) -> dict[str, Any]:
    return {
        "id": pid, "name": pid, "title": pid, "description": "airgap-eval (tests)",
        "runtime": {"local": {
            "command": f"sh {script}",
            "env": [{"name": k, "value": v} for k, v in env.items()],
        }},
        "benchmarks": BENCHMARKS,
    }  # fmt: skip


class Hub:
    """A started server plus what the tests need to find a job's files."""

    def __init__(self, server: EvalHubServer, results_uri: str, groups_dir: Path) -> None:
        self.server, self.results_uri, self.groups_dir = server, results_uri, groups_dir
        self.jobs: list[str] = []

    def submit(self, benchmarks: list[dict[str, Any]], model_url: str, **extra: Any) -> str:
        job_id = self.server.submit(benchmarks, model_url, **extra)
        self.jobs.append(job_id)
        return job_id

    @staticmethod
    def bench_dir(job_id: str, index: int, provider_id: str, bench: str) -> Path:
        return jobs_dir(job_id) / str(index) / provider_id / bench


@pytest.fixture(scope="module", params=VERSIONS, ids=[f"eval-hub-{v}" for v in VERSIONS])
def hub(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_assets: TinyAssets,
    s3_server: SeaweedS3,
) -> Iterator[Hub]:
    version = str(request.param)
    require_binary(version)
    root = tmp_path_factory.mktemp(f"evalhub-{version}")
    bucket = f"evalhub-{version.replace('.', '-')}"
    s3_server.create_bucket(bucket)
    results_uri = f"s3://{bucket}/runs"
    env = {"AIRGAP_PYTHON": sys.executable, "AIRGAP_TEST_DATA": str(tiny_assets.test_data)}
    sidecar_env = {**env, **s3_server.env(), "RESULTS_S3_URI": results_uri}
    scripts = {"adapter.sh": ADAPTER, "with-sidecar.sh": WITH_SIDECAR}
    for name, text in scripts.items():
        (root / name).write_text(text)
    (root / "groups").mkdir()
    for name, text in GROUPS.items():
        (root / "groups" / name).write_text(text)
    providers = [
        provider("airgap_eval", root / "adapter.sh", env),
        provider("airgap_eval_sidecar", root / "with-sidecar.sh", sidecar_env),
    ]
    with EvalHubServer(version, root, providers) as server:
        h = Hub(server, results_uri, root / "groups")
        yield h
    for job_id in h.jobs:
        shutil.rmtree(jobs_dir(job_id), ignore_errors=True)
