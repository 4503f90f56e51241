"""Slugs: the directory name under /test_data that holds one dataset bundle.

slug = dataset_path with "/" -> "--", plus "--<dataset_name>" when set, plus
"--files-<8 hex>" when the task passes `data_files` (tasks such as arithmetic or mmlusr share
path and name and differ only there). The suffix is the first 8 hex digits of the sha256 of
the data_files value as canonical JSON (sorted keys, no spaces).

Older lm_eval configs named datasets without their organisation (`hellaswag`,
`blimp` + `adjunct_island`): the same slug without the leading `org--` is accepted as a
legacy alias. Slugs are case-sensitive.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

SEP = "--"


def data_files_suffix(data_files: Any) -> str:
    canonical = json.dumps(data_files, sort_keys=True, separators=(",", ":"), default=str)
    return f"files-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


def slug(dataset_path: str, dataset_name: str | None = None, data_files: Any = None) -> str:
    parts = [dataset_path.strip("/").replace("/", SEP)]
    if dataset_name:
        parts.append(dataset_name)
    if data_files:
        parts.append(data_files_suffix(data_files))
    return SEP.join(parts)


def candidates(
    dataset_path: str, dataset_name: str | None = None, data_files: Any = None
) -> list[str]:
    """The slug first, then its legacy alias (if different): the dirs to look for, in order."""
    main = slug(dataset_path, dataset_name, data_files)
    out = [main]
    if "/" in dataset_path.strip("/"):
        legacy = slug(dataset_path.strip("/").rsplit("/", 1)[1], dataset_name, data_files)
        out.append(legacy)
    return out
