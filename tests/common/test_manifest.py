from pathlib import Path

from common.layout import STATE_DIR_NAME
from common.manifest import Manifest, build_manifest, mismatches


def _tree(root: Path) -> None:
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.arrow").write_bytes(b"x" * 3000)
    (root / "empty.json").write_bytes(b"")
    (root / STATE_DIR_NAME).mkdir()
    (root / STATE_DIR_NAME / "state.json").write_text("{}")


def test_manifest_round_trip_and_clean_tree(tmp_path: Path) -> None:
    _tree(tmp_path)
    m = build_manifest(tmp_path, tasks={"t": ["a"]})
    assert set(m.files) == {"a/x.arrow", "empty.json"}  # our state dir is not data
    assert m.files["empty.json"].size == 0
    m.dump(tmp_path / "manifest.json")
    loaded = Manifest.load(tmp_path / "manifest.json")
    assert loaded == m
    assert mismatches(tmp_path, loaded) == []


def test_mismatches_name_each_file(tmp_path: Path) -> None:
    _tree(tmp_path)
    m = build_manifest(tmp_path)
    (tmp_path / "a" / "x.arrow").write_bytes(b"y" * 3000)  # same size, other bytes
    (tmp_path / "empty.json").unlink()
    problems = mismatches(tmp_path, m)
    assert any(p.startswith("a/x.arrow: sha256") for p in problems)
    assert "empty.json: missing" in problems
