from pathlib import Path

import pytest

from common.errors import ConfigError
from common.s3settings import resolve_connection


def _secret_dir(tmp_path: Path, **files: str) -> Path:
    for k, v in files.items():
        (tmp_path / k).write_text(v + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("flag", "env", "files", "expected"),
    [
        (
            "http://flag:1",
            {"AWS_S3_ENDPOINT": "http://env:2"},
            {"AWS_S3_ENDPOINT": "http://file:3"},
            "http://flag:1",
        ),
        (
            None,
            {"AWS_S3_ENDPOINT": "http://env:2"},
            {"AWS_S3_ENDPOINT": "http://file:3"},
            "http://env:2",
        ),
        (None, {"AWS_ENDPOINT_URL": "http://env:4"}, {}, "http://env:4"),
        (None, {}, {"AWS_S3_ENDPOINT": "http://file:3"}, "http://file:3"),
        (None, {}, {}, None),
    ],
)
def test_endpoint_precedence(
    tmp_path: Path,
    flag: str | None,
    env: dict[str, str],
    files: dict[str, str],
    expected: str | None,
) -> None:
    conn = resolve_connection(endpoint=flag, env=env, secret_dir=_secret_dir(tmp_path, **files))
    assert conn.endpoint == expected


def test_keys_env_over_files_and_secret_not_in_repr(tmp_path: Path) -> None:
    d = _secret_dir(tmp_path, AWS_ACCESS_KEY_ID="fileak", AWS_SECRET_ACCESS_KEY="filesk-123")
    conn = resolve_connection(env={}, secret_dir=d)
    assert (conn.access_key, conn.secret_key) == ("fileak", "filesk-123")
    assert "filesk-123" not in repr(conn)
    conn = resolve_connection(
        env={"AWS_ACCESS_KEY_ID": "envak", "AWS_SECRET_ACCESS_KEY": "envsk"}, secret_dir=d
    )
    assert (conn.access_key, conn.secret_key) == ("envak", "envsk")


def test_half_a_key_pair_names_the_missing_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY"):
        resolve_connection(env={"AWS_ACCESS_KEY_ID": "ak"}, secret_dir=tmp_path)


def test_endpoint_without_scheme_says_how_to_write_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_connection(env={"AWS_S3_ENDPOINT": "minio:9000"}, secret_dir=tmp_path)
    assert "http://minio:9000" in (err.value.hint or "")


def test_missing_secret_dir_means_default_chain(tmp_path: Path) -> None:
    conn = resolve_connection(env={}, secret_dir=tmp_path / "absent")
    assert not conn.has_keys and conn.region == "us-east-1"
