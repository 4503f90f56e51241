"""The tiny assets are real formats: bundles load with `load_from_disk` and carry the HF
builders' features, the tokenizer loads with transformers, the manifest matches the tree.
(No vLLM needed: these run in the normal suite.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.layout import MANIFEST_NAME
from common.manifest import Manifest, mismatches
from testbed.tiny import TASKS, build_test_data


@pytest.fixture(scope="module")
def test_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_data(tmp_path_factory.mktemp("tiny-data"))


def test_manifest_covers_the_tree_and_names_every_task(test_data: Path) -> None:
    manifest = Manifest.load(test_data / MANIFEST_NAME)
    assert mismatches(test_data, manifest) == []
    assert manifest.tasks == {
        "arc_easy": ["allenai--ai2_arc--ARC-Easy"],
        "blimp_adjunct_island": ["nyu-mll--blimp--adjunct_island"],
        "gsm8k": ["openai--gsm8k--main"],
        "hellaswag": ["Rowan--hellaswag"],
    }
    assert manifest.tokenizer == "tokenizer"
    assert {"datasets", "tokenizers"} <= set(manifest.versions)


def test_bundles_load_with_the_builders_features(test_data: Path) -> None:
    import datasets

    for task, (_, _, splits, _) in TASKS.items():
        slug = Manifest.load(test_data / MANIFEST_NAME).tasks[task][0]
        dd = datasets.load_from_disk(str(test_data / slug))
        assert {s: dd[s].num_rows for s in dd} == {s: len(rows) for s, rows in splits.items()}
    hellaswag = datasets.load_from_disk(str(test_data / "Rowan--hellaswag"))
    assert hellaswag["validation"].features["label"].dtype == "string"  # as the HF builder
    assert hellaswag["test"].num_rows == 0  # empty, yet loadable (num_shards=1)
    blimp = datasets.load_from_disk(str(test_data / "nyu-mll--blimp--adjunct_island"))
    assert blimp["train"].features["pair_id"].dtype == "int32"
    arc = datasets.load_from_disk(str(test_data / "allenai--ai2_arc--ARC-Easy"))
    assert arc["test"][0]["choices"]["label"] == ["A", "B", "C", "D"]


def test_tokenizer_loads_with_transformers_and_round_trips(test_data: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(test_data / "tokenizer"))
    text = "Question: Which animal has feathers?\nAnswer: a robin — über ✓"
    assert tok.decode(tok(text).input_ids) == text  # byte-level: any text encodes
    assert tok.eos_token == "<|endoftext|>"


def test_the_tokenizer_is_deterministic(test_data: Path, tmp_path: Path) -> None:
    again = build_test_data(tmp_path / "again")
    assert (again / "tokenizer" / "tokenizer.json").read_bytes() == (
        test_data / "tokenizer" / "tokenizer.json"
    ).read_bytes()
