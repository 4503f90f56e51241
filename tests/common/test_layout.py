import pytest

from common.errors import UnsafePathError
from common.layout import validate_relative_key

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
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(UnsafePathError) as err:
        validate_relative_key(key)
    assert err.value.hint  # every refusal says what to do about it


@pytest.mark.parametrize(
    "key", ["a", "a/b/c.arrow", "Rowan--hellaswag/train/data-00000-of-00001.arrow", "x y/z", "d/"]
)
def test_safe_keys_pass(key: str) -> None:
    validate_relative_key(key)  # a symlink out of dest is initcontainer.plan's check (tested there)
