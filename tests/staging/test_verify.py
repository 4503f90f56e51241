"""`airgap-eval verify`: a staged tree of custom local tasks, then broken in the ways a real
one breaks: a subtask of a group missing, a file tampered with, a bundle from a newer
datasets, a split missing, an unreadable tokenizer."""

# ruff: noqa: F811  (the staged-tree fixtures are imported from test_stage and used as args)
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from common.errors import ExitCode
from common.layout import MANIFEST_NAME, TOKENIZER_DIR_NAME
from common.manifest import Manifest, build_manifest
from common.status import read_status
from staging.verify import TOKENIZER_ITEM, verify
from tests.staging.test_stage import (  # noqa: F401
    custom_tasks,
    nltk_src,
    run_cli,
    staged,
    staged_copy,
    tok_dir,
)

SUITE = ["stg_suite", "stg_nltk"]


def statuses(report: object) -> dict[str, str]:
    return {i.task: i.status for i in report.items}  # type: ignore[attr-defined]


def test_verify_ok(staged: Path, custom_tasks: Path) -> None:
    report = verify(staged, SUITE, include_path=[custom_tasks])
    assert report.ok, report.table()
    assert statuses(report) == {
        "stg_qa": "ok",
        "stg_csv": "ok",
        "stg_folder": "ok",
        "stg_nltk": "ok",
        TOKENIZER_ITEM: "ok",
    }
    assert report.fix_command is None


def test_missing_subtask_of_a_group(staged_copy: Path, custom_tasks: Path) -> None:
    csv_slug = Manifest.load(staged_copy / MANIFEST_NAME).tasks["stg_csv"][0]
    shutil.rmtree(staged_copy / csv_slug)
    report = verify(staged_copy, ["stg_suite"], include_path=[custom_tasks])
    assert statuses(report)["stg_csv"] == "missing"
    assert [i.task for i in report.problems] == ["stg_csv"]
    assert report.fix_command is not None
    assert report.fix_command.startswith("airgap-eval stage stg_csv --tokenizer ")
    assert f"--out {staged_copy}" in report.fix_command
    assert f"--include-path {custom_tasks}" in report.fix_command

    r = run_cli(
        "verify", str(staged_copy), "--tasks", "stg_suite", "--include-path", str(custom_tasks)
    )
    assert r.returncode == ExitCode.MISSING_DATA, r.stderr
    assert "stg_csv" in r.stdout and "missing" in r.stdout
    assert "airgap-eval stage stg_csv" in r.stderr
    status = read_status(staged_copy / ".airgap-eval" / "verify-status.json")
    assert status is not None and status.state == "failed"
    assert status.exit_code == ExitCode.MISSING_DATA


def test_fix_command_repairs_the_tree(staged_copy: Path, custom_tasks: Path) -> None:
    """The printed command is the real fix: run it, then verify passes."""
    import shlex

    csv_slug = Manifest.load(staged_copy / MANIFEST_NAME).tasks["stg_csv"][0]
    shutil.rmtree(staged_copy / csv_slug)
    fix = verify(staged_copy, SUITE, include_path=[custom_tasks]).fix_command
    assert fix is not None
    r = run_cli(*shlex.split(fix)[1:])
    assert r.returncode == 0, r.stderr
    assert verify(staged_copy, SUITE, include_path=[custom_tasks]).ok


def test_tampered_file(staged_copy: Path, custom_tasks: Path) -> None:
    m = Manifest.load(staged_copy / MANIFEST_NAME)
    qa = m.tasks["stg_qa"][0]
    arrow = next(n for n in m.files if n.startswith(f"{qa}/test/") and n.endswith(".arrow"))
    data = bytearray((staged_copy / arrow).read_bytes())
    data[-20] ^= 0xFF  # same size, different bytes: only the hash can tell
    (staged_copy / arrow).write_bytes(bytes(data))
    report = verify(staged_copy, SUITE, include_path=[custom_tasks])
    assert statuses(report)["stg_qa"] == statuses(report)["stg_nltk"] == "mismatch"
    assert statuses(report)["stg_csv"] == "ok"
    assert arrow in next(i.detail for i in report.items if i.task == "stg_qa")
    # without hashes the tamper goes unseen (the init container checked them while syncing)
    assert verify(staged_copy, SUITE, include_path=[custom_tasks], check_hashes=False).ok

    r = run_cli("verify", str(staged_copy), "--tasks", *SUITE, "--include-path", str(custom_tasks))
    assert r.returncode == ExitCode.INTEGRITY, r.stderr


def test_tampered_nltk_data(staged_copy: Path, custom_tasks: Path) -> None:
    f = next((staged_copy / "nltk_data").rglob("*.tab"))
    f.write_text("x\ty\n")
    report = verify(staged_copy, SUITE, include_path=[custom_tasks])
    assert statuses(report)["(nltk data)"] == "mismatch"


def test_bundle_from_a_newer_datasets(staged_copy: Path, custom_tasks: Path) -> None:
    """What datasets 3 sees in a datasets-4 bundle: a feature `_type` it does not know."""
    m = Manifest.load(staged_copy / MANIFEST_NAME)
    csv_slug = m.tasks["stg_csv"][0]
    for info in (staged_copy / csv_slug).glob("*/dataset_info.json"):
        d = json.loads(info.read_text())
        d["features"]["sentence"]["_type"] = "FancyString"
        info.write_text(json.dumps(d))
    newer = build_manifest(
        staged_copy,
        versions=m.versions | {"datasets": "99.0.0"},
        tasks=m.tasks,
        tokenizer=m.tokenizer,
    )
    newer.dump(staged_copy / MANIFEST_NAME)
    report = verify(staged_copy, SUITE, include_path=[custom_tasks])
    item = next(i for i in report.items if i.task == "stg_csv")
    assert item.status == "incompatible"
    assert "FancyString" in item.detail and "99.0.0" in item.detail
    assert statuses(report)["stg_qa"] == "ok"
    r = run_cli(
        "verify", str(staged_copy), "--tasks", "stg_csv", "--include-path", str(custom_tasks)
    )
    assert r.returncode == ExitCode.MISSING_DATA


def test_missing_split(staged_copy: Path, custom_tasks: Path, tmp_path: Path) -> None:
    """A task whose config names a split the bundle lacks (lm_eval would KeyError at build)."""
    extra = tmp_path / "extra"
    extra.mkdir()
    text = (custom_tasks / "stg_csv.yaml").read_text()
    (extra / "stg_csv_dev.yaml").write_text(
        text.replace("task: stg_csv", "task: stg_csv_dev") + "validation_split: dev\n"
    )
    report = verify(staged_copy, ["stg_csv_dev"], include_path=[custom_tasks, extra])
    item = next(i for i in report.items if i.task == "stg_csv_dev")
    assert item.status == "missing" and "dev" in item.detail


def test_tokenizer_unreadable_and_unstaged(staged_copy: Path, custom_tasks: Path) -> None:
    (staged_copy / TOKENIZER_DIR_NAME / "tokenizer.json").write_text("{not json")
    report = verify(staged_copy, ["stg_qa"], include_path=[custom_tasks], check_hashes=False)
    assert statuses(report)[TOKENIZER_ITEM] == "unreadable"
    report = verify(
        staged_copy, ["stg_qa"], tokenizer="org/other-model", include_path=[custom_tasks]
    )
    assert statuses(report)[TOKENIZER_ITEM] == "missing"


def test_staged_tokenizer_found_by_its_source_name(staged: Path, custom_tasks: Path) -> None:
    source = Manifest.load(staged / MANIFEST_NAME).tokenizer
    assert source is not None
    report = verify(staged, ["stg_qa"], tokenizer=source, include_path=[custom_tasks])
    assert statuses(report)[TOKENIZER_ITEM] == "ok"


def test_unknown_task_and_no_manifest(staged_copy: Path, custom_tasks: Path) -> None:
    (staged_copy / MANIFEST_NAME).unlink()
    report = verify(staged_copy, ["stg_qa", "no_such_task"], include_path=[custom_tasks])
    assert statuses(report)["no_such_task"] == "unknown"
    assert statuses(report)["stg_qa"] == "mismatch"  # nothing to check the hashes against
    assert verify(staged_copy, ["stg_qa"], include_path=[custom_tasks], check_hashes=False).ok


def test_legacy_alias_accepted(tmp_path: Path) -> None:
    """A tree written under an older config's name (hellaswag, not Rowan--hellaswag)."""
    import datasets

    feats = datasets.Features({"ctx": datasets.Value("string"), "label": datasets.Value("string")})
    rows = {"ctx": ["a"], "label": ["0"]}
    dd = datasets.DatasetDict(
        {s: datasets.Dataset.from_dict(rows, features=feats) for s in ("train", "validation")}
    )
    dd.save_to_disk(str(tmp_path / "hellaswag"))
    report = verify(tmp_path, ["hellaswag"], check_hashes=False)
    assert [(i.task, i.slug, i.status) for i in report.items] == [("hellaswag", "hellaswag", "ok")]


def test_verify_json_output(staged: Path, custom_tasks: Path, tmp_path: Path) -> None:
    r = run_cli(
        "verify",
        str(staged),
        "--tasks",
        "stg_qa",
        "--include-path",
        str(custom_tasks),
        "--json",
        "--status",
        str(tmp_path / "s.json"),
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is True and {i["task"] for i in data["items"]} == {"stg_qa", TOKENIZER_ITEM}
    status = read_status(tmp_path / "s.json")
    assert status is not None and status.state == "completed"


@pytest.mark.parametrize("task", ["arc_easy", "blimp_adjunct_island", "hellaswag", "gsm8k"])
def test_real_bundles(shared_benchmarks: Path, tmp_path: Path, task: str) -> None:
    """The real rows of ../shared/benchmarks, built as their README says."""
    import subprocess
    import sys

    out = tmp_path / "tree"
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
        timeout=300,
    )
    report = verify(out, [task], check_hashes=False, tokenizer=str(out / "tokenizer"))
    assert report.ok, report.table()
