"""Slugs: the DEVELOPERS examples, aliases, case, data_files determinism; the `slugs` CLI
over the real lm_eval 0.4.13 configs; docs/dataset-mapping.md is what the command prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.bundles import locate
from tasks.slugs import candidates, slug
from tests.staging.test_stage import REPO, run_cli

CASES: list[tuple[str, str | None, Any, str, list[str]]] = [
    # dataset_path, dataset_name, data_files, slug, legacy aliases
    ("Rowan/hellaswag", None, None, "Rowan--hellaswag", ["hellaswag"]),
    ("allenai/ai2_arc", "ARC-Easy", None, "allenai--ai2_arc--ARC-Easy", ["ai2_arc--ARC-Easy"]),
    (
        "nyu-mll/blimp",
        "adjunct_island",
        None,
        "nyu-mll--blimp--adjunct_island",
        ["blimp--adjunct_island"],
    ),
    ("hellaswag", None, None, "hellaswag", []),  # an old config's name: no alias of its own
    ("blimp", "adjunct_island", None, "blimp--adjunct_island", []),
    ("openai/gsm8k", "main", None, "openai--gsm8k--main", ["gsm8k--main"]),
]


@pytest.mark.parametrize(("path", "name", "files", "expected", "aliases"), CASES)
def test_slug_table(
    path: str, name: str | None, files: Any, expected: str, aliases: list[str]
) -> None:
    assert slug(path, name, files) == expected
    assert candidates(path, name, files) == [expected, *aliases]


def test_case_sensitive() -> None:
    assert slug("Rowan/hellaswag") != slug("rowan/hellaswag")
    assert slug("allenai/ai2_arc", "ARC-Easy") != slug("allenai/ai2_arc", "arc-easy")


def test_data_files_suffix_is_deterministic() -> None:
    a = {"train": "x/train.jsonl", "test": "x/test.jsonl"}
    b = {"test": "x/test.jsonl", "train": "x/train.jsonl"}  # same mapping, other key order
    assert slug("json", None, a) == slug("json", None, b)
    assert slug("json", None, a).startswith("json--files-") and len(slug("json", None, a)) == 20
    assert slug("json", None, a) != slug("json", None, {"train": "x/train.jsonl"})
    assert slug("json", None, a) != slug("json", None, None)


def test_locate_prefers_slug_then_alias(tmp_path: Path) -> None:
    (tmp_path / "hellaswag").mkdir()
    (tmp_path / "hellaswag" / "dataset_dict.json").write_text("{}")
    found = locate(tmp_path, "Rowan/hellaswag")
    assert (found.slug, found.path) == ("Rowan--hellaswag", tmp_path / "hellaswag")
    (tmp_path / "Rowan--hellaswag").mkdir()
    (tmp_path / "Rowan--hellaswag" / "dataset_dict.json").write_text("{}")
    assert locate(tmp_path, "Rowan/hellaswag").path == tmp_path / "Rowan--hellaswag"
    assert locate(tmp_path, "ROWAN/HELLASWAG").path is None  # case-sensitive, alias too


def test_slugs_cli_real_configs() -> None:
    r = run_cli("slugs", "hellaswag", "arc_easy", "blimp_adjunct_island", "gsm8k")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        "Rowan--hellaswag",
        "allenai--ai2_arc--ARC-Easy",
        "nyu-mll--blimp--adjunct_island",
        "openai--gsm8k--main",
    ]
    r = run_cli("slugs", "blimp")
    assert len(r.stdout.split()) == 67
    r = run_cli("slugs", "--markdown", "arc_challenge")
    assert "| arc_challenge | allenai/ai2_arc | ARC-Challenge |" in r.stdout
    r = run_cli("slugs", "no_such_task")
    assert r.returncode == 2 and "no_such_task" in r.stderr


def test_mapping_doc_is_generated() -> None:
    r = run_cli("slugs", "--mapping-doc")
    assert r.returncode == 0, r.stderr
    committed = (REPO / "docs" / "dataset-mapping.md").read_text()
    assert r.stdout == committed, (
        "docs/dataset-mapping.md is stale: regenerate it with "
        "`airgap-eval slugs --mapping-doc > docs/dataset-mapping.md`"
    )
    assert "## mmlu\n\n57 task(s), 57 bundle(s)." in committed
    assert "## blimp\n\n67 task(s), 67 bundle(s)." in committed
