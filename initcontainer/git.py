"""Test data from a git repository: a drop-in for EvalHub 1.0's init container
(`cmd/eval_runtime_init`: TEST_DATA_GIT_URL, _REF, _SUBPATH, _TIMEOUT; `username` and
`password` files in the test-data secret dir; the resolved commit in
/run/init-metadata/.git-metadata for EvalHub's sidecar), with git itself as the client.

A shallow fetch of the ref (a branch or tag; a commit SHA is fetched shallow too, and when the
server refuses a bare SHA, with the full history), then every blob of the sub-path written into
dest from git's object store: no checkout, no `.git`. Before anything is written each path is
checked (no `..`, no absolute names, no symlink that leaves the sub-path, no submodule) and each
existing directory on the way must resolve inside dest. A file already holding the blob (same
git hash) is left alone: a rerun writes nothing. A `manifest.json` in the tree is checked
against what was written.

Unlike EvalHub's, private and loopback addresses are allowed (on a disconnected cluster the git
server is an internal one); credentials over plain http need TEST_DATA_GIT_INSECURE=true.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common.errors import (
    AirgapError,
    AuthError,
    ConfigError,
    DeadlineError,
    IntegrityError,
    NotFoundError,
    UnreachableError,
    UnsafePathError,
)
from common.layout import GIT_METADATA, MANIFEST_NAME, STATE_DIR_NAME, validate_relative_key
from common.logs import register_secret
from common.manifest import Manifest, mismatches

log = logging.getLogger(__name__)

GIT_ENVS = ("TEST_DATA_GIT_URL", "TEST_DATA_GIT_REF", "TEST_DATA_GIT_SUBPATH")
TIMEOUT_ENV = "TEST_DATA_GIT_TIMEOUT"
INSECURE_ENV = "TEST_DATA_GIT_INSECURE"
_HEX_SHA = re.compile(r"^[0-9a-fA-F]{7,64}$")
_SYMLINK, _SUBMODULE = "120000", "160000"


@dataclass(frozen=True)
class GitSource:
    url: str
    ref: str
    sub_path: str  # "" = the repository root
    dest: Path
    timeout_s: float
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    metadata: Path | None = GIT_METADATA


def _secret(secret_dir: Path | None, name: str) -> str | None:
    if secret_dir is None:
        return None
    try:
        value = (secret_dir / name).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return value or None


def resolve_git(
    env: Mapping[str, str],
    dest: Path,
    secret_dir: Path | None,
    timeout_s: float,
    metadata: Path | None = GIT_METADATA,
) -> GitSource | None:
    """The git source EvalHub's env names, or None when TEST_DATA_GIT_URL is unset."""
    url = env.get("TEST_DATA_GIT_URL", "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"TEST_DATA_GIT_URL={url!r} is not an http(s) URL",
            "give the repository's HTTP(S) clone URL (ssh, git:// and file:// are refused, "
            "as EvalHub refuses them)",
        )
    if parts.username or parts.password:
        raise ConfigError(
            "TEST_DATA_GIT_URL holds credentials",
            "remove them from the URL; put `username` and `password` in the test-data secret",
        )
    ref = env.get("TEST_DATA_GIT_REF", "").strip()
    if not ref or ref.startswith("-") or any(c in ref for c in " ~^:?*[\\"):
        raise ConfigError(
            f"TEST_DATA_GIT_REF={ref!r} is not a branch, tag or commit",
            "set TEST_DATA_GIT_REF to a branch, a tag or a commit SHA",
        )
    sub = env.get("TEST_DATA_GIT_SUBPATH", "").strip().strip("/")
    if sub:
        try:
            validate_relative_key(sub)
        except UnsafePathError:
            raise ConfigError(
                f"TEST_DATA_GIT_SUBPATH={sub!r} leaves the repository",
                "give a directory inside the repository, without '..'",
            ) from None
    username, password = _secret(secret_dir, "username"), _secret(secret_dir, "password")
    if secret_dir is not None and secret_dir.is_dir() and not (username and password):
        # EvalHub's rule: a mounted secret without both keys is a misconfiguration.
        raise ConfigError(
            f"the git secret in {secret_dir} lacks `username` or `password`",
            "put both keys in the secret (a token goes in `password`), or mount none for a "
            "public repository",
        )
    if password and parts.scheme == "http" and env.get(INSECURE_ENV, "").lower() != "true":
        raise ConfigError(
            f"credentials for {url} would cross the network in clear text",
            f"use the https URL, or set {INSECURE_ENV}=true for a plain-HTTP internal server",
        )
    register_secret(password)
    return GitSource(url, ref, sub, dest, timeout_s, username, password, metadata)


class _Git:
    """git with no user or system config, no prompts, the credentials in its env (never in
    its argv or our log), and only http(s) allowed, redirects included."""

    def __init__(self, src: GitSource, repo: Path) -> None:
        self.src, self.repo = src, repo
        self.deadline = time.monotonic() + src.timeout_s
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(repo),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "GIT_ALLOW_PROTOCOL": "http:https",
        }
        for var in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "GIT_SSL_CAINFO", "GIT_SSL_NO_VERIFY"):
            if var in os.environ:
                self.env[var] = os.environ[var]
        if src.username and src.password:
            token = base64.b64encode(f"{src.username}:{src.password}".encode()).decode()
            register_secret(token)
            self.env |= {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {token}",
            }

    def __call__(self, *args: str, input: bytes | None = None) -> bytes:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._timeout()
        try:
            # Its own process group: on the deadline git's remote helper dies with it.
            proc = subprocess.Popen(
                ["git", "-C", str(self.repo), *args], env=self.env, start_new_session=True,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
        except FileNotFoundError:
            raise ConfigError(
                "git is not installed", "use the init image (it carries git)"
            ) from None
        try:
            out, err = proc.communicate(input, timeout=left)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise self._timeout() from None
        if proc.returncode != 0:
            raise classify(err.decode(errors="replace"), self.src)
        return out

    def _timeout(self) -> DeadlineError:
        return DeadlineError(
            f"git fetch of {self.src.url} did not finish within {self.src.timeout_s:g} s",
            f"raise {TIMEOUT_ENV} (e.g. 30m), or check the route to the git server "
            "(NetworkPolicy, proxy)",
        )


def classify(stderr: str, src: GitSource) -> AirgapError:
    """One typed error from git's message (the last lines say why)."""
    text = " ".join(stderr.split())[-400:]
    low = text.lower()
    if any(s in low for s in ("authentication failed", "could not read username",
                              "error: 401", "error: 403", "returned error: 40")) and (
        "404" not in low
    ):  # fmt: skip
        return AuthError(
            f"{src.url} refused the credentials: {text}",
            "check `username` and `password` in the test-data secret (a token with read "
            "access to the repository)",
        )
    if any(s in low for s in ("couldn't find remote ref", "not our ref", "unadvertised object",
                              "no such remote ref", "invalid refspec")):  # fmt: skip
        return NotFoundError(
            f"ref {src.ref!r} not found in {src.url}: {text}",
            "set TEST_DATA_GIT_REF to an existing branch, tag or commit",
        )
    if any(s in low for s in ("not found", "404", "does not appear to be a git repository")):
        return NotFoundError(f"no git repository at {src.url}: {text}", "check TEST_DATA_GIT_URL")
    return UnreachableError(
        f"git could not fetch from {src.url}: {text}",
        "check the URL, DNS and the route to the git server (NetworkPolicy, proxy, TLS CA: "
        "GIT_SSL_CAINFO)",
    )


def git_blob_sha1(path: Path) -> str:
    """The hash git gives a file's content (a blob): a file already in place is skipped."""
    h = hashlib.sha1(usedforsecurity=False)
    h.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class GitResult:
    commit: str = ""
    files: int = 0
    written: int = 0
    bytes: int = 0

    def as_progress(self) -> dict[str, Any]:
        return {"commit": self.commit, "files": self.files, "written": self.written,
                "bytes": self.bytes}  # fmt: skip


def _fetch(git: _Git, src: GitSource) -> str:
    """Fetch the ref shallow; the commit it names."""
    git("init", "-q")
    try:
        git("fetch", "-q", "--depth", "1", "--no-tags", src.url, src.ref)
    except NotFoundError:
        if not _HEX_SHA.match(src.ref):
            raise
        # A server that refuses a bare SHA in a want (uploadpack.allowAnySHA1InWant off):
        # every branch and tag, then the commit among them.
        git(
            "fetch",
            "-q",
            src.url,
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*",
        )
        try:
            return git("rev-parse", "--verify", "-q", f"{src.ref}^{{commit}}").decode().strip()
        except AirgapError:
            raise NotFoundError(
                f"commit {src.ref} not found in {src.url}",
                "set TEST_DATA_GIT_REF to a commit reachable from a branch or tag",
            ) from None
    return git("rev-parse", "FETCH_HEAD^{commit}").decode().strip()


def _tree(git: _Git, src: GitSource, commit: str) -> dict[str, tuple[str, str]]:
    """{path below the sub-path: (mode, blob sha)} with every path checked."""
    spec = f"{commit}:{src.sub_path}" if src.sub_path else commit
    try:
        kind = git("cat-file", "-t", spec).decode().strip()
    except AirgapError:
        raise NotFoundError(
            f"TEST_DATA_GIT_SUBPATH {src.sub_path!r} not found at {src.ref} ({commit[:12]})",
            "set TEST_DATA_GIT_SUBPATH to a directory of the repository",
        ) from None
    if kind != "tree":
        raise ConfigError(
            f"TEST_DATA_GIT_SUBPATH {src.sub_path!r} is a file, not a directory",
            "set TEST_DATA_GIT_SUBPATH to a directory",
        )
    entries: dict[str, tuple[str, str]] = {}
    for record in git("ls-tree", "-r", "-z", spec).split(b"\0"):
        if not record:
            continue
        meta, _, raw = record.partition(b"\t")
        mode, _, sha = meta.decode().split(" ")
        rel = raw.decode("utf-8", errors="surrogateescape")
        validate_relative_key(rel)
        if rel.split("/")[0] == STATE_DIR_NAME:
            raise UnsafePathError(
                f"the repository holds {rel!r}, inside the sync's own {STATE_DIR_NAME}/",
                "rename that directory in the repository",
            )
        if mode == _SUBMODULE:
            raise ConfigError(
                f"{rel!r} is a git submodule, which is not fetched",
                "point TEST_DATA_GIT_SUBPATH at a directory without submodules",
            )
        entries[rel] = (mode, sha)
    if not entries:
        raise NotFoundError(
            f"{src.url} at {src.ref}: {src.sub_path or 'the repository'} holds no files",
            "check TEST_DATA_GIT_REF and TEST_DATA_GIT_SUBPATH",
        )
    return entries


def _resolve_links(git: _Git, entries: dict[str, tuple[str, str]]) -> dict[str, str]:
    """{path: blob sha to write there}: a symlink becomes a copy of the file it names, which
    must lie inside the sub-path (EvalHub's init copies through links the same way)."""
    blobs = {rel: sha for rel, (mode, sha) in entries.items() if mode != _SYMLINK}
    for rel, (mode, sha) in entries.items():
        if mode != _SYMLINK:
            continue
        seen, current, target_sha = set(), rel, sha
        while True:
            target = git("cat-file", "blob", target_sha).decode(errors="surrogateescape")
            joined = os.path.normpath(os.path.join(os.path.dirname(current), target))
            if target.startswith("/") or joined.startswith("..") or joined in seen:
                raise UnsafePathError(
                    f"symlink {rel!r} -> {target!r} points outside the test data",
                    "replace the link with the file in the repository",
                )
            seen.add(joined)
            mode_sha = entries.get(joined)
            if mode_sha is None:
                raise UnsafePathError(
                    f"symlink {rel!r} -> {target!r} names no file of the test data",
                    "replace the link with the file in the repository",
                )
            if mode_sha[0] != _SYMLINK:
                blobs[rel] = mode_sha[1]
                break
            current, target_sha = joined, mode_sha[1]
    return blobs


def _inside(dest: Path, rel: str) -> Path:
    """dest/rel, refusing a path whose existing directories resolve outside dest."""
    root = dest.resolve()
    parent = (root / rel).parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.resolve().is_relative_to(root):
        raise UnsafePathError(
            f"{rel!r} would be written through {probe} (a symlink?) outside {root}",
            f"remove the symlink inside {root}",
        )
    return root / rel


def _place(git: _Git, dest: Path, blobs: dict[str, str], result: GitResult) -> None:
    for rel, sha in sorted(blobs.items()):
        target = _inside(dest, rel)
        result.files += 1
        if target.is_file() and not target.is_symlink() and git_blob_sha1(target) == sha:
            result.bytes += target.stat().st_size
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        body = git("cat-file", "blob", sha)
        tmp = target.with_name(f".{target.name}.git.tmp")
        tmp.write_bytes(body)
        os.replace(tmp, target)  # a symlink in the way is replaced, never followed
        result.written += 1
        result.bytes += len(body)


def _verify(dest: Path, blobs: dict[str, str]) -> None:
    if MANIFEST_NAME not in blobs:
        return
    manifest = Manifest.load(dest / MANIFEST_NAME)
    bad = mismatches(dest, manifest)
    if bad:
        raise IntegrityError(
            f"{len(bad)} file(s) differ from manifest.json at the fetched commit: "
            + ", ".join(bad[:5]),
            "re-stage the bundle into the repository (airgap-eval stage) and commit it whole",
        )


def _write_metadata(path: Path | None, commit: str) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(commit + "\n")
    except OSError as e:
        # Only EvalHub's sidecar reads it, through a volume it mounts; ours does not need it.
        log.warning("commit %s not written to %s (%s)", commit[:12], path, e.strerror)


def sync_git(src: GitSource, result: GitResult) -> None:
    """Fetch, check, write and verify; `result` says how far it got."""
    work = src.dest / STATE_DIR_NAME / "git"
    src.dest.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)  # a killed run's objects: fetched again, shallow
    work.mkdir(parents=True)
    try:
        git = _Git(src, work)
        log.info("fetching %s at %s (shallow)", src.url, src.ref)
        result.commit = _fetch(git, src)
        blobs = _resolve_links(git, _tree(git, src, result.commit))
        _place(git, src.dest, blobs, result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _verify(src.dest, blobs)
    _write_metadata(src.metadata, result.commit)
    log.info(
        "git test data ready: %s/%s at %s (%s): %d files, %d written (%.1f MB)",
        src.url, src.sub_path, src.ref, result.commit[:12], result.files, result.written,
        result.bytes / 1e6,
    )  # fmt: skip
