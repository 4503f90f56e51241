"""Git test data against a real smart-HTTP server (git's http-backend, basic auth): the
synced tree equals the repository's sub-path, the commit lands where EvalHub's sidecar reads
it, a rerun writes nothing, and each failure is one typed error."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import (
    AuthError,
    ConfigError,
    DeadlineError,
    IntegrityError,
    NotFoundError,
    UnreachableError,
    UnsafePathError,
)
from initcontainer.git import GitResult, GitSource, resolve_git, sync_git
from testbed.gitserver import GitHttpServer, git
from testbed.localservers import free_port
from tests.httpstub import silent

FILES = {
    "README.md": b"not test data\n",
    "bundles/arc--easy/dataset_dict.json": b'{"splits": ["test"]}',
    "bundles/arc--easy/test/data-00000-of-00001.arrow": bytes(range(256)) * 40,
    "bundles/tokenizer/tokenizer.json": b'{"model": {}}',
}


def secrets(tmp_path: Path, server: GitHttpServer, password: str | None = None) -> Path:
    d = tmp_path / "secret"
    d.mkdir(parents=True, exist_ok=True)
    (d / "username").write_text(server.username + "\n")
    (d / "password").write_text((password or server.password) + "\n")
    return d


def source(
    server: GitHttpServer, repo: str, tmp_path: Path, ref: str = "main", sub: str = "bundles",
    password: str | None = None, timeout_s: float = 60.0,
) -> GitSource:  # fmt: skip
    env = {
        "TEST_DATA_GIT_URL": server.url(repo), "TEST_DATA_GIT_REF": ref,
        "TEST_DATA_GIT_SUBPATH": sub, "TEST_DATA_GIT_INSECURE": "true",
    }  # fmt: skip
    src = resolve_git(env, tmp_path / "test_data", secrets(tmp_path, server, password), timeout_s,
                      tmp_path / "init-metadata" / ".git-metadata")  # fmt: skip
    assert src is not None
    return src


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".airgap-eval" not in p.parts
    }


@pytest.fixture(scope="module")
def repo(git_server: GitHttpServer) -> str:
    git_server.create_repo("data", FILES)
    return "data"


def test_synced_tree_equals_the_sub_path_and_the_commit_is_recorded(
    git_server: GitHttpServer, repo: str, tmp_path: Path
) -> None:
    src = source(git_server, repo, tmp_path)
    result = GitResult()
    sync_git(src, result)
    want = {k.removeprefix("bundles/"): v for k, v in FILES.items() if k.startswith("bundles/")}
    assert tree(src.dest) == want
    assert not (src.dest / ".git").exists()
    head = git("rev-parse", "main", cwd=git_server.root / "data.git")
    assert result.commit == head
    assert (tmp_path / "init-metadata" / ".git-metadata").read_text() == head + "\n"
    assert oct((tmp_path / "init-metadata" / ".git-metadata").stat().st_mode & 0o777) == "0o600"
    # The fetch was shallow (one depth-1 negotiation), and the credentials went in a header.
    assert result.written == result.files == 3

    again = GitResult()
    mtimes = {p: p.stat().st_mtime_ns for p in src.dest.rglob("*") if p.is_file()}
    sync_git(src, again)  # idempotent: nothing rewritten
    assert again.written == 0 and again.commit == head
    assert {p: p.stat().st_mtime_ns for p in src.dest.rglob("*") if p.is_file()} == mtimes


def test_tag_and_commit_refs_resolve_to_the_commit(
    git_server: GitHttpServer, repo: str, tmp_path: Path
) -> None:
    bare = git_server.root / "data.git"
    head = git("rev-parse", "main", cwd=bare)
    git("tag", "-a", "-m", "v1", "v1", head, cwd=bare)  # annotated: dereferenced to the commit
    for ref in ("v1", head):
        out = tmp_path / ref[:8]
        src = source(git_server, repo, out, ref=ref)
        result = GitResult()
        sync_git(src, result)
        assert result.commit == head
        assert (src.dest / "tokenizer/tokenizer.json").read_bytes() == FILES[
            "bundles/tokenizer/tokenizer.json"
        ]


def test_manifest_in_the_tree_is_verified(git_server: GitHttpServer, tmp_path: Path) -> None:
    body = b"rows\n"
    manifest = {"format_version": 1, "files": {
        "a/data.txt": {"size": len(body), "sha256": hashlib.sha256(b"other\n").hexdigest()}}}  # fmt: skip
    git_server.create_repo("badmanifest", {
        "d/manifest.json": json.dumps(manifest).encode(), "d/a/data.txt": body})  # fmt: skip
    with pytest.raises(IntegrityError, match=r"a/data\.txt"):
        sync_git(source(git_server, "badmanifest", tmp_path, sub="d"), GitResult())


def test_symlink_out_of_the_sub_path_is_refused(git_server: GitHttpServer, tmp_path: Path) -> None:
    work = tmp_path / "w"
    git("init", "-q", "-b", "main", str(work))
    (work / "d").mkdir()
    (work / "secret.txt").write_text("outside")
    (work / "d" / "ok.txt").write_text("inside")
    os.symlink("ok.txt", work / "d" / "alias.txt")
    os.symlink("../secret.txt", work / "d" / "leak.txt")
    git_server.commit("links", work, first=True)
    with pytest.raises(UnsafePathError, match=r"leak\.txt"):
        sync_git(source(git_server, "links", tmp_path, sub="d"), GitResult())
    assert not (tmp_path / "test_data" / "leak.txt").exists()


def test_symlink_in_dest_is_never_followed(
    git_server: GitHttpServer, repo: str, tmp_path: Path
) -> None:
    src = source(git_server, repo, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    src.dest.mkdir()
    (src.dest / "arc--easy").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="arc--easy"):
        sync_git(src, GitResult())
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"ref": "no-such-branch"}, NotFoundError, "no-such-branch"),
        ({"password": "wrong"}, AuthError, "refused the credentials"),
        ({"sub": "nope"}, NotFoundError, "TEST_DATA_GIT_SUBPATH"),
    ],
)
def test_failures_are_typed(
    git_server: GitHttpServer, repo: str, tmp_path: Path, change: dict[str, str],
    error: type[Exception], words: str,
) -> None:  # fmt: skip
    with pytest.raises(error, match=words) as info:
        sync_git(source(git_server, repo, tmp_path, **change), GitResult())
    assert git_server.password not in str(info.value)


def test_unreachable_and_timeout(tmp_path: Path) -> None:
    base = {"TEST_DATA_GIT_REF": "main"}
    closed = resolve_git(base | {"TEST_DATA_GIT_URL": f"http://127.0.0.1:{free_port()}/r.git"},
                         tmp_path / "a", None, 30.0, None)  # fmt: skip
    assert closed is not None
    with pytest.raises(UnreachableError):
        sync_git(closed, GitResult())
    with silent() as port:
        hung = resolve_git(base | {"TEST_DATA_GIT_URL": f"http://127.0.0.1:{port}/r.git"},
                           tmp_path / "b", None, 2.0, None)  # fmt: skip
        assert hung is not None
        with pytest.raises(DeadlineError, match="did not finish within 2 s"):
            sync_git(hung, GitResult())


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"TEST_DATA_GIT_URL": "ssh://git@host/r.git"}, "not an http"),
        ({"TEST_DATA_GIT_URL": "file:///etc"}, "not an http"),
        ({"TEST_DATA_GIT_URL": "https://u:p@host/r.git"}, "holds credentials"),
        ({"TEST_DATA_GIT_URL": "https://host/r.git", "TEST_DATA_GIT_REF": ""}, "TEST_DATA_GIT_REF"),
        ({"TEST_DATA_GIT_URL": "https://host/r.git", "TEST_DATA_GIT_SUBPATH": "../x"}, "leaves"),
    ],
)
def test_bad_settings_are_config_errors(env: dict[str, str], words: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=words):
        resolve_git({"TEST_DATA_GIT_REF": "main"} | env, tmp_path, None, 60.0)


def test_credentials_over_plain_http_need_the_opt_in(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "username").write_text("u")
    (tmp_path / "s" / "password").write_text("p")
    env = {"TEST_DATA_GIT_URL": "http://git.internal/r.git", "TEST_DATA_GIT_REF": "main"}
    with pytest.raises(ConfigError, match="clear text"):
        resolve_git(env, tmp_path, tmp_path / "s", 60.0)
    assert resolve_git(env | {"TEST_DATA_GIT_INSECURE": "true"}, tmp_path, tmp_path / "s", 60.0)


def sync_cli(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airgap_eval", "sync", "--dest", str(tmp_path / "test_data"),
         "--secret-dir", str(tmp_path / "secret"),
         "--git-metadata", str(tmp_path / "meta" / ".git-metadata"), *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_git_source_wins_over_s3_and_records_its_status(
    git_server: GitHttpServer, repo: str, tmp_path: Path
) -> None:
    secrets(tmp_path, git_server)
    env = {
        "TEST_DATA_GIT_URL": git_server.url(repo), "TEST_DATA_GIT_REF": "main",
        "TEST_DATA_GIT_SUBPATH": "bundles", "TEST_DATA_GIT_TIMEOUT": "1m",
        "TEST_DATA_GIT_INSECURE": "true", "TEST_DATA_S3_BUCKET": "never-used",
    }  # fmt: skip
    done = sync_cli(env, tmp_path)
    assert done.returncode == 0, done.stderr
    head = git("rev-parse", "main", cwd=git_server.root / "data.git")
    assert (tmp_path / "meta" / ".git-metadata").read_text() == head + "\n"
    record = json.loads((tmp_path / "test_data/.airgap-eval/sync-status.json").read_text())
    assert record["state"] == "completed" and record["progress"]["commit"] == head
    assert len(tree(tmp_path / "test_data")) == 3

    (tmp_path / "secret" / "password").write_text("wrong")
    refused = sync_cli(env, tmp_path)
    assert refused.returncode == 3
    lines = [ln for ln in refused.stderr.splitlines() if "[AUTH]" in ln]
    assert len(lines) == 1 and "wrong" not in refused.stderr, refused.stderr
    record = json.loads((tmp_path / "test_data/.airgap-eval/sync-status.json").read_text())
    assert record["state"] == "failed" and record["error"]["code"] == "AUTH"
