"""The guard every image's entry point runs in: typed errors become one log line, a status
record and a documented exit code; never a bare traceback."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from common.errors import AirgapError, Interrupted
from common.status import StatusRecord, write_termination_message

log = logging.getLogger(__name__)


class Terminated(BaseException):
    """Raised by the SIGTERM handler. A BaseException, like KeyboardInterrupt, so that
    `except Exception` retry loops inside libraries (lm_eval wraps each request in tenacity)
    cannot swallow it."""


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


def run_guarded(
    fn: Callable[[], None],
    status: StatusRecord,
    status_path: Path | None,
    termination_log: Path | None = None,
) -> int:
    """Run `fn`, then record how it ended in `status` (written to `status_path`)."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    error: AirgapError | None = None
    try:
        fn()
    except AirgapError as e:
        error = e
    except (KeyboardInterrupt, Terminated) as e:
        error = Interrupted(
            f"stopped by {e or 'SIGINT'}",
            "rerun the same command: work already done is kept and resumed",
        )
    except Exception as e:  # the last resort: an unexpected bug still ends in a record
        log.debug("unexpected error", exc_info=True)
        error = AirgapError(
            f"unexpected {type(e).__name__}: {e}",
            "rerun with AIRGAP_EVAL_DEBUG=1 for the traceback and report it",
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    status.finish(error)
    if error:
        log.error(error.one_line())
    if status_path is not None:
        try:
            status.write(status_path)
        except OSError as e:
            log.warning("could not write status record %s: %s", status_path, e)
    kwargs = {"path": termination_log} if termination_log else {}
    write_termination_message(status.summary(), **kwargs)
    return status.exit_code or 0
