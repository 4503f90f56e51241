"""`airgap-eval run` (also `python -m adapter`): one lm_eval job, offline from the staged test
data, against an OpenAI-compatible model URL. docs/adapter.md is the reference; the steps
are in adapter/run.py.

Import order matters: nothing here imports datasets/transformers/huggingface_hub/lm_eval at
module level; they are imported after adapter.offline has set their environment.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from adapter.config import Settings, parser, resolve_config
from adapter.outputs import LOG_NAME, StatusWriter, wait_uploaded, write_done
from common.entry import run_guarded
from common.errors import AirgapError
from common.logs import setup_logging
from common.status import StatusRecord

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None, prog: str = "airgap-eval run") -> int:
    args = parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    if args.build_task_index:
        from adapter.run import build_task_index

        setup_logging(args.verbose)
        return build_task_index(args.task_index)

    try:
        settings = resolve_config(args, os.environ)
    except AirgapError as e:  # no output dir known for sure: the message is all we can give
        setup_logging(args.verbose)
        log.error(e.one_line())
        return int(e.exit_code)
    fresh = {d: not d.exists() for d in (settings.output_dir, settings.work_dir)}
    try:
        setup_logging(settings.verbose, log_file=settings.output_dir / LOG_NAME)
    except OSError as e:
        setup_logging(settings.verbose)
        log.warning("cannot write the log into %s: %s", settings.output_dir, e)
    _say_defaults(settings, fresh)

    from adapter.run import Run  # after logging

    status = StatusRecord(component="run")
    writer = StatusWriter(settings.output_dir, status, heartbeat_s=settings.heartbeat_s)
    run = Run(settings, status, writer)
    code = run_guarded(run.execute, status, writer.path)
    if run.events is not None:
        run.events.finish(status, run.results, settings.output_dir)
    try:
        write_done(settings.output_dir, code)
    except OSError as e:
        log.warning("could not write the done marker: %s", e)
    if settings.terminal_events == "sidecar":
        wait_uploaded(settings.output_dir, settings.wait_uploaded_s)
    if code == 0:  # a failure ends with its [CODE] line (README, "Exit codes")
        scores = ", ".join(str(p) for p in run.files if p.name.startswith("results")) or "-"
        log.info(
            "run completed: exit 0 in %.1f s -- scores: %s; status record: %s; log: %s",
            status.seconds or 0, scores, writer.path, settings.output_dir / LOG_NAME,
        )  # fmt: skip
    logging.shutdown()
    return code


def _say_defaults(settings: Settings, fresh: dict[Path, bool]) -> None:
    """The pod's default dirs on a workstation are a surprise: say where things go."""
    dirs = {"--output-dir": settings.output_dir, "--work-dir": settings.work_dir}
    for flag in settings.defaulted:
        path = dirs[flag]
        var = f"AIRGAP_EVAL_{flag.removeprefix('--').replace('-', '_').upper()}"
        (log.warning if fresh[path] else log.info)(
            "no %s or %s given: using the default %s%s",
            flag, var, path, " (created now)" if fresh[path] else "",
        )  # fmt: skip
