import json
from pathlib import Path

import pytest

from common.entry import run_guarded
from common.errors import AuthError, ExitCode
from common.logs import setup_logging
from common.status import StatusRecord, read_status


def test_typed_error_becomes_record_exit_code_and_termination_message(tmp_path: Path) -> None:
    term = tmp_path / "termination-log"
    term.write_text("")

    def fail() -> None:
        raise AuthError("S3 refused the credentials", "check AWS_ACCESS_KEY_ID")

    code = run_guarded(fail, StatusRecord(component="sync"), tmp_path / "s.json", term)
    assert code == ExitCode.AUTH
    rec = read_status(tmp_path / "s.json")
    assert rec is not None and rec.state == "failed" and rec.error is not None
    assert rec.error.code == "AUTH" and rec.error.hint == "check AWS_ACCESS_KEY_ID"
    assert json.loads(term.read_text())["exit_code"] == ExitCode.AUTH


def test_unexpected_exception_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging()  # binds to the captured stderr

    def boom() -> None:
        raise ValueError("bad")

    code = run_guarded(boom, StatusRecord(component="run"), tmp_path / "s.json")
    err = capsys.readouterr().err
    assert code == ExitCode.INTERNAL
    assert "Traceback" not in err and "unexpected ValueError: bad" in err


def test_success_records_completed(tmp_path: Path) -> None:
    code = run_guarded(lambda: None, StatusRecord(component="upload"), tmp_path / "s.json")
    rec = read_status(tmp_path / "s.json")
    assert code == 0 and rec is not None and rec.state == "completed" and rec.seconds is not None


def test_sigterm_is_not_swallowed_by_except_exception(tmp_path: Path) -> None:
    import os
    import signal

    def retry_loop_that_catches_everything() -> None:
        for _ in range(3):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except Exception:  # what tenacity-style retry loops do
                continue

    code = run_guarded(
        retry_loop_that_catches_everything, StatusRecord(component="run"), tmp_path / "s.json"
    )
    rec = read_status(tmp_path / "s.json")
    assert code == 130 and rec is not None and rec.error is not None
    assert "SIGTERM" in rec.error.message
