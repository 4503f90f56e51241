"""Our jobs as EvalHub's real server shows them (0.4.2 and 1.0.x), through its REST API: the
server launched `airgap-eval run` (and `airgap-eval upload`) with the spec it wrote, against
vLLM serving the tiny model over the tiny staged data."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from testbed.modelserver import VLLMServer
from tests.e2e.helpers import read_results
from tests.evalhub.conftest import Hub

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

JOB_TIMEOUT_S = 600  # a busy 2-core machine; a hang still ends the test
ARC = {"id": "arc_easy", "provider_id": "airgap_eval", "parameters": {"num_examples": 6}}


def benchmark(view: dict[str, Any], bench_id: str) -> dict[str, Any]:
    found = [b for b in view["results"]["benchmarks"] if b["id"] == bench_id]
    assert len(found) == 1, json.dumps(view, indent=1)
    return dict(found[0])


def explain(hub: Hub, view: dict[str, Any], dirs: list[Path]) -> str:
    logs = "".join(
        f"\n--- {d}/jobrun.log ---\n{(d / 'jobrun.log').read_text(errors='replace')[-3000:]}"
        for d in dirs
        if (d / "jobrun.log").is_file()
    )
    return f"{json.dumps(view, indent=1)[:4000]}{logs}\n--- server ---\n{hub.server.log_tail(2000)}"


def test_completed_job_shows_metrics_pass_fail_and_job_score(
    hub: Hub, vllm_server: VLLMServer
) -> None:
    gsm8k = {"id": "gsm8k", "provider_id": "airgap_eval", "weight": 2,
             "parameters": {"num_examples": 3, "max_gen_toks": 16}}  # fmt: skip
    job_id = hub.submit([ARC, gsm8k], vllm_server.base_url, pass_criteria={"threshold": 0.3})
    view = hub.server.wait(job_id, JOB_TIMEOUT_S)
    dirs = [hub.bench_dir(job_id, i, "airgap_eval", b) for i, b in enumerate(("arc_easy", "gsm8k"))]
    assert view["status"]["state"] == "completed", explain(hub, view, dirs)

    arc, gsm = benchmark(view, "arc_easy"), benchmark(view, "gsm8k")
    # EvalHub's adapter's names: `metric` from `metric,filter`, stderrs kept, one filter kept
    assert set(arc["metrics"]) == {"acc", "acc_norm", "acc_stderr", "acc_norm_stderr"}
    assert set(gsm["metrics"]) == {"exact_match", "exact_match_stderr"}
    lm_eval = read_results(dirs[0] / "results")["results"]["arc_easy"]
    assert arc["metrics"]["acc"] == pytest.approx(lm_eval["acc,none"])
    assert arc["metrics"]["acc_norm_stderr"] == pytest.approx(lm_eval["acc_norm_stderr,none"])
    strict = read_results(dirs[1] / "results")["results"]["gsm8k"]["exact_match,strict-match"]
    assert gsm["metrics"]["exact_match"] == pytest.approx(strict)

    # the server's pass/fail from the provider's primary metric and threshold
    acc_norm = arc["metrics"]["acc_norm"]
    assert arc["test"] == {"primary_score": pytest.approx(acc_norm), "primary_score_metric": "acc_norm",
                           "threshold": pytest.approx(0.25), "pass": acc_norm >= 0.25}  # fmt: skip
    assert gsm["test"]["primary_score_metric"] == "exact_match"
    assert gsm["test"]["pass"] is (gsm["metrics"]["exact_match"] >= 0.5)
    # the job score: the benchmarks' primary scores, weighted (arc 1, gsm8k 2)
    expected = (acc_norm + 2 * gsm["metrics"]["exact_match"]) / 3
    assert view["results"]["test"]["score"] == pytest.approx(expected, abs=1e-6)
    assert view["results"]["test"]["threshold"] == pytest.approx(0.3)
    assert view["results"]["test"]["pass"] is (expected >= 0.3)

    # status.json names the same primary metric, found in the server's provider definition
    status = json.loads((dirs[0] / "results" / "status.json").read_text())
    assert status["metrics"] == pytest.approx(arc["metrics"])
    assert status["primary_score"] == {
        "metric": "acc_norm", "value": pytest.approx(acc_norm), "threshold": 0.25,
        "pass": acc_norm >= 0.25, "lower_is_better": False, "source": "evalhub provider",
    }  # fmt: skip
    print(f"eval-hub {hub.server.version} completed job view:\n{json.dumps(view, indent=1)}")


def test_groups_show_their_aggregate_or_the_mean_of_their_subtasks(
    hub: Hub, vllm_server: VLLMServer
) -> None:
    params = {"num_examples": 4, "include_path": [str(hub.groups_dir)]}
    names = ("tiny_suite_mean", "tiny_suite_plain")
    job_id = hub.submit(
        [{"id": n, "provider_id": "airgap_eval", "parameters": params} for n in names],
        vllm_server.base_url,
    )
    view = hub.server.wait(job_id, JOB_TIMEOUT_S)
    dirs = [hub.bench_dir(job_id, i, "airgap_eval", n) for i, n in enumerate(names)]
    assert view["status"]["state"] == "completed", explain(hub, view, dirs)

    agg, plain = benchmark(view, names[0]), benchmark(view, names[1])
    # a group with an aggregate: lm_eval's aggregate, subtasks not shown
    lm_eval = read_results(dirs[0] / "results")["results"]
    assert agg["metrics"]["acc"] == pytest.approx(lm_eval["tiny_suite_mean"]["acc,none"])
    assert set(agg["metrics"]) == {"acc", "acc_stderr"}
    # without one: the plain mean over the subtasks of each metric (acc_norm: arc_easy alone)
    lm_eval = read_results(dirs[1] / "results")["results"]
    arc, blimp = lm_eval["arc_easy"], lm_eval["blimp_adjunct_island"]
    assert plain["metrics"]["acc"] == pytest.approx((arc["acc,none"] + blimp["acc,none"]) / 2)
    assert plain["metrics"]["acc_norm"] == pytest.approx(arc["acc_norm,none"])
    assert plain["test"]["primary_score"] == pytest.approx(plain["metrics"]["acc"])


def test_missing_bundle_shows_failed_naming_the_bundle_dir(
    hub: Hub, vllm_server: VLLMServer
) -> None:
    bench = {"id": "arc_challenge", "provider_id": "airgap_eval", "parameters": {"num_examples": 2}}
    job_id = hub.submit([bench], vllm_server.base_url)
    view = hub.server.wait(job_id, JOB_TIMEOUT_S)
    d = hub.bench_dir(job_id, 0, "airgap_eval", "arc_challenge")
    assert view["status"]["state"] == "failed", explain(hub, view, [d])
    (event,) = [b for b in view["status"]["benchmarks"] if b["id"] == "arc_challenge"]
    assert event["status"] == "failed", explain(hub, view, [d])
    error = event["error_message"]
    assert error["message_code"] == "missing_data"
    assert "/allenai--ai2_arc--ARC-Challenge: missing" in error["message"], explain(hub, view, [d])
    assert "airgap-eval stage arc_challenge" in error["message"]
    assert "test" not in benchmark(view, "arc_challenge") and "test" not in view["results"]
    print(f"eval-hub {hub.server.version} failed job view:\n{json.dumps(view, indent=1)}")


def _wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.is_file():
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout_s:.0f} s"
        time.sleep(0.1)


def test_sidecar_reports_a_completed_job(hub: Hub, vllm_server: VLLMServer) -> None:
    job_id = hub.submit([{**ARC, "provider_id": "airgap_eval_sidecar"}], vllm_server.base_url)
    view = hub.server.wait(job_id, JOB_TIMEOUT_S)
    d = hub.bench_dir(job_id, 0, "airgap_eval_sidecar", "arc_easy")
    assert view["status"]["state"] == "completed", explain(hub, view, [d])
    arc = benchmark(view, "arc_easy")
    assert set(arc["metrics"]) == {"acc", "acc_norm", "acc_stderr", "acc_norm_stderr"}
    assert arc["test"]["primary_score_metric"] == "acc_norm"
    assert arc["test"]["primary_score"] == pytest.approx(arc["metrics"]["acc_norm"])
    assert view["results"]["test"]["score"] == pytest.approx(arc["metrics"]["acc_norm"])
    assert arc["artifacts"]["results_s3_uri"].startswith(hub.results_uri), arc
    # the sidecar, not the adapter, sent the terminal event (the adapter waited for `uploaded`)
    assert (d / "results" / "uploaded").is_file()


def test_killed_adapter_shows_failed_through_the_sidecar(hub: Hub, vllm_server: VLLMServer) -> None:
    job_id = hub.submit([{**ARC, "provider_id": "airgap_eval_sidecar"}], vllm_server.base_url)
    d = hub.bench_dir(job_id, 0, "airgap_eval_sidecar", "arc_easy")
    _wait_for(d / "results" / "status.json", JOB_TIMEOUT_S)  # the adapter is up and beating
    os.kill(int((d / "adapter.pid").read_text()), signal.SIGKILL)
    view = hub.server.wait(job_id, JOB_TIMEOUT_S)
    assert view["status"]["state"] == "failed", explain(hub, view, [d])
    (event,) = [b for b in view["status"]["benchmarks"] if b["id"] == "arc_easy"]
    assert event["status"] == "failed", explain(hub, view, [d])
    error = event["error_message"]
    assert error["message_code"] == "adapter_died", explain(hub, view, [d])
    assert hub.results_uri in error["message"]  # where the partial results went
    status = json.loads((d / "results" / "status.json").read_text())
    assert status["state"] == "failed" and status["error"]["code"] == "ADAPTER_DIED"
    print(f"eval-hub {hub.server.version} killed-adapter job view:\n{json.dumps(view, indent=1)}")
