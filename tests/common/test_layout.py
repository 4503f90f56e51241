from pathlib import Path

import pytest

from common.errors import UnsafePathError
from common.layout import safe_join

UNSAFE = [
    "",
    "/etc/passwd",
    "../x",
    "a/../../x",
    "a/../b",
    "./a",
    "a/./b",
    "a//b",
    "..",
    "a\\..\\b",
    "a/\x00b",
    "new\nline",
]


@pytest.mark.parametrize("key", UNSAFE)
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(UnsafePathError) as err:
        safe_join(tmp_path, key)
    assert err.value.hint  # every refusal says what to do about it


@pytest.mark.parametrize(
    "key", ["a", "a/b/c.arrow", "Rowan--hellaswag/train/data-00000-of-00001.arrow", "x y/z"]
)
def test_safe_keys_land_inside(tmp_path: Path, key: str) -> None:
    assert safe_join(tmp_path, key).is_relative_to(tmp_path.resolve())


def test_symlink_escape_is_refused(tmp_path: Path) -> None:
    dest, outside = tmp_path / "test_data", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "link").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(dest, "link/file")


def test_sibling_with_common_prefix_is_not_inside(tmp_path: Path) -> None:
    # A string-prefix check would accept /x/test_data2 for /x/test_data.
    dest = tmp_path / "test_data"
    dest.mkdir()
    (tmp_path / "test_data2").mkdir()
    (dest / "up").symlink_to(tmp_path / "test_data2")
    with pytest.raises(UnsafePathError):
        safe_join(dest, "up/f")
