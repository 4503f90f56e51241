"""A task whose Python code imports a package the image lacks fails in preflight: one CONFIG
line naming the package and lm_eval's extra that brings it, before any model request."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.errors import ExitCode
from tasks.code import install_hint, missing_packages
from tasks.index import load_index, resolve_tasks
from tests.adapter.conftest import REPO, RunResult, write_spec
from tests.stub_openai import Fault, stub_server

# An install without these packages: a meta-path finder that refuses them, as an image
# without lm-eval's ifeval/math extras would.
BLOCKER = """
import sys

class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _Blocker())
"""


def _blocked_env(tmp_path: Path, blocked: set[str]) -> dict[str, str]:
    site = tmp_path / "blocker"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(BLOCKED=blocked))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "AIRGAP_EVAL_", "EVALHUB_", "OPENAI_", "NLTK_"))
    }
    return env | {
        "PYTHONPATH": f"{site}{os.pathsep}{REPO}",
        "AIRGAP_EVAL_WORK_DIR": str(tmp_path / "work"),
        "AIRGAP_EVAL_OUTPUT_DIR": str(tmp_path / "results"),
    }


@pytest.fixture(scope="module")
def index() -> dict[str, object]:
    return load_index()


def test_the_extras_packages_are_found_in_the_task_code(
    index: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    resolution = resolve_tasks(["ifeval", "leaderboard_math_hard", "arc_easy"], index)
    assert missing_packages(resolution.leaves, index) == {}  # this venv carries the extras

    class Blocker:
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name in {"langdetect", "math_verify"}:
                raise ModuleNotFoundError(name=name)

    monkeypatch.setattr(sys, "meta_path", [Blocker(), *sys.meta_path])
    missing = missing_packages(resolution.leaves, index)
    assert missing["langdetect"] == ["ifeval"]  # through utils -> instructions_registry -> ...
    assert missing["math_verify"] == sorted(
        leaf.name for leaf in resolution.leaves if leaf.name.startswith("leaderboard_math")
    )
    assert set(missing) == {"langdetect", "math_verify"}
    assert install_hint("langdetect") == "pip install 'lm-eval[ifeval]'"
    assert install_hint("math_verify") == "pip install 'lm-eval[math]'"
    assert install_hint("antlr4") == "pip install 'lm-eval[math]'"


def test_a_missing_package_fails_preflight_in_one_line(tiny_tree: Path, tmp_path: Path) -> None:
    env = _blocked_env(tmp_path, {"langdetect"})
    fault = Fault()
    with stub_server(fault) as url:
        spec = write_spec(tmp_path / "job.json", url, ["ifeval"], apply_chat_template=False)
        start = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "adapter",
                "--job-spec",
                str(spec),
                "--test-data",
                str(tiny_tree),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        seconds = time.monotonic() - start
    r = RunResult(proc.returncode, proc.stdout + proc.stderr, tmp_path / "results")
    assert r.code == ExitCode.CONFIG, r.output
    error = r.status.error
    assert error is not None and error.code == "CONFIG"
    assert "langdetect" in error.message and "ifeval" in error.message
    assert "pip install 'lm-eval[ifeval]'" in error.message
    assert "Traceback" not in r.output and "ModuleNotFoundError" not in r.output
    lines = [line for line in r.output.splitlines() if "[CONFIG]" in line]
    assert len(lines) == 1 and "langdetect" in lines[0]
    assert fault.hits == []  # not even the endpoint probe
    assert seconds < 30, seconds  # before the heavy imports (a cold start on 2 busy cores)
