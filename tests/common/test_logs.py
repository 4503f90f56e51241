"""No third-party noise on a clean run: the libraries' own switches, set by setup_logging
before they are imported, in a fresh process whose stderr is a pipe (as in `kubectl logs`)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

SCRIPT = """
from common.logs import setup_logging
setup_logging()
import transformers  # the "PyTorch was not found" notice, on import
import datasets
from lm_eval.api.model import LM  # lm_eval's bars are plain tqdm
from tqdm import tqdm
list(tqdm(range(50), desc="plain tqdm"))
ds = datasets.Dataset.from_dict({"x": list(range(50))})
ds.map(lambda r: r)  # datasets' "Map:" bar
print("done")
"""

QUIET = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS",
         "TRANSFORMERS_NO_ADVISORY_WARNINGS", "HF_HUB_VERBOSITY")  # fmt: skip


def _run(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in QUIET and k != "AIRGAP_EVAL_DEBUG"}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env | extra_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_clean_run_without_a_terminal_has_no_bars_and_no_torch_notice() -> None:
    proc = _run({})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "done"
    assert "\r" not in proc.stderr
    assert "it/s" not in proc.stderr and "Map" not in proc.stderr
    assert "PyTorch was not found" not in proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch installed")
def test_debug_keeps_the_libraries_warnings() -> None:
    """The switches are ours to set, not to hide: AIRGAP_EVAL_DEBUG=1 shows the notice again."""
    proc = _run({"AIRGAP_EVAL_DEBUG": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PyTorch was not found" in proc.stderr
