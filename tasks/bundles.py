"""Finding a task's bundle under /test_data: its slug dir first, then the legacy alias."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.layout import BUNDLE_MARKER
from tasks.slugs import candidates


@dataclass(frozen=True)
class Lookup:
    slug: str  # the canonical slug (what `stage` writes)
    path: Path | None  # the dir found, None when none of the candidates exists
    tried: tuple[str, ...]


def is_bundle(path: Path) -> bool:
    """A `DatasetDict.save_to_disk` dir (a plain `Dataset.save_to_disk` has state.json)."""
    return (path / BUNDLE_MARKER).is_file() or (path / "state.json").is_file()


def locate(
    test_data: Path, dataset_path: str, dataset_name: str | None = None, data_files: Any = None
) -> Lookup:
    tried = tuple(candidates(dataset_path, dataset_name, data_files))
    for name in tried:
        if is_bundle(test_data / name):
            return Lookup(tried[0], test_data / name, tried)
    return Lookup(tried[0], None, tried)
