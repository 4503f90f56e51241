"""Every key is checked before anything is written: a key that could land outside dest
(or in our state dir) refuses the whole listing, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError, UnsafePathError
from common.s3 import S3Object
from initcontainer.plan import check_keys

UNSAFE = [
    "../escape.txt",
    "/abs/path.txt",
    "a/../../escape.txt",
    "a/../b.txt",
    "./dot.txt",
    "a//b.txt",
    "back\\slash.txt",
    "ctrl\x07char.txt",
    "..",
    ".airgap-eval/sync-state.jsonl",
    "full/",  # a folder marker holding bytes
]


def _objs(*rels: str, size: int = 1) -> list[S3Object]:
    return [S3Object(f"p/{r}", r, size, "etag") for r in rels]


@pytest.mark.parametrize("bad", UNSAFE)
def test_unsafe_key_refused_before_anything_is_written(tmp_path: Path, bad: str) -> None:
    dest = tmp_path / "test_data"
    with pytest.raises(UnsafePathError) as e:
        check_keys(_objs("ok/first.txt", bad), dest)
    assert repr(f"p/{bad}")[1:-1] in e.value.message or repr(bad)[1:-1] in e.value.message
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_symlink_out_of_dest_refused(tmp_path: Path) -> None:
    dest, outside = tmp_path / "test_data", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "link").symlink_to(outside)
    with pytest.raises(UnsafePathError, match=r"link/x\.txt"):
        check_keys(_objs("link/x.txt"), dest)


def test_sibling_named_like_dest_is_outside(tmp_path: Path) -> None:
    """`/test_data2` is not inside `/test_data`, though its name starts the same."""
    dest = tmp_path / "test_data"
    dest.mkdir()
    (tmp_path / "test_data2").mkdir()
    (dest / "link").symlink_to(tmp_path / "test_data2")
    with pytest.raises(UnsafePathError):
        check_keys(_objs("link/x.txt"), dest)


def test_file_and_folder_with_one_name_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both a file and a folder"):
        check_keys(_objs("a", "a/b.txt"), tmp_path)


def test_markers_and_safe_names(tmp_path: Path) -> None:
    objs = [
        *_objs("sub/x.json", "we ird*name [1].txt", "ünï cødé.txt", "-dash", "it's.txt"),
        S3Object("p/", "", 0, "e"),  # the prefix folder's own marker
        S3Object("p/empty-dir/", "empty-dir/", 0, "e"),
    ]
    plan = check_keys(objs, tmp_path / "d")
    assert [i.rel for i in plan.items] == [
        "sub/x.json", "we ird*name [1].txt", "ünï cødé.txt", "-dash", "it's.txt",
    ]  # fmt: skip
    assert plan.dirs == [(tmp_path / "d" / "empty-dir").resolve()]
    for item in plan.items:
        assert Path(item.path) == (tmp_path / "d").resolve() / item.rel
        assert (
            Path(item.partial) == (tmp_path / "d" / ".airgap-eval" / "partial").resolve() / item.rel
        )
