"""deploy/kubernetes/job.yaml played for real: `podman kube play` of the Job's pod template
(tests/deploy/kubeplay.py says what changes and why) against SeaweedFS and vLLM on the host.

sync pulls the staged tree from S3 into the test-data emptyDir, the adapter scores arc_easy
against vLLM from the read-only /test_data, the sidecar uploads results, logs and status under
the documented prefix; all three on a read-only root. A second play kills the adapter (kill -9)
half-way: the sidecar still uploads what exists, with a failed status, and EvalHub's real server
shows the job failed (adapter_died). A third stops S3 during the init sync. No container log
may hold the S3 secret key.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from common.s3 import client
from testbed.localservers import SeaweedS3
from testbed.modelserver import RecordingProxy, VLLMServer
from testbed.tiny import TinyAssets
from tests.deploy import kubeplay
from tests.deploy.podman import IMAGES, VERSION, build_images, inspect, podman
from tests.evalhub.conftest import provider
from tests.evalhub.server import VERSIONS, EvalHubServer, binary, jobs_dir

pytestmark = [pytest.mark.podman, pytest.mark.e2e, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """Its own server: a secret key no other test uses, to look for in the logs."""
    key = f"pod-secret-{secrets.token_hex(12)}"
    with SeaweedS3(tmp_path_factory.mktemp("pod-s3"), secret_key=key) as server:
        yield server


class Play:
    """One `podman kube play` of the shipped Job's pod, and what it left behind."""

    def __init__(self, tmp: Path, s3: SeaweedS3, model_url: str, **spec_fields: Any) -> None:
        self.s3 = s3
        self.job = kubeplay.documents()["Job"][0]
        self.spec = self.job["spec"]["template"]["spec"]
        self.name = self.job["metadata"]["name"]
        self.where = kubeplay.places()
        configmap = kubeplay.job_spec_configmap(model_url, **spec_fields)
        self.job_spec = json.loads(configmap["data"]["job.json"])
        # The S3 Secrets get this server's keys and endpoint; the optional model-auth Secret is
        # left out (an open endpoint), as the manifest allows.
        values = {
            name: s3.env()
            for name, keys in kubeplay.secret_keys().items()
            if "AWS_SECRET_ACCESS_KEY" in keys
        }
        dirs = kubeplay.write_secret_dirs(tmp / "secrets", values)
        images = {f"{repo}:{VERSION}": f"localhost/{repo}:{VERSION}" for repo in IMAGES.values()}
        self.pod_yaml = kubeplay.dump(tmp / "pod.yaml", kubeplay.pod_from_job(images, dirs))
        self.configmap_yaml = kubeplay.dump(tmp / "configmap.yaml", configmap)
        # emptyDirs and ConfigMaps become named volumes that outlive the pod: a stale
        # /test_data would pre-fill the next sync, a stale job.json replace the new one.
        self.volumes = [v["name"] for v in self.spec["volumes"] if "emptyDir" in v] + [
            v["configMap"]["name"] for v in self.spec["volumes"] if "configMap" in v
        ]

    def container(self, name: str) -> str:
        return f"{self.name}-{name}"

    def clean(self) -> None:
        # --volumes: the images' VOLUME dirs that the pod does not mount are anonymous
        # volumes, which `pod rm` would leave in the cached storage.
        names = [self.container(n) for n in kubeplay.containers(self.spec)]
        podman("rm", "--force", "--ignore", "--volumes", *names)
        podman("pod", "rm", "--force", "--ignore", self.name)
        podman("volume", "rm", "--force", *self.volumes, check=False)

    def play(self, check: bool = True) -> None:
        podman(
            "kube", "play", "--configmap", str(self.configmap_yaml), str(self.pod_yaml),
            timeout=900, check=check,
        )  # fmt: skip

    def volume_file(self, mount: str, path: str) -> str:
        """A file in the emptyDir the sync container mounts at `mount` (read with the
        sidecar's image)."""
        sync = kubeplay.containers(self.spec)["sync"]
        (volume,) = [m["name"] for m in sync["volumeMounts"] if m["mountPath"] == mount]
        proc = podman(
            "run", "--rm", "--network", "none", "-v", f"{volume}:{mount}:ro",
            "--entrypoint", "cat", f"localhost/{IMAGES['sidecar']}:{VERSION}", f"{mount}/{path}",
        )  # fmt: skip
        return proc.stdout

    def exit_code(self, name: str, timeout: float) -> int:
        return int(podman("wait", self.container(name), timeout=timeout).stdout.strip())

    def state(self, name: str) -> dict[str, Any]:
        state: dict[str, Any] = inspect(self.container(name), "container")["State"]
        return state

    def seconds(self, name: str) -> tuple[datetime, datetime]:
        s = self.state(name)
        return _time(s["StartedAt"]), _time(s["FinishedAt"])

    def kubelet_stops_the_sidecar(self) -> int:
        """What Kubernetes does to a native sidecar once the main container has exited:
        SIGTERM, then the pod's grace period. A sidecar that finished on its own is left."""
        sidecar = self.container("results-sidecar")
        grace = str(self.spec["terminationGracePeriodSeconds"])
        if self.state("results-sidecar")["Running"]:
            podman("stop", "--time", grace, sidecar, timeout=int(grace) + 30)
        return self.exit_code("results-sidecar", 30)

    def logs(self) -> dict[str, str]:
        out = {}
        for n in kubeplay.containers(self.spec):
            proc = podman("logs", self.container(n))
            out[n] = proc.stdout + proc.stderr
        return out

    def uploaded(self) -> dict[str, bytes]:
        """The objects under the documented prefix: <prefix>/<job id>/<benchmark id>/."""
        s3 = client(self.s3.connection())
        base = f"{self.where.results_prefix}/{self.job_spec['id']}/{self.job_spec['benchmark_id']}/"
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.where.results_bucket, Prefix=base
            )
            for o in page.get("Contents", [])
        ]
        return {
            k.removeprefix(base): s3.get_object(Bucket=self.where.results_bucket, Key=k)[
                "Body"
            ].read()
            for k in keys
        }

    def results_files(self) -> list[str]:
        """Files in the results emptyDir after the play (read with the sidecar's image)."""
        proc = podman(
            "run", "--rm", "--network", "none", "-v", "results:/results:ro",
            "--entrypoint", "find", f"localhost/{IMAGES['sidecar']}:{VERSION}",
            "/results", "-type", "f", "-printf", "%P\\n",
        )  # fmt: skip
        return sorted(proc.stdout.split())


def _time(stamp: str) -> datetime:
    """podman's RFC 3339 times carry nanoseconds; datetime takes microseconds."""
    m = re.fullmatch(r"(\S+?T\S+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?", stamp.replace(" ", "T"))
    assert m, stamp
    zone = m.group(3) if m.group(3) not in (None, "Z") else "+00:00"
    return datetime.fromisoformat(f"{m.group(1)}.{(m.group(2) or '0')[:6]:0<6}{zone}")


@pytest.fixture(scope="module")
def staged(s3: SeaweedS3, tiny_assets: TinyAssets) -> SeaweedS3:
    """The tiny tree staged where the shipped manifests read it; the results bucket made."""
    from common.manifest import Manifest
    from staging.stage import upload_tree

    build_images()
    where = kubeplay.places()
    s3.create_bucket(where.data_bucket)
    s3.create_bucket(where.results_bucket)
    upload_tree(
        tiny_assets.test_data,
        Manifest.load(tiny_assets.test_data / "manifest.json"),
        f"s3://{where.data_bucket}/{where.data_prefix}",
        s3.connection(),
    )
    return s3


@pytest.fixture
def play_for(staged: SeaweedS3, tmp_path: Path) -> Iterator[Any]:
    plays: list[Play] = []

    def make(model_url: str, **spec_fields: Any) -> Play:
        play = Play(tmp_path / f"play{len(plays)}", staged, model_url, **spec_fields)
        play.clean()
        plays.append(play)
        return play

    yield make
    for play in plays:
        play.clean()


def test_the_shipped_pod_syncs_runs_and_uploads(
    play_for: Any, vllm_server: VLLMServer, capsys: pytest.CaptureFixture[str]
) -> None:
    play = play_for(vllm_server.base_url)
    play.play()
    assert play.exit_code("sync", 60) == 0, play.logs()["sync"]
    assert play.exit_code("adapter", 900) == 0, play.logs()["adapter"]
    assert play.kubelet_stops_the_sidecar() == 0, play.logs()["results-sidecar"]
    # Played as shipped: the pod's user, a read-only root on all three containers (each ran
    # to its end on it), /test_data read-only for the adapter.
    for name in ("sync", "adapter", "results-sidecar"):
        container = inspect(play.container(name), "container")
        assert container["Config"]["User"].split(":")[0] == "1001", name
        assert container["HostConfig"]["ReadonlyRootfs"] is True, name
    adapter = inspect(play.container("adapter"), "container")
    mounts = {m["Destination"]: m for m in adapter["Mounts"]}
    assert mounts["/test_data"]["RW"] is False and mounts["/results"]["RW"] is True

    objects = play.uploaded()
    status = json.loads(objects["status.json"])
    assert status["state"] == "completed", status
    results = [k for k in objects if k.rsplit("/", 1)[-1].startswith("results_")]
    assert len(results) == 1, sorted(objects)
    scores = json.loads(objects[results[0]])["results"]["arc_easy"]
    assert 0.0 <= scores["acc,none"] <= 1.0
    assert any(k.startswith("logs/") for k in objects), sorted(objects)
    assert "manifest.json" in objects

    logs = play.logs()
    for name, text in logs.items():
        assert play.s3.secret_key not in text, f"the S3 secret key is in {name}'s log"
    for key, body in objects.items():
        assert play.s3.secret_key.encode() not in body, f"the S3 secret key is in {key}"

    # The adapter waits for the sidecar's `uploaded` marker before it exits: the upload is
    # timed from the adapter's terminal status, not from its exit.
    sync = play.seconds("sync")
    run = play.seconds("adapter")
    upload = play.seconds("results-sidecar")
    finished = _time(status["finished_at"])
    with capsys.disabled():
        print(
            f"\npod: sync {(sync[1] - sync[0]).total_seconds():.1f} s, "
            f"run {(finished - run[0]).total_seconds():.1f} s (start -> terminal status), "
            f"upload {(upload[1] - finished).total_seconds():.1f} s (-> sidecar exit), "
            f"adapter exit {(run[1] - finished).total_seconds():.1f} s after its status"
        )


@pytest.fixture
def evalhub(tmp_path: Path) -> Iterator[EvalHubServer]:
    """EvalHub's real server (the current 1.0.x), whose provider's local command does nothing:
    the job is the pod's, which reports to it through its job spec's callback_url."""
    version = VERSIONS[-1]
    if not binary(version).is_file():
        pytest.fail(f"eval-hub-server {version} not installed: run `make setup-evalhub`")
    script = tmp_path / "nothing.sh"
    script.write_text("exit 0\n")
    with EvalHubServer(version, tmp_path, [provider("airgap_pod", script, {})]) as server:
        yield server


def _evalhub_job(server: EvalHubServer, model_url: str) -> dict[str, Any]:
    """A job the server knows, and the job.json it wrote for it (BuildJobSpec)."""
    job_id = server.submit([{"id": "arc_easy", "provider_id": "airgap_pod"}], model_url)
    path = jobs_dir(job_id) / "0" / "airgap_pod" / "arc_easy" / "meta" / "job.json"
    end = time.monotonic() + 60
    while not path.is_file():
        assert time.monotonic() < end, f"no {path}:\n{server.log_tail()}"
        time.sleep(0.2)
    written: dict[str, Any] = json.loads(path.read_text())
    return written


def test_a_killed_adapter_still_gets_its_results_and_a_failed_status_uploaded(
    play_for: Any, vllm_server: VLLMServer, evalhub: EvalHubServer
) -> None:
    # Each scoring request held 2 s: the run is still scoring when it is killed.
    with RecordingProxy(vllm_server.root_url, delay_s=2.0) as proxy:
        job = _evalhub_job(evalhub, proxy.base_url)
        fields = {k: job[k] for k in ("id", "provider_id", "benchmark_index", "callback_url")}
        play = play_for(proxy.base_url, **fields)
        play.play()
        assert play.exit_code("sync", 60) == 0, play.logs()["sync"]
        end = time.monotonic() + 600
        while proxy.count() == 0:
            assert play.state("adapter")["Running"], play.logs()["adapter"]
            assert time.monotonic() < end, "the adapter sent no scoring request in 600 s"
            time.sleep(0.5)
        podman("kill", "--signal", "KILL", play.container("adapter"))
        assert play.exit_code("adapter", 60) == 137
        assert play.kubelet_stops_the_sidecar() == 0, play.logs()["results-sidecar"]

    objects = play.uploaded()
    status = json.loads(objects["status.json"])
    assert status["state"] == "failed", status
    assert status["error"]["code"] == "ADAPTER_DIED", status
    # Everything the adapter had written is in S3 (the sidecar's own bookkeeping stays home).
    left = [f for f in play.results_files() if not f.startswith(".airgap-eval/")]
    expected = [f for f in left if f not in ("uploaded", "done")]
    assert expected and set(expected) <= set(objects), (expected, sorted(objects))
    for name, text in play.logs().items():
        assert play.s3.secret_key not in text, f"the S3 secret key is in {name}'s log"
    # EvalHub's own server shows the job failed, with the sidecar's reason
    view = evalhub.wait(fields["id"], 120)
    assert view["status"]["state"] == "failed", json.dumps(view)[:3000]
    (bench,) = [b for b in view["status"]["benchmarks"] if b["id"] == "arc_easy"]
    assert bench["status"] == "failed", bench
    assert bench["error_message"]["message_code"] == "adapter_died", bench


def test_s3_down_during_the_init_sync(play_for: Any, staged: SeaweedS3) -> None:
    """The S3 server stops while the pod's sync runs, and comes back: the sync fails with
    UNREACHABLE at once (no retry to its deadline) and a failed status record in /test_data;
    the other containers never start; the next play, with S3 back, syncs."""
    play = play_for("http://127.0.0.1:9/v1")  # never reached: the adapter does not start
    staged.stop()
    try:
        started = time.monotonic()
        play.play(check=False)
        code = play.exit_code("sync", 120)
        seconds = time.monotonic() - started
    finally:
        staged.start()
    proc = podman("logs", play.container("sync"))
    log = proc.stdout + proc.stderr
    assert code == 5, log
    record = json.loads(play.volume_file("/test_data", ".airgap-eval/sync-status.json"))
    assert record["state"] == "failed" and record["error"]["code"] == "UNREACHABLE", record
    assert staged.endpoint in record["error"]["message"]
    assert "[UNREACHABLE]" in log.strip().splitlines()[-1], log
    assert staged.secret_key not in log
    for name in ("adapter", "results-sidecar"):
        state = podman("inspect", "--format", "{{.State.StartedAt}}", play.container(name),
                       check=False)  # fmt: skip
        assert state.returncode != 0 or state.stdout.strip().startswith("0001-01-01"), name
    print(f"\nS3 down: sync exit 5 in {seconds:.1f} s (play included): {log.strip()[-300:]}")

    # weed answers InternalError for a while after a restart (its volume server is not up
    # yet): the rerun is for an S3 that is back, as an operator's would be.
    s3, where = client(staged.connection()), kubeplay.places()
    end = time.monotonic() + 120
    while True:
        try:
            s3.get_object(Bucket=where.data_bucket, Key=f"{where.data_prefix}/manifest.json")
            break
        except Exception:
            assert time.monotonic() < end, "SeaweedFS did not serve objects again in 120 s"
            time.sleep(1)
    again = play_for("http://127.0.0.1:9/v1")
    again.play(check=False)
    assert again.exit_code("sync", 120) == 0, podman("logs", again.container("sync")).stderr
    record = json.loads(again.volume_file("/test_data", ".airgap-eval/sync-status.json"))
    assert record["state"] == "completed", record
