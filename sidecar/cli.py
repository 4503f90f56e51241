"""`airgap-eval upload` (also `python -m sidecar`): wait for the adapter, upload the results dir
to `<dest>/<job id>/<benchmark id>/`, write the `uploaded` marker, send the terminal event."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from common.entry import run_guarded
from common.errors import AdapterDied, AirgapError, ConfigError
from common.layout import STATE_DIR_NAME, STATUS_NAME, UPLOADED_MARKER
from common.logs import setup_logging
from common.status import StatusRecord, read_status
from sidecar.config import UploadConfig, parser, resolve_config, results_dir
from sidecar.upload import Uploader
from sidecar.watch import Outcome, StopFlag, observe, read_done

if TYPE_CHECKING:
    from evalhub.adapter import JobResults

    from sidecar.report import Reporter

log = logging.getLogger(__name__)

UPLOAD_STATUS = "upload-status.json"  # the sidecar's own record, in the state dir


def _ids(cfg: UploadConfig, status: StatusRecord | None) -> tuple[str, str] | None:
    spec = cfg.job_spec
    job = cfg.job_id or (spec.id if spec else None) or (status.job_id if status else None)
    bench = (
        cfg.benchmark_id
        or (spec.benchmark_id if spec else None)
        or (status.benchmark_id if status else None)
    )
    return (job, bench) if job and bench else None


def _uploader(cfg: UploadConfig, status: StatusRecord | None) -> Uploader | None:
    ids = _ids(cfg, status)
    return Uploader(cfg, *ids) if ids else None


def _reporter(cfg: UploadConfig) -> Reporter | None:
    spec = cfg.job_spec
    if spec is None or not spec.callback_url:
        return None
    try:
        from sidecar.report import Reporter
    except ImportError as e:
        raise ConfigError(
            f"the job spec has a callback_url but eval-hub-sdk's adapter callbacks do not import ({e})",
            "install the sidecar extra: pip install 'airgap-eval[sidecar]'",
        ) from None
    return Reporter(spec, cfg.results_dir / STATE_DIR_NAME)


def _wait(
    cfg: UploadConfig, stop: StopFlag, record: StatusRecord
) -> tuple[Outcome, Uploader | None]:
    """Until the adapter finishes or dies; meanwhile partial uploads every --partial-every s."""
    started = time.monotonic()
    settle = min(5.0, cfg.grace / 4)  # after SIGTERM, time for the adapter to write its status
    next_partial = started + cfg.partial_every
    uploader: Uploader | None = None
    record.phase = "waiting"
    log.info("waiting for the adapter in %s", cfg.results_dir)
    while True:
        now = time.monotonic()
        exited = cfg.once or (stop.at is not None and now - stop.at >= settle)
        outcome = observe(
            cfg.results_dir, waited=now - started, stale_after=cfg.stale_after,
            start_timeout=cfg.start_timeout, exited=exited,
        )  # fmt: skip
        if outcome is not None and stop.is_set() and outcome.kind != "finished":
            reason = f"the pod is terminating (SIGTERM) and {outcome.reason}"
            return replace(outcome, kind="stopped", reason=reason), uploader
        if outcome is not None:
            return outcome, uploader
        if stop.is_set():
            time.sleep(0.1)
            continue
        if uploader is None and (
            uploader := _uploader(cfg, read_status(cfg.results_dir / STATUS_NAME))
        ):
            uploader.prepare()
        if cfg.partial_every and now >= next_partial:
            if uploader is not None:
                try:
                    r = uploader.sync(final=False, timeout=cfg.deadline)
                    log.info(
                        "partial upload: %d/%d files sent (%.1f MB) in %.1f s",
                        r.uploaded,
                        r.files,
                        r.bytes / 1e6,
                        r.seconds,
                    )
                except AirgapError as e:
                    log.warning("partial upload failed, the next one retries: %s", e.one_line())
            next_partial = time.monotonic() + cfg.partial_every
        stop.event.wait(cfg.poll_interval)


def _wait_for_done(cfg: UploadConfig, settle: float) -> None:
    end = time.monotonic() + settle
    while not read_done(cfg.results_dir)[0] and time.monotonic() < end:
        time.sleep(0.05)


def _record_death(cfg: UploadConfig, outcome: Outcome) -> AdapterDied:
    """Write the failed status.json the adapter could not write, so it is uploaded too."""
    error = AdapterDied(
        outcome.reason,
        "see the adapter container's log and `kubectl describe pod` (OOMKilled?); a rerun with "
        "parameters.cache_dir on persistent storage resumes finished requests",
    )
    ids = _ids(cfg, outcome.status)
    record = outcome.status or StatusRecord(
        component="run", job_id=ids[0] if ids else None, benchmark_id=ids[1] if ids else None
    )
    record.finish(error)
    if outcome.exit_code is not None and record.error is not None:
        record.exit_code = record.error.exit_code = outcome.exit_code
    record.write(cfg.results_dir / STATUS_NAME)
    log.error("adapter died: %s", outcome.reason)
    return error


def _exports(
    cfg: UploadConfig, reporter: Reporter | None, uploader: Uploader, outcome: Outcome
) -> JobResults | None:
    """The job's OCI artifact (whatever the results dir holds, also after a death: the files
    S3 received, redacted ones included) and, for a completed job, its MLflow run; then the
    JobResults of the completed event (None when the adapter did not complete)."""
    spec, status = cfg.job_spec, outcome.status
    if spec is None:
        return None
    from common.exports import Exports, callback_settings
    from sidecar.report import completed_results

    exports: Exports | None = None
    if reporter is not None:
        exports = Exports(spec, reporter.callbacks)
    elif spec.exports or spec.experiment_name:
        from evalhub.adapter import DefaultCallbacks

        callbacks = DefaultCallbacks(
            job_id=spec.id, benchmark_id=spec.benchmark_id, provider_id=spec.provider_id,
            benchmark_index=spec.benchmark_index, **callback_settings(),
        )  # fmt: skip
        exports = Exports(spec, callbacks)
    completed = outcome.kind == "finished" and status is not None and status.state == "completed"
    results = completed_results(spec, status, uploader.uri) if completed and status else None
    if exports is not None and (results is not None or spec.exports):
        files = {rel: f.source for rel, f in uploader.scanner.scan().items()}
        if results is not None:
            exports.apply(results, files, uploader.manifest_body())
        else:
            exports.oci(files, uploader.manifest_body())
    return results


def _report_outcome(
    reporter: Reporter,
    outcome: Outcome,
    results: JobResults | None,
    uri: str,
    deadline: Callable[[], float],
) -> None:
    from evalhub.models.api import MessageOrigin

    status = outcome.status
    if results is not None:
        reporter.completed(results, deadline)
    elif outcome.kind == "finished" and status is not None:
        err = status.error
        text = (
            err.message + (f" -- fix: {err.hint}" if err.hint else "")
            if err
            else f"the adapter failed (exit code {outcome.exit_code}) without an error record"
        )
        code = err.code.lower() if err else "adapter_failed"
        reporter.failed(text, code, MessageOrigin.ADAPTER, deadline)
    else:
        text = f"{outcome.reason}; results uploaded to {uri}"
        reporter.failed(text, "adapter_died", MessageOrigin.RUNTIME, deadline)


def upload(args: argparse.Namespace, record: StatusRecord) -> None:
    cfg = resolve_config(args)
    if not cfg.results_dir.is_dir():
        raise ConfigError(
            f"results dir {cfg.results_dir} does not exist",
            "mount the volume the adapter writes to, or pass --results-dir / RESULTS_DIR",
        )
    reporter = _reporter(cfg)
    stop = StopFlag()
    with stop.installed():
        outcome, uploader = _wait(cfg, stop, record)
        final_start = time.monotonic()

        def deadline() -> float:
            at = final_start + cfg.deadline
            return min(at, stop.at + cfg.grace) if stop.at is not None else at

        log.info(
            "adapter %s%s: final upload",
            outcome.kind,
            f" ({outcome.reason})" if outcome.reason else "",
        )
        uploader = uploader or _uploader(cfg, outcome.status)
        if uploader is None:
            raise ConfigError(
                "no job id / benchmark id for the S3 layout",
                "mount the job spec (--job-spec / EVALHUB_JOB_SPEC_PATH) or pass --job-id and --benchmark-id",
            )
        record.job_id, record.benchmark_id = _ids(cfg, outcome.status) or (None, None)
        if reporter:
            reporter.persisting()
        if outcome.kind != "finished":
            _record_death(cfg, outcome)
        record.phase = "uploading"
        try:
            result = uploader.sync_until(deadline)
            if outcome.kind == "finished":
                # The adapter may still write (a last log line) between its terminal status
                # and `done`: one more pass once `done` is there; usually it sends nothing.
                _wait_for_done(cfg, settle=2.0)
                again = uploader.sync_until(deadline)
                result = replace(
                    again,
                    uploaded=result.uploaded + again.uploaded,
                    bytes=result.bytes + again.bytes,
                )
        except AirgapError as e:
            if reporter:
                from evalhub.models.api import MessageOrigin

                reporter.failed(e.one_line(), "upload_failed", MessageOrigin.RUNTIME, deadline)
            raise
        (cfg.results_dir / UPLOADED_MARKER).write_text(uploader.uri + "\n")
        record.progress = {
            "files": result.files,
            "uploaded": result.uploaded,
            "bytes": result.bytes,
            "dest": uploader.uri,
        }
        log.info(
            "uploaded %d of %d files (%.1f MB) to %s in %.1f s",
            result.uploaded, result.files, result.bytes / 1e6, uploader.uri, result.seconds,
        )  # fmt: skip
        if outcome.status is not None:
            record.primary_score = outcome.status.primary_score
        record.phase = "exporting"
        results = _exports(cfg, reporter, uploader, outcome)
        if reporter:
            record.phase = "reporting"
            _report_outcome(reporter, outcome, results, uploader.uri, deadline)


def main(argv: list[str], prog: str = "airgap-eval upload") -> int:
    args = parser(prog).parse_args(argv)
    setup_logging(args.verbose)
    record = StatusRecord(component="upload")
    root = results_dir(args)
    state = root / STATE_DIR_NAME / UPLOAD_STATUS if root.is_dir() else None
    return run_guarded(lambda: upload(args, record), record, state, args.termination_log)
