"""The s5cmd binary: list a prefix, and copy many objects in one process whose `--json`
lines are read as they stream, so each file can be verified and placed as soon as it lands.
Its error lines become the same typed errors as boto3's."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from common.errors import (
    AirgapError,
    NotFoundError,
)
from common.s3 import S3Object, folder, s5cmd_args, s5cmd_error, s5cmd_error_lines
from common.s3settings import S3Connection
from initcontainer.deadline import Deadline
from initcontainer.failures import worst
from initcontainer.plan import Item

# s5cmd treats these as wildcards in a source URL: such prefixes are listed with boto3.
GLOB_CHARS = "*?["


def _env(conn: S3Connection) -> dict[str, str]:
    return {**os.environ, **conn.env()}


def list_objects(
    binary: str, conn: S3Connection, bucket: str, prefix: str, deadline: Deadline
) -> list[S3Object]:
    """Every object below the prefix folder (`data` never matches `data-old/`)."""
    base = folder(prefix)
    url = f"s3://{bucket}/{base}"
    what = f"listing {url}"
    try:
        proc = subprocess.run(
            [binary, *s5cmd_args(conn, 1), "ls", url + "*"],
            capture_output=True,
            text=True,
            env=_env(conn),
            timeout=deadline.remaining(),
        )
    except subprocess.TimeoutExpired:
        raise deadline.error(what) from None
    objects = []
    for line in proc.stdout.splitlines():
        msg = json.loads(line)
        key = msg["key"].removeprefix(f"s3://{bucket}/")
        objects.append(
            S3Object(key, key[len(base) :], int(msg.get("size", 0)), msg.get("etag", ""))
        )
    if proc.returncode != 0:
        errors = [e for e in s5cmd_error_lines(proc.stderr) if "no object found" not in e]
        if errors:
            raise worst([s5cmd_error(e, conn, bucket, what) for e in errors], 1)
        if not objects and "no object found" not in proc.stderr:
            raise AirgapError(f"s5cmd failed while {what}: {proc.stderr.strip()[-500:]}")
    return objects


def _commands(bucket: str, items: list[Item], whole: tuple[str, Path] | None) -> str:
    """One `cp --raw` per object; or, when nearly the whole prefix is wanted, one wildcard
    `cp` of the prefix (it spares s5cmd a HEAD request per object) plus `cp --raw` for the
    keys it excludes. Wildcard copies follow `..` in keys out of their target (s5cmd 2.3
    writes `data/../../x` two levels up): every key holding `..` is excluded from it."""
    lines = []
    if whole is not None:
        prefix, root = whole
        src = f"s3://{bucket}/{folder(prefix)}*"
        lines.append(f"cp --exclude '*..*' {shlex.quote(src)} {shlex.quote(str(root) + '/')}")
        items = [i for i in items if ".." in i.key]
    lines += [
        f"cp --raw {shlex.quote(f's3://{bucket}/{i.key}')} {shlex.quote(str(i.partial))}"
        for i in items
    ]
    return "".join(line + "\n" for line in lines)


def copy(
    binary: str,
    conn: S3Connection,
    bucket: str,
    items: list[Item],
    workers: int,
    deadline: Deadline,
    command_file: Path,
    whole: tuple[str, Path] | None = None,
) -> Iterator[Item]:
    """Download each item to its `partial` path; yield items as s5cmd reports them done.

    `whole` = (prefix, partial root): copy the whole prefix in one wildcard command; files
    it brings that are not in `items` are deleted. Raises the typed error of the failed
    downloads (if any) once s5cmd exits, and a DeadlineError (after killing s5cmd) when
    the deadline passes.
    """
    by_dest = {str(i.partial): i for i in items}
    command_file.parent.mkdir(parents=True, exist_ok=True)
    command_file.write_text(_commands(bucket, items, whole))
    proc = subprocess.Popen(
        [binary, *s5cmd_args(conn, workers), "run", str(command_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(conn),
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr or ()), daemon=True)
    reader.start()
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(deadline.remaining(), expire)
    timer.start()
    done = 0
    try:
        for line in proc.stdout:
            msg = json.loads(line)
            if not msg.get("success"):
                continue
            if item := by_dest.get(msg.get("destination", "")):
                done += 1
                yield item
            else:  # brought by the wildcard, but already in place (or listed too late)
                Path(msg.get("destination", "")).unlink(missing_ok=True)
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # interrupted (SIGTERM) or the consumer failed
            proc.kill()
            proc.wait()
        reader.join(5)
    what = f"downloading from s3://{bucket}/"
    if timed_out.is_set():
        raise deadline.error(what)
    if proc.returncode != 0:
        errors = s5cmd_error_lines("".join(stderr))
        if not errors:
            tail = "".join(stderr).strip()[-500:]
            raise AirgapError(f"s5cmd exited with {proc.returncode} while {what}: {tail}")
        raise worst([s5cmd_error(e, conn, bucket, what) for e in errors], len(items))
    if done < len(items):
        raise NotFoundError(
            f"{len(items) - done} of {len(items)} objects vanished from s3://{bucket}/ "
            "while syncing",
            "something deletes objects in the prefix: wait for it to finish, then rerun",
        )
