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
from pathlib import Path

from common.engine import ENGINES
from common.layout import DEFAULT_TEST_DATA
from common.logs import setup_logging
from common.s3settings import TEST_DATA_SECRET_DIR
from initcontainer.config import DEFAULT_WORKERS, SyncConfig, resolve_config
from initcontainer.start import Start, begin
from initcontainer.state import status_path


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Sync an S3 prefix (a folder) into a local directory: parallel, "
        "verified against manifest.json when the prefix holds one, resumable.",
    )
    p.add_argument("--bucket", help="bucket (default: env TEST_DATA_S3_BUCKET)")
    p.add_argument("--prefix", help="folder in the bucket (default: env TEST_DATA_S3_KEY)")
    p.add_argument(
        "--dest", type=Path, default=DEFAULT_TEST_DATA, help="target dir (default: %(default)s)"
    )
    p.add_argument("--endpoint", help="S3 endpoint URL (default: env/secret AWS_S3_ENDPOINT)")
    p.add_argument("--no-verify-ssl", action="store_true", help="skip TLS verification")
    p.add_argument(
        "--secret-dir",
        type=Path,
        default=TEST_DATA_SECRET_DIR,
        help="dir of secret files named like the AWS_* env vars (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        help="overall deadline: seconds or a Go duration like 10m "
        "(default: env TEST_DATA_S3_TIMEOUT, else 10m)",
    )
    p.add_argument("--workers", type=int, help=f"parallel downloads (default: {DEFAULT_WORKERS})")
    p.add_argument(
        "--engine", choices=ENGINES, default="auto", help="auto: s5cmd if found, else boto3"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str], prog: str = "airgap-eval sync") -> int:
    args = parser(prog).parse_args(argv)
    setup_logging(args.verbose)
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
        cfg, start = early if early is not None else (_config(args), None)
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


def _config(args: argparse.Namespace) -> SyncConfig:
    return resolve_config(
        bucket=args.bucket,
        prefix=args.prefix,
        dest=args.dest,
        endpoint=args.endpoint,
        no_verify_ssl=args.no_verify_ssl,
        secret_dir=args.secret_dir,
        timeout=args.timeout,
        workers=args.workers,
        engine=args.engine,
    )


def _begin_early(args: argparse.Namespace) -> tuple[SyncConfig, Start] | None:
    """Any failure here is met again, and reported, by the guarded run."""
    try:
        cfg = _config(args)
        return cfg, begin(cfg)
    except Exception:
        return None


def _stuck_workers() -> bool:
    # Daemon or not: interpreter exit also joins every thread-pool worker.
    main = threading.main_thread()
    return any(t.is_alive() and t is not main for t in threading.enumerate())
