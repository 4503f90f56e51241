"""What a previous sync left in `dest/.airgap-eval/`: a journal of the files it put in place
(size, mtime, ETag, confirmed sha256), so a re-run skips them without downloading or hashing.

The journal is append-only while a sync runs and is rewritten compactly at the end when it
holds superseded or dropped lines. Lines are written in blocks, not one write per file: a
killed sync loses at most the last block, and those files (in place, right size) are only
hashed again on the next run, never fetched.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from common.atomic import atomic_write
from common.layout import STATE_DIR_NAME, SYNC_STATUS_NAME

JOURNAL_NAME = "sync-state.jsonl"
PARTIAL_NAME = "partial"


def state_dir(dest: Path) -> Path:
    return dest / STATE_DIR_NAME


def partial_root(dest: Path) -> Path:
    """Where downloads land before they are checked (resolved: paths compare equal)."""
    return state_dir(dest.resolve()) / PARTIAL_NAME


def status_path(dest: Path) -> Path:
    return state_dir(dest) / SYNC_STATUS_NAME


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    etag: str
    sha256: str | None  # set once the file was checked against the manifest


class SyncState:
    def __init__(self, dest: Path) -> None:
        self.path = state_dir(dest) / JOURNAL_NAME
        self.entries: dict[str, FileState] = {}
        self._lock = threading.Lock()
        self._out: IO[str] | None = None
        self._dirty = False  # the journal holds lines that are not one per entry

    @classmethod
    def load(cls, dest: Path) -> SyncState:
        state = cls(dest)
        try:
            lines = state.path.read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return state
        for line in lines:
            try:
                rel, size, mtime_ns, etag, sha = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill: that file is simply checked again
            state.entries[rel] = FileState(size, mtime_ns, etag, sha)
        state._dirty = len(lines) != len(state.entries)  # left uncompacted by a kill
        return state

    def is_current(self, rel: str, size: int, etag: str, st: os.stat_result) -> bool:
        """The file on disk is the one we placed for this object, untouched since."""
        e = self.entries.get(rel)
        return (
            e is not None
            and e.size == size == st.st_size
            and e.mtime_ns == st.st_mtime_ns
            and e.etag == etag
        )

    def record(self, rel: str, st: os.stat_result, etag: str, sha256: str | None) -> None:
        """`st`: the file's stat (a rename into place keeps its size and mtime)."""
        entry = FileState(st.st_size, st.st_mtime_ns, etag, sha256)
        line = json.dumps([rel, entry.size, entry.mtime_ns, etag, sha256]) + "\n"
        with self._lock:
            self._dirty |= rel in self.entries  # the journal now holds a superseded line
            self.entries[rel] = entry
            if self._out is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._out = self.path.open("a")
            self._out.write(line)

    def compact(self, keep: set[str]) -> None:
        """Rewrite the journal with one line per file still in the prefix."""
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None
            kept = {k: v for k, v in self.entries.items() if k in keep}
            if not self._dirty and len(kept) == len(self.entries) and self.path.exists():
                return  # one line per kept file already: a first sync, or an unchanged re-run
            self.entries, self._dirty = kept, False
            atomic_write(
                self.path,
                "".join(
                    json.dumps([k, e.size, e.mtime_ns, e.etag, e.sha256]) + "\n"
                    for k, e in sorted(self.entries.items())
                ),
            )
