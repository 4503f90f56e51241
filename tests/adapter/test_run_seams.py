"""The offline env (set before imports), the load_dataset seam, the egress guard and the
status heartbeat, each against the real library it wraps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapter import egress, offline, seam
from adapter.outputs import StatusWriter, wait_uploaded, write_done
from common.errors import EgressBlocked, MissingDataError
from common.status import StatusRecord, read_status

REPO = Path(__file__).resolve().parents[2]
ARC = "allenai--ai2_arc--ARC-Easy"


# --- offline env -------------------------------------------------------------------------


def test_detect_follows_the_offline_rules(tmp_path: Path, tiny_tree: Path) -> None:
    assert offline.detect(tiny_tree).offline  # manifest.json
    bundles = tmp_path / "bundles"
    shutil.copytree(tiny_tree / ARC, bundles / ARC)
    assert offline.detect(bundles).offline  # a bundle dir, no manifest
    tok_root = tmp_path / "tok_only"
    (tok_root / "tokenizer").mkdir(parents=True)
    # custom data and a Hub tokenizer: a connected cluster's tree, online
    layout = offline.detect(tok_root, "gpt2")
    assert not layout.offline and "nothing points at offline" in layout.reason
    assert not offline.detect(tmp_path / "absent").offline
    # the job's tokenizer under the dir (EvalHub's trigger), absolute or relative
    assert offline.detect(tok_root, str(tok_root / "tokenizer")).offline
    assert offline.detect(tok_root, str(tok_root / "not-synced-yet")).offline
    assert offline.detect(tok_root, "tokenizer").offline
    # an empty dir (a fresh volume's lost+found and our state dir are not data)
    empty = tmp_path / "empty"
    (empty / "lost+found").mkdir(parents=True)
    layout = offline.detect(empty, "gpt2")
    assert layout.offline and "empty" in layout.reason
    # a sync status record: a sync ran here, whatever it left
    synced = tmp_path / "synced"
    (synced / ".airgap-eval").mkdir(parents=True)
    (synced / ".airgap-eval" / "sync-status.json").write_text("{}")
    (synced / "custom.txt").write_text("x")
    assert offline.detect(synced, "gpt2").offline
    # the flag decides when given
    assert not offline.detect(tiny_tree, requested="off").offline
    assert offline.detect(tok_root, "gpt2", requested="on").reason == "--offline on"


def test_offline_env_is_set_before_the_libraries_import(tiny_tree: Path, tmp_path: Path) -> None:
    """In a fresh interpreter, as in the pod: the libraries must see the variables."""
    code = f"""
import json, sys
from pathlib import Path
from adapter import offline
layout = offline.detect(Path({str(tiny_tree)!r}))
offline.apply(layout, Path({str(tiny_tree)!r}), Path({str(tmp_path / "work")!r}), allow_code=False)
import datasets, huggingface_hub.constants as hc, transformers.utils.hub as th
print(json.dumps({{
    "datasets_offline": datasets.config.HF_HUB_OFFLINE,
    "hub_offline": hc.HF_HUB_OFFLINE,
    "datasets_cache": str(datasets.config.HF_DATASETS_CACHE),
    "trust_remote_code": __import__('os').environ["HF_DATASETS_TRUST_REMOTE_CODE"],
    "code_eval": __import__('os').environ["HF_ALLOW_CODE_EVAL"],
    "nltk": __import__('os').environ["NLTK_DATA"],
}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["datasets_offline"] is True and got["hub_offline"] is True
    assert got["datasets_cache"].startswith(str(tmp_path / "work"))
    assert (got["trust_remote_code"], got["code_eval"]) == ("0", "0")
    assert got["nltk"] == str(tiny_tree / "nltk_data")


def test_applying_after_an_import_is_refused() -> None:
    code = (
        "import datasets\nfrom pathlib import Path\nfrom adapter import offline\n"
        "offline.apply(offline.Layout(True, 't'), Path('/x'), Path('/tmp/w'), False)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "imported before the offline env" in proc.stderr


# --- the seam ------------------------------------------------------------------------------


@pytest.fixture
def installed(test_data: Path) -> Iterator[Path]:
    seam.install(test_data)
    try:
        yield test_data
    finally:
        seam.uninstall()


def test_the_seam_serves_the_slug_dir_and_honours_split(installed: Path) -> None:
    import datasets

    dd = datasets.load_dataset("allenai/ai2_arc", "ARC-Easy")
    assert set(dd) == {"train", "validation", "test"}
    test = datasets.load_dataset("allenai/ai2_arc", "ARC-Easy", split="test")
    assert test.num_rows == dd["test"].num_rows
    head = datasets.load_dataset(path="allenai/ai2_arc", name="ARC-Easy", split="test[:2]")
    assert head.num_rows == 2


def test_the_seam_accepts_the_legacy_alias(installed: Path) -> None:
    import datasets

    (installed / "Rowan--hellaswag").rename(installed / "hellaswag")
    assert "validation" in datasets.load_dataset("Rowan/hellaswag")


def test_a_missing_dataset_names_the_dirs_tried(installed: Path) -> None:
    import datasets

    with pytest.raises(MissingDataError) as e:
        datasets.load_dataset("baber/piqa")
    assert "baber--piqa" in e.value.message and "airgap-eval stage" in (e.value.hint or "")


def test_a_corrupt_bundle_is_missing_data(installed: Path) -> None:
    import datasets

    (installed / ARC / "dataset_dict.json").write_text("{broken")
    with pytest.raises(MissingDataError, match="cannot be read"):
        datasets.load_dataset("allenai/ai2_arc", "ARC-Easy")


def test_read_only_test_data_works_and_stays_untouched(installed: Path) -> None:
    import datasets

    before = sorted(str(p) for p in installed.rglob("*"))
    for p in [installed, *installed.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        ds = datasets.load_dataset("allenai/ai2_arc", "ARC-Easy", split="test")
        mapped = ds.map(lambda r: {"q": r["question"].upper()})  # process_docs does this
        assert mapped[0]["q"].isupper()
        assert sorted(str(p) for p in installed.rglob("*")) == before
    finally:
        for p in [installed, *installed.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


# Imports transformers as the run's heavy-import thread does (with the seam, or without),
# then prints how many dirs its model-table scan read and the table transformers.models got.
SCAN_SCRIPT = """
import json, os, sys
import transformers.utils.import_utils as iu
if sys.argv[1] == "seam":
    from adapter import seam
    seam.share_models_scan()
from transformers import AutoTokenizer, PreTrainedTokenizerFast
import transformers.models as m
dirs = sum(1 for d, _, _ in os.walk(os.path.dirname(m.__file__)) if "__pycache__" not in d)
print(json.dumps({"dirs": dirs, "reads": iu.create_import_structure_from_path.cache_info().misses,
                  "table": sorted(m._class_to_module.items())}))
"""


def _scan(mode: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", SCAN_SCRIPT, mode],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_transformers_reads_its_model_files_once_with_the_same_table() -> None:
    with_seam, without = _scan("seam"), _scan("plain")
    # each model dir read once (+ the auto subpackage's own ask), where it was twice (0.27 s)
    assert with_seam["dirs"] <= with_seam["reads"] <= with_seam["dirs"] + 5, with_seam["reads"]
    assert with_seam["table"] == without["table"]
    assert len(with_seam["table"]) > 1000


def test_templates_are_compiled_once_and_render_as_lm_eval_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lm_eval.utils

    shipped = lm_eval.utils.apply_template
    monkeypatch.setattr(lm_eval.utils, "apply_template", shipped)  # restored afterwards
    compiled: list[str] = []
    from_string = lm_eval.utils.env.from_string

    def counting(source: str) -> Any:
        compiled.append(source)
        return from_string(source)

    monkeypatch.setattr(lm_eval.utils.env, "from_string", counting)
    seam.compile_templates_once()
    seam.compile_templates_once()  # idempotent: one cache
    template = "Question: {{question | regex_replace('  ', ' ')}}\nAnswer:{{' ' + answer}}"
    docs = [{"question": f"q{i}  ?", "answer": str(i)} for i in range(5)]
    ours = [lm_eval.utils.apply_template(template, d) for d in docs]
    assert ours == [shipped(template, d) for d in docs]
    assert compiled.count(template) == 1 + len(docs)  # ours once, lm_eval's once per doc


# --- the egress guard ------------------------------------------------------------------------


@pytest.fixture
def guard() -> Iterator[None]:
    egress.enable(["http://127.0.0.1:9/v1"])
    try:
        yield
    finally:
        egress.disable()


def test_egress_to_another_host_fails_at_once_naming_it(guard: None) -> None:
    import requests

    start = time.monotonic()
    with pytest.raises(EgressBlocked) as e:
        requests.get("https://huggingface.co/api/datasets/openai/gsm8k", timeout=30)
    assert time.monotonic() - start < 2
    assert "huggingface.co:443" in e.value.message
    assert "huggingface.co:443" in egress.blocked


def test_the_model_host_and_loopback_stay_reachable(guard: None) -> None:
    import requests

    with pytest.raises(requests.ConnectionError):  # refused by the OS, not by the guard
        requests.get("http://127.0.0.1:9/v1/models", timeout=5)
    with pytest.raises(requests.ConnectionError):
        requests.get("http://localhost:9/", timeout=5)


# --- outputs ---------------------------------------------------------------------------------


def test_the_heartbeat_refreshes_status_json(tmp_path: Path) -> None:
    record = StatusRecord(component="run")
    beats = iter(range(1000))
    writer = StatusWriter(
        tmp_path, record, heartbeat_s=0.05, progress=lambda: {"arc_easy": {"done": next(beats)}}
    )
    writer.start()
    try:
        first = read_status(tmp_path / "status.json")
        time.sleep(0.5)
        later = read_status(tmp_path / "status.json")
    finally:
        writer.stop()
    assert first is not None and later is not None
    assert later.updated_at > first.updated_at
    assert later.progress["arc_easy"]["done"] > first.progress["arc_easy"]["done"]


def test_done_marker_and_bounded_wait_for_uploaded(tmp_path: Path) -> None:
    write_done(tmp_path, 9)
    assert (tmp_path / "done").read_text() == "9\n"
    start = time.monotonic()
    assert not wait_uploaded(tmp_path, 0.3)
    assert 0.3 <= time.monotonic() - start < 2
    (tmp_path / "uploaded").touch()
    assert wait_uploaded(tmp_path, 5)
