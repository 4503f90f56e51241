"""Acceptance on real benchmark rows (../shared/benchmarks; skipped when absent): bundles built
by its own build_bundles.py pass the adapter's preflight, and every task builds from them
offline through the seam (canonical slugs, and legacy aliases alone), with the egress guard
on and no model. Scoring through vLLM on the same rows is tests/e2e/test_acceptance.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TASKS = ["arc_easy", "arc_challenge", "hellaswag", "piqa", "gsm8k", "blimp_adjunct_island"]

SCRIPT = """
import json, sys
from pathlib import Path
from adapter import egress, offline
test_data, work = Path(sys.argv[1]), Path(sys.argv[2])
tasks = json.loads(sys.argv[3])
offline.apply(offline.detect(test_data), test_data, work, allow_code=False)
egress.enable([])
from adapter import harness, preflight, seam
from tasks.index import load_index, resolve_tasks
from tasks.datacheck import tokenizer_dir
from tasks.plan import plan_tasks
index = load_index()
res = resolve_tasks(tasks, index)
from common.errors import MissingDataError
problems, loaded = [], {}
try:
    manifest = preflight.read_manifest(test_data)
    check = preflight.check_tree(test_data, tasks, plan_tasks(res, index), manifest, [],
                                 tokenizer=None, tok_dir=tokenizer_dir(test_data, None, manifest),
                                 need_tokenizer=False)
    preflight.read_data(test_data, tasks, check, manifest, [])
    loaded = check.data
except MissingDataError as e:
    problems = [e.message]
seam.install(test_data, loaded)
built = harness.build_tasks(tasks, res.folders, {})
docs = {name: len(list(task.eval_docs)) for name, task in built.tasks.items()}
print(json.dumps({"problems": problems, "docs": docs, "blocked": egress.blocked}))
"""


@pytest.fixture(scope="module")
def real_bundles(shared_benchmarks: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real") / "test_data"
    subprocess.run(
        [
            sys.executable,
            str(shared_benchmarks / "build_bundles.py"),
            "--out",
            str(out),
            "--blimp",
            "adjunct_island",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


def _build(test_data: Path, work: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "NLTK_"))}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(test_data), str(work), json.dumps(TASKS)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_real_rows_pass_preflight_and_build_offline(real_bundles: Path, tmp_path: Path) -> None:
    got = _build(real_bundles, tmp_path / "work")
    assert got["problems"] == []
    assert got["blocked"] == []
    docs = got["docs"]
    assert isinstance(docs, dict) and set(docs) == set(TASKS)
    assert all(n > 0 for n in docs.values()), docs


def test_legacy_alias_dirs_alone_serve_the_tasks(real_bundles: Path, tmp_path: Path) -> None:
    test_data = Path(shutil.copytree(real_bundles, tmp_path / "test_data", symlinks=True))
    for canonical, legacy in (
        ("Rowan--hellaswag", "hellaswag"),
        ("nyu-mll--blimp--adjunct_island", "blimp--adjunct_island"),
    ):
        assert (test_data / legacy).is_dir(), f"build_bundles.py wrote no {legacy}"
        shutil.rmtree(test_data / canonical)
    got = _build(test_data, tmp_path / "work")
    assert got["problems"] == []
    docs = got["docs"]
    assert isinstance(docs, dict) and docs["hellaswag"] > 0 and docs["blimp_adjunct_island"] > 0
