"""The s5cmd layer on its own: a wildcard copy never follows `..` out of its target."""

from __future__ import annotations

from pathlib import Path

from common.s3 import s5cmd_binary
from common.s3settings import S3Connection
from initcontainer import s5cmd
from initcontainer.deadline import Deadline
from initcontainer.plan import Item
from tests.initcontainer.stub_s3 import stub_s3


def test_wildcard_copy_stays_inside_its_target(tmp_path: Path) -> None:
    """s5cmd 2.3 writes `data/../../x` two levels above a wildcard copy's target; a key
    listed after our own check (a race) must not get there."""
    binary = s5cmd_binary()
    assert binary is not None
    keys = ["data/ok.txt", "data/a..b.txt", "data/../../escape1.txt", "data/x/../../../escape2.txt"]
    root = tmp_path / "a" / "b" / "partial"
    items = [
        Item(f"data/{rel}", rel, 1, "e", tmp_path / "final" / rel, root / rel)
        for rel in ("ok.txt", "a..b.txt")  # `a..b.txt` is legal: fetched by its own cp --raw
    ]
    with stub_s3(keys) as endpoint:
        conn = S3Connection(endpoint=endpoint, access_key="k", secret_key="s")
        got = list(
            s5cmd.copy(
                binary, conn, "bkt", items, 4, Deadline(30), tmp_path / "cmds", ("data", root)
            )
        )
    assert sorted(i.rel for i in got) == ["a..b.txt", "ok.txt"]
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["a/b/partial/a..b.txt", "a/b/partial/ok.txt", "cmds"]

