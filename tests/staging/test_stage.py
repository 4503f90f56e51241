"""`airgap-eval stage`: custom lm_eval task YAMLs over local json/csv data (the Hub is not
reachable here), a tiny local tokenizer, the real task index, real datasets, real SeaweedFS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.errors import ConfigError
from common.layout import MANIFEST_NAME, TOKENIZER_DIR_NAME
from common.manifest import Manifest, mismatches
from staging.stage import PARTIAL_MANIFEST, stage
from tasks.index import load_index, resolve_tasks
from tasks.plan import plan_tasks
from tasks.slugs import slug

REPO = Path(__file__).resolve().parents[2]

QA_ROWS = {
    split: [
        {"question": f"{split} question {i}?", "choices": ["red", "blue", "green"], "answer": i % 3}
        for i in range(n)
    ]
    for split, n in (("train", 6), ("validation", 4), ("test", 5))
}
CSV_ROWS = {"train": [("the cat sat", 1), ("cat the sat", 0)], "test": [("a dog ran", 1)]}
MC = """output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write_custom_tasks(root: Path) -> Path:
    """Task YAMLs (returned dir, for include_path) over local data files:
    stg_qa (json + data_files), stg_csv (csv + data_files), stg_folder (a local folder),
    stg_nltk (same data as stg_qa; its utils.py downloads punkt_tab, as ifeval's does),
    and the group stg_suite = stg_qa + stg_csv + stg_folder."""
    data, tasks = root / "data", root / "tasks"
    qa = {s: _jsonl(data / "qa" / f"{s}.jsonl", rows) for s, rows in QA_ROWS.items()}
    (data / "csv").mkdir(parents=True)
    csv = {}
    for s, rows in CSV_ROWS.items():
        p = data / "csv" / f"{s}.csv"
        p.write_text("sentence,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
        csv[s] = str(p)
    folder = data / "folder_ds"
    for s in ("train", "test"):
        _jsonl(folder / f"{s}.jsonl", QA_ROWS[s])
    (tasks / "nltk_task").mkdir(parents=True)

    def qa_yaml(name: str) -> str:
        files = json.dumps(qa)
        return (
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files: {files}\n"
            "training_split: train\nvalidation_split: validation\ntest_split: test\n" + MC
        )

    (tasks / "stg_qa.yaml").write_text(qa_yaml("stg_qa"))
    (tasks / "nltk_task" / "stg_nltk.yaml").write_text(qa_yaml("stg_nltk"))
    (tasks / "nltk_task" / "utils.py").write_text(
        'import nltk\n\ntry:\n    nltk.data.find("tokenizers/punkt_tab")\n'
        'except LookupError:\n    nltk.download("punkt_tab")\n'
    )
    (tasks / "stg_csv.yaml").write_text(
        f"task: stg_csv\ndataset_path: csv\ndataset_kwargs:\n  data_files: {json.dumps(csv)}\n"
        "training_split: train\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{sentence}}"\ndoc_to_choice: ["no", "yes"]\ndoc_to_target: label\n'
        "metric_list:\n  - metric: acc\n"
    )
    (tasks / "stg_folder.yaml").write_text(
        f"task: stg_folder\ndataset_path: {folder}\ntraining_split: train\ntest_split: test\n" + MC
    )
    (tasks / "_stg_suite.yaml").write_text(
        "group: stg_suite\ntask:\n  - stg_qa\n  - stg_csv\n  - stg_folder\n"
        "aggregate_metric_list:\n  - metric: acc\n"
    )
    return tasks


def qa_slug(tasks_dir: Path) -> str:
    data = tasks_dir.parent / "data" / "qa"
    return slug("json", None, {s: str(data / f"{s}.jsonl") for s in QA_ROWS})


@pytest.fixture(scope="session")
def custom_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_custom_tasks(tmp_path_factory.mktemp("custom"))


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from testbed.tiny import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("tok") / "tiny-tok")


@pytest.fixture(scope="session")
def nltk_src(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local nltk data dir holding punkt_tab (stage copies it; no download here)."""
    root = tmp_path_factory.mktemp("nltk")
    (root / "tokenizers" / "punkt_tab" / "english").mkdir(parents=True)
    (root / "tokenizers" / "punkt_tab" / "english" / "collocations.tab").write_text("a\tb\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NLTK_DATA", str(root))
        yield root


@pytest.fixture(scope="session")
def staged(
    tmp_path_factory: pytest.TempPathFactory, custom_tasks: Path, tok_dir: Path, nltk_src: Path
) -> Path:
    """One staged tree for the suite + the nltk task; tests that change it copy it."""
    out = tmp_path_factory.mktemp("staged") / "test_data"
    stage(["stg_suite", "stg_nltk"], str(tok_dir), out, include_path=[custom_tasks])
    return out


@pytest.fixture
def staged_copy(staged: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(staged, tmp_path / "test_data"))


def count_loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    import datasets

    calls: list[tuple[Any, ...]] = []
    real = datasets.load_dataset

    def counting(path: str, name: str | None = None, **kw: Any) -> Any:
        calls.append((path, name, json.dumps(kw.get("data_files"), sort_keys=True)))
        return real(path, name, **kw)

    monkeypatch.setattr(datasets, "load_dataset", counting)
    return calls


def test_plan_groups_leaves_and_detects_assets(custom_tasks: Path) -> None:

    index = load_index(None, [custom_tasks])
    plan = plan_tasks(resolve_tasks(["stg_suite", "stg_nltk"], index), index)
    assert sorted(plan.task_slugs) == ["stg_csv", "stg_folder", "stg_nltk", "stg_qa"]
    # stg_qa and stg_nltk read the same files: one bundle
    assert plan.task_slugs["stg_qa"] == plan.task_slugs["stg_nltk"] == [qa_slug(custom_tasks)]
    assert len(plan.bundles) == 3
    assert plan.nltk == {"punkt_tab": ["stg_nltk"]}
    assert not plan.unresolved and not plan.unknown


def test_stage_writes_bundles_tokenizer_nltk_and_manifest(staged: Path, custom_tasks: Path) -> None:
    import datasets
    from transformers import AutoTokenizer

    m = Manifest.load(staged / MANIFEST_NAME)
    qa = qa_slug(custom_tasks)
    assert m.tasks["stg_qa"] == m.tasks["stg_nltk"] == [qa]
    assert set(m.tasks) == {"stg_qa", "stg_csv", "stg_folder", "stg_nltk"}
    assert {"lm_eval", "datasets", "transformers"} <= set(m.versions)
    assert m.versions["datasets"] == datasets.__version__
    assert m.assets["nltk"] == ["punkt_tab"]
    assert (staged / "nltk_data" / "tokenizers" / "punkt_tab" / "english").is_dir()
    dd = datasets.load_from_disk(str(staged / qa))
    assert {s: dd[s].num_rows for s in dd} == {"train": 6, "validation": 4, "test": 5}
    assert dd["test"][0]["question"] == "test question 0?"
    csv_slug = m.tasks["stg_csv"][0]
    assert datasets.load_from_disk(str(staged / csv_slug))["train"]["label"] == [1, 0]
    tok = AutoTokenizer.from_pretrained(str(staged / TOKENIZER_DIR_NAME), local_files_only=True)
    assert tok("the cat sat")["input_ids"]
    # every file of the tree is in the manifest, and matches it; no staging leftovers
    files = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    assert files - {MANIFEST_NAME} == set(m.files) | {
        f for f in files if f.startswith(".airgap-eval/")
    }
    assert not (staged / ".airgap-eval" / "staging").exists()
    assert mismatches(staged, m) == []


def test_each_dataset_loaded_once(
    custom_tasks: Path, tok_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_loads(monkeypatch)
    stage(
        ["stg_qa", "stg_nltk", "stg_csv"], str(tok_dir), tmp_path / "t", include_path=[custom_tasks]
    )
    assert len(calls) == len(set(calls)) == 2


def test_restage_adds_a_task_without_rewriting_others(
    custom_tasks: Path, tok_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "t"
    stage(["stg_qa"], str(tok_dir), out, include_path=[custom_tasks])
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    first = Manifest.load(out / MANIFEST_NAME)
    calls = count_loads(monkeypatch)
    # no --tokenizer: the one staged before is kept
    result = stage(["stg_qa", "stg_csv"], None, out, include_path=[custom_tasks])
    assert [c[0] for c in calls] == ["csv"]  # only the new dataset was loaded
    assert result.written == [slug("csv", None, json.loads(calls[0][2]))]
    assert qa_slug(custom_tasks) in result.skipped and TOKENIZER_DIR_NAME in result.skipped
    for p, (mtime, data) in before.items():
        if p.name != MANIFEST_NAME:
            assert (p.stat().st_mtime_ns, p.read_bytes()) == (mtime, data), p
    second = Manifest.load(out / MANIFEST_NAME)
    assert set(second.tasks) == {"stg_qa", "stg_csv"}
    assert {k: v for k, v in second.files.items() if k in first.files} == first.files
    assert mismatches(out, second) == []


def test_restage_repairs_a_tampered_bundle(
    custom_tasks: Path, tok_dir: Path, staged_copy: Path
) -> None:
    m = Manifest.load(staged_copy / MANIFEST_NAME)
    arrow = next(n for n in m.files if n.endswith(".arrow") and n.startswith(m.tasks["stg_csv"][0]))
    (staged_copy / arrow).write_bytes(b"garbage")
    result = stage(["stg_csv"], str(tok_dir), staged_copy, include_path=[custom_tasks])
    assert result.written == m.tasks["stg_csv"]
    assert mismatches(staged_copy, Manifest.load(staged_copy / MANIFEST_NAME)) == []


def test_empty_split_bundle_loads(
    tmp_path: Path, tok_dir: Path, custom_tasks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hub datasets can have empty splits (local builders cannot make one): save_to_disk must
    still write a shard for them, or load_from_disk fails."""
    import datasets

    feats = datasets.Features({"question": datasets.Value("string")})
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"question": []}, features=feats),
            "test": datasets.Dataset.from_dict({"question": ["q"]}, features=feats),
        }
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: dd)
    out = tmp_path / "t"
    stage(["stg_folder"], str(tok_dir), out, include_path=[custom_tasks])
    (bundle,) = Manifest.load(out / MANIFEST_NAME).tasks["stg_folder"]
    loaded = datasets.load_from_disk(str(out / bundle))
    assert (loaded["train"].num_rows, loaded["test"].num_rows) == (0, 1)


def test_unknown_task_is_a_config_error(custom_tasks: Path, tok_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stg_nope"):
        stage(["stg_nope"], str(tok_dir), tmp_path / "t", include_path=[custom_tasks])
    assert not (tmp_path / "t" / MANIFEST_NAME).exists()


def test_missing_data_fails_but_keeps_the_rest(
    tmp_path: Path, tok_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "c"
    tasks = write_custom_tasks(root)
    shutil.move(root / "data" / "csv", tmp_path / "csv-aside")
    out = tmp_path / "t"
    from common.errors import AirgapError

    with pytest.raises(AirgapError, match="csv") as err:
        stage(["stg_qa", "stg_csv"], str(tok_dir), out, include_path=[tasks])
    assert err.value.exit_code != 0 and err.value.hint
    # no manifest.json claims a complete tree; what did stage is recorded for the rerun
    assert not (out / MANIFEST_NAME).exists()
    m = Manifest.load(out / PARTIAL_MANIFEST)
    assert set(m.tasks) == {"stg_qa"}
    kept = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "stg" in str(p)}

    shutil.move(tmp_path / "csv-aside", root / "data" / "csv")
    result = stage(["stg_qa", "stg_csv"], str(tok_dir), out, include_path=[tasks])
    assert set(Manifest.load(out / MANIFEST_NAME).tasks) == {"stg_qa", "stg_csv"}
    assert not (out / PARTIAL_MANIFEST).exists()
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # the rest was kept
    assert result.skipped and not mismatches(out, result.manifest)


def test_a_failed_restage_that_rewrote_nothing_keeps_the_complete_claim(
    tmp_path: Path, tok_dir: Path
) -> None:
    root = tmp_path / "c"
    tasks = write_custom_tasks(root)
    out = tmp_path / "t"
    stage(["stg_qa"], str(tok_dir), out, include_path=[tasks])
    before = (out / MANIFEST_NAME).read_bytes()
    shutil.rmtree(root / "data" / "csv")
    from common.errors import AirgapError

    with pytest.raises(AirgapError, match="csv"):
        stage(["stg_qa", "stg_csv"], str(tok_dir), out, include_path=[tasks])
    # the tree it lists is unchanged and complete: it claims no more than it holds
    assert (out / MANIFEST_NAME).read_bytes() == before


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airgap_eval.cli", *args],
        capture_output=True,
        text=True,
        env=os.environ | (env or {}),
        cwd=REPO,
        timeout=300,
    )


def test_stage_upload_sync_verify(
    custom_tasks: Path,
    tok_dir: Path,
    nltk_src: Path,
    tmp_path: Path,
    bucket: str,
    s3_env: dict[str, str],
) -> None:
    """The user's path: stage + upload on the connected side, sync + verify in the pod."""
    tasks_file = tmp_path / "tasks.txt"
    tasks_file.write_text("# the job's tasks\nstg_suite\nstg_nltk\n")
    out = tmp_path / "staged"
    r = run_cli(
        "stage",
        "--from-file",
        str(tasks_file),
        "--tokenizer",
        str(tok_dir),
        "--out",
        str(out),
        "--include-path",
        str(custom_tasks),
        "--upload",
        f"s3://{bucket}/suite/v1",
    )
    assert r.returncode == 0, r.stderr
    dest = tmp_path / "test_data"
    r = run_cli(
        "sync",
        "--bucket",
        bucket,
        "--prefix",
        "suite/v1",
        "--dest",
        str(dest),
        "--endpoint",
        s3_env["AWS_S3_ENDPOINT"],
    )
    assert r.returncode == 0, r.stderr
    assert (dest / MANIFEST_NAME).read_bytes() == (out / MANIFEST_NAME).read_bytes()
    r = run_cli(
        "verify", str(dest), "--tasks", "stg_suite", "stg_nltk", "--include-path", str(custom_tasks)
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for task in ("stg_qa", "stg_csv", "stg_folder", "stg_nltk", "(tokenizer)"):
        assert any(
            line.split()[:1] == [task] and " ok" in line for line in r.stdout.splitlines()
        ), r.stdout


def test_upload_drops_the_old_manifest_first(
    staged: Path, bucket: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed upload must not leave an old manifest beside half-new files."""
    from common.errors import UploadError
    from common.s3 import Boto3Storage, client
    from common.s5cmd import S5cmdStorage
    from staging import stage as stage_mod

    conn = s3_server.connection()
    s3 = client(conn)
    s3.put_object(Bucket=bucket, Key="p/manifest.json", Body=b"{}")

    def broken(*a: Any, **k: Any) -> None:
        raise UploadError("network gone", "retry")

    monkeypatch.setattr(S5cmdStorage, "upload", broken)
    monkeypatch.setattr(Boto3Storage, "upload", broken)
    with pytest.raises(UploadError):
        stage_mod.upload_tree(
            staged, Manifest.load(staged / MANIFEST_NAME), f"s3://{bucket}/p", conn
        )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="p/").get("Contents", [])]
    assert "p/manifest.json" not in keys


def test_upload_boto3_fallback_puts_manifest_last(
    staged: Path, bucket: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.s3 import client
    from staging import stage as stage_mod

    monkeypatch.setattr("common.s5cmd.find_binary", lambda: None)
    conn = s3_server.connection()
    m = Manifest.load(staged / MANIFEST_NAME)
    stage_mod.upload_tree(staged, m, f"s3://{bucket}/b3", conn)
    s3 = client(conn)
    objs = s3.list_objects_v2(Bucket=bucket, Prefix="b3/")["Contents"]
    assert {o["Key"][3:] for o in objs} == set(m.files) | {MANIFEST_NAME}
    manifest_time = next(o["LastModified"] for o in objs if o["Key"] == "b3/manifest.json")
    assert all(o["LastModified"] <= manifest_time for o in objs)


def test_upload_bad_credentials_is_auth_error(staged: Path, bucket: str, s3_server: Any) -> None:
    from common.errors import AuthError
    from staging.stage import upload_tree

    conn = s3_server.connection(secret_key="wrong-secret")
    with pytest.raises(AuthError):
        upload_tree(staged, Manifest.load(staged / MANIFEST_NAME), f"s3://{bucket}/x", conn)


def test_cli_stage_without_tasks_exits_config(tmp_path: Path) -> None:
    r = run_cli("stage", "--out", str(tmp_path / "t"), "--tokenizer", "x")
    assert r.returncode == 2, r.stderr
    assert "no task given" in r.stderr
