"""`airgap-eval sync` (and `python -m initcontainer`): a thin argparse layer over `sync()`.

On an empty dest the bulk copy starts before pydantic and the rest are imported (~0.2 s of a
2-core machine's start-up, overlapped with the transfer); a SIGTERM in that window is held
and raised once the guard that records it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading

from common.logs import setup_logging
from initcontainer.config import SyncConfig, parser, resolve_config
from initcontainer.start import Start, begin
from initcontainer.state import status_path


def main(argv: list[str], prog: str = "airgap-eval sync") -> int:
    args = parser(prog).parse_args(argv)
    setup_logging(args.verbose)
    if os.environ.get("TEST_DATA_GIT_URL", "").strip():  # EvalHub's rule: git wins over S3
        return _sync_git(args)
    held: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: held.append(signum))
    early = _begin_early(args)

    from common.entry import Terminated, run_guarded
    from common.status import StatusRecord
    from initcontainer.sync import SyncResult, sync

    status = StatusRecord(component="sync")
    result = SyncResult()
    # A run that finds "running" knows this sync has not finished (or was killed); an
    # unwritable dest is reported by the guard.
    with contextlib.suppress(OSError):
        status.write(status_path(args.dest))

    def run() -> None:
        if held:
            if early is not None:
                early[1].storage.stop()
            raise Terminated(signal.Signals(held[0]).name)
        cfg, start = early if early is not None else (resolve_config(args), None)
        try:
            sync(cfg, result, start)
        finally:
            status.progress = result.as_progress()

    code = run_guarded(run, status, status_path(args.dest))
    if code and _stuck_workers():
        # A boto3 download blocked in a read (stalled server) would keep the interpreter
        # alive past the deadline: the record is written, so leave now.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)
    return code


def _sync_git(args: argparse.Namespace) -> int:
    from common.entry import run_guarded
    from common.status import StatusRecord
    from initcontainer.config import resolve_git_source
    from initcontainer.git import GitResult, sync_git

    status = StatusRecord(component="sync")
    result = GitResult()

    def run() -> None:
        try:
            sync_git(resolve_git_source(args), result)
        finally:
            status.progress = result.as_progress()

    return run_guarded(run, status, status_path(args.dest))


def _begin_early(args: argparse.Namespace) -> tuple[SyncConfig, Start] | None:
    """Any failure here is met again, and reported, by the guarded run."""
    try:
        cfg = resolve_config(args)
        return cfg, begin(cfg)
    except Exception:
        return None


def _stuck_workers() -> bool:
    # Daemon or not: interpreter exit also joins every thread-pool worker.
    main = threading.main_thread()
    return any(t.is_alive() and t is not main for t in threading.enumerate())
