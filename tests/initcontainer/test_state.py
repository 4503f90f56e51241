"""The sync journal: appended while syncing, rewritten at the end only when it must be."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from initcontainer.state import JOURNAL_NAME, SyncState, state_dir


def _files(dest: Path, names: list[str]) -> dict[str, os.stat_result]:
    out = {}
    for name in names:
        (dest / name).write_bytes(name.encode())
        out[name] = os.stat(dest / name)
    return out


def _lines(dest: Path) -> list[str]:
    return (state_dir(dest) / JOURNAL_NAME).read_text().splitlines()


@pytest.mark.parametrize(
    ("recorded", "keep", "rewritten", "left"),
    [
        # a first sync: one line per file as appended, nothing to rewrite
        (["a", "b", "c"], ["a", "b", "c"], False, ["a", "b", "c"]),
        # a file placed twice (refetched after a bad hash): its old line goes
        (["a", "b", "a"], ["a", "b"], True, ["a", "b"]),
        # an object gone from the prefix: its line goes
        (["a", "b", "c"], ["a", "b"], True, ["a", "b"]),
    ],
)
def test_compact_rewrites_only_a_journal_that_needs_it(
    tmp_path: Path, recorded: list[str], keep: list[str], rewritten: bool, left: list[str]
) -> None:
    stats = _files(tmp_path, sorted(set(recorded)))
    state = SyncState(tmp_path)
    for name in recorded:
        state.record(name, stats[name], f"etag-{name}", None)
    inode = os.stat(state_dir(tmp_path) / JOURNAL_NAME).st_ino
    state.compact(keep=set(keep))
    assert (os.stat(state_dir(tmp_path) / JOURNAL_NAME).st_ino != inode) is rewritten
    assert len(_lines(tmp_path)) == len(left)
    assert sorted(SyncState.load(tmp_path).entries) == left


def test_a_journal_cut_short_by_a_kill_is_rewritten(tmp_path: Path) -> None:
    stats = _files(tmp_path, ["a", "b"])
    state = SyncState(tmp_path)
    for name in ("a", "b"):
        state.record(name, stats[name], "e", "0" * 64)
    state.compact(keep={"a", "b"})
    journal = state_dir(tmp_path) / JOURNAL_NAME
    journal.write_text(journal.read_text()[:-5])  # the last line loses its end

    reloaded = SyncState.load(tmp_path)
    assert sorted(reloaded.entries) == ["a"]  # "b" is simply checked again next time
    reloaded.compact(keep={"a", "b"})
    assert len(_lines(tmp_path)) == 1
    assert SyncState.load(tmp_path).entries == reloaded.entries
