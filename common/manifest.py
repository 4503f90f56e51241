"""The manifest: relative path -> size + sha256 for every file of a tree.

`airgap-eval stage` writes it for /test_data, the sidecar for each results upload; `sync`
and `verify` check files against it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, Field

from common.atomic import atomic_write
from common.layout import MANIFEST_NAME, STATE_DIR_NAME

FORMAT_VERSION = 1
_CHUNK = 1 << 20
P = TypeVar("P", str, Path)


class FileEntry(BaseModel):
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    format_version: int = FORMAT_VERSION
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # Library versions the tree was written with (lm_eval, datasets, transformers, ...).
    versions: dict[str, str] = Field(default_factory=dict)
    # lm_eval task -> the slugs (bundle dirs) it reads.
    tasks: dict[str, list[str]] = Field(default_factory=dict)
    tokenizer: str | None = None
    # Extra data the tasks need besides bundles: "nltk" -> packages staged under nltk_data/,
    # "evaluate" -> metric modules the tasks load from the Hub (detected, not staged).
    assets: dict[str, list[str]] = Field(default_factory=dict)
    files: dict[str, FileEntry] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls.model_validate_json(path.read_bytes())

    def dump(self, path: Path) -> None:
        atomic_write(path, self.model_dump_json(indent=1))


# Hashing threads: hashlib frees the GIL on large buffers, so a few per core pay off.
HASH_WORKERS = min(8, (os.cpu_count() or 2) * 2)


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def hash_files(paths: Iterable[P], workers: int | None = None) -> dict[P, str]:
    """sha256 of many files at once: hashlib releases the GIL on large buffers."""
    paths = list(paths)
    workers = workers or HASH_WORKERS
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(paths, pool.map(sha256_file, paths), strict=True))


def iter_tree(root: Path) -> Iterator[Path]:
    """Every regular file below root, except the manifest itself and our state dir."""
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d != STATE_DIR_NAME]
        for name in filenames:
            p = Path(dirpath) / name
            if p.parent == root and name == MANIFEST_NAME:
                continue
            yield p


def entries_for(root: Path, files: Iterable[Path]) -> dict[str, FileEntry]:
    digests = hash_files(files)
    return {
        p.relative_to(root).as_posix(): FileEntry(size=p.stat().st_size, sha256=d)
        for p, d in sorted(digests.items())
    }


def build_manifest(root: Path, **fields: object) -> Manifest:
    return Manifest(files=entries_for(root, iter_tree(root)), **fields)


def mismatches(root: Path, manifest: Manifest, only: Iterable[str] | None = None) -> list[str]:
    """Problems of the tree against the manifest, one readable line each (empty: all good)."""
    names = list(only) if only is not None else list(manifest.files)
    problems: list[str] = []
    present: list[Path] = []
    for name in names:
        p = root / name
        entry = manifest.files[name]
        if not p.is_file():
            problems.append(f"{name}: missing")
        elif (size := p.stat().st_size) != entry.size:
            problems.append(f"{name}: size {size} != manifest {entry.size}")
        else:
            present.append(p)
    for p, digest in hash_files(present).items():
        name = p.relative_to(root).as_posix()
        if digest != manifest.files[name].sha256:
            problems.append(
                f"{name}: sha256 {digest[:12]}… != manifest {manifest.files[name].sha256[:12]}…"
            )
    return problems
