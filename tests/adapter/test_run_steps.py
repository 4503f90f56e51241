"""The run path does each thing once: the task index is read once, each bundle is loaded
once (preflight's load is what lm_eval gets through the seam), and the job still completes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.adapter.conftest import REPO, write_spec
from tests.stub_openai import Fault, stub_server

# Counts the files the CLI opens (audit hook), then runs it.
SCRIPT = """
import json, os, sys
opened = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        name = os.fsdecode(args[0])
        if name.endswith("dataset_dict.json") or "task-index" in name:
            opened.append(name)
sys.addaudithook(hook)
from adapter.cli import main
code = main(sys.argv[1:])
print("OPENED=" + json.dumps(opened))
sys.exit(code)
"""


def test_one_index_read_and_one_load_per_bundle(test_data: Path, tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "AIRGAP_EVAL_", "EVALHUB_", "OPENAI_", "NLTK_"))
    }
    env |= {
        "AIRGAP_EVAL_WORK_DIR": str(tmp_path / "work"),
        "AIRGAP_EVAL_OUTPUT_DIR": str(tmp_path / "results"),
    }
    with stub_server(Fault(echo_logprobs=True)) as url:
        spec = write_spec(tmp_path / "job.json", url, ["arc_easy"])
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, "--job-spec", str(spec), "--test-data", str(test_data)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("OPENED="))
    opened = json.loads(line[len("OPENED=") :])
    bundle = [p for p in opened if "allenai--ai2_arc--ARC-Easy" in p]
    assert len(bundle) == 1, opened
    assert len([p for p in opened if "task-index" in p]) == 1, opened


# Records which late modules are imported when the run reaches evaluate (the first model
# request goes out inside it) and when the run is over.
LATE = ("evalhub", "adapter.events", "common.exports", "pytablewriter")
SNAPSHOT_SCRIPT = f"""
import json, sys
from adapter import run
seen = {{}}
evaluate = run.Run.evaluate
def at_evaluate(self, *args):
    seen["evaluate"] = [m for m in {LATE!r} if m in sys.modules]
    return evaluate(self, *args)
run.Run.evaluate = at_evaluate
from adapter.cli import main
code = main(sys.argv[1:])
seen["end"] = [m for m in {LATE!r} if m in sys.modules]
print("SEEN=" + json.dumps(seen))
sys.exit(code)
"""


def test_eval_hub_sdk_and_the_results_writers_wait_until_after_the_first_request(
    test_data: Path, tmp_path: Path
) -> None:
    """A job with nothing for eval-hub-sdk to do before its first request (no callback URL,
    no model auth: `Job.sdk_first`) imports the SDK (~0.3 s) and lm_eval's table writer at
    publish; the job still completes with EvalHub's metrics."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "AIRGAP_EVAL_", "EVALHUB_", "OPENAI_", "NLTK_"))
    }
    out = tmp_path / "results"
    env |= {"AIRGAP_EVAL_WORK_DIR": str(tmp_path / "work"), "AIRGAP_EVAL_OUTPUT_DIR": str(out)}
    with stub_server(Fault(echo_logprobs=True)) as url:
        spec = write_spec(tmp_path / "job.json", url, ["arc_easy"])
        proc = subprocess.run(
            [sys.executable, "-c", SNAPSHOT_SCRIPT, "--job-spec", str(spec),
             "--test-data", str(test_data)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("SEEN="))
    seen = json.loads(line[len("SEEN=") :])
    assert seen["evaluate"] == [], seen
    assert set(seen["end"]) == set(LATE), seen
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "completed" and "acc" in status["metrics"], status
