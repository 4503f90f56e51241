"""The one atomic file write: a temp file beside the target, then a rename over it. Readers (the
sidecar, a resumed sync, kubectl cp) see the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path

# Temp names start with "." and end with ".tmp": uploads and listings skip them.
TMP_SUFFIX = ".tmp"


def atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)
