"""One typed error hierarchy. Every error says what failed and how to fix it, and maps to
a documented exit code (README, "Exit codes")."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1  # a bug: please report it with the log
    CONFIG = 2  # bad flag, env var, spec field or missing required setting
    AUTH = 3  # credentials refused (S3 or model endpoint)
    NOT_FOUND = 4  # bucket, prefix or object missing
    UNREACHABLE = 5  # endpoint unreachable (DNS, refused connection, TLS)
    TIMEOUT = 6  # a deadline passed
    INTEGRITY = 7  # a file does not match its manifest entry
    UNSAFE_PATH = 8  # an object key would land outside the destination
    MISSING_DATA = 9  # staged data incomplete or unreadable for the job
    MODEL = 10  # the model endpoint answered, but not usefully
    EVALUATION = 11  # lm_eval failed while evaluating
    UPLOAD = 12  # results could not be uploaded
    NO_SPACE = 13  # the destination's filesystem is full
    INTERRUPTED = 130  # SIGINT/SIGTERM


class AirgapError(Exception):
    """Base error: `message` says what failed, `hint` says how to fix it."""

    code = "INTERNAL"
    exit_code = ExitCode.INTERNAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"[{self.code}] {self.message}" + (f" -- fix: {self.hint}" if self.hint else "")


class ConfigError(AirgapError):
    code = "CONFIG"
    exit_code = ExitCode.CONFIG


class AuthError(AirgapError):
    code = "AUTH"
    exit_code = ExitCode.AUTH


class NotFoundError(AirgapError):
    code = "NOT_FOUND"
    exit_code = ExitCode.NOT_FOUND


class UnreachableError(AirgapError):
    code = "UNREACHABLE"
    exit_code = ExitCode.UNREACHABLE


class DeadlineError(AirgapError):
    code = "TIMEOUT"
    exit_code = ExitCode.TIMEOUT


class IntegrityError(AirgapError):
    code = "INTEGRITY"
    exit_code = ExitCode.INTEGRITY


class UnsafePathError(AirgapError):
    code = "UNSAFE_PATH"
    exit_code = ExitCode.UNSAFE_PATH


class MissingDataError(AirgapError):
    code = "MISSING_DATA"
    exit_code = ExitCode.MISSING_DATA


class ModelEndpointError(AirgapError):
    code = "MODEL"
    exit_code = ExitCode.MODEL


class EvaluationError(AirgapError):
    code = "EVALUATION"
    exit_code = ExitCode.EVALUATION


class UploadError(AirgapError):
    code = "UPLOAD"
    exit_code = ExitCode.UPLOAD


class NoSpaceError(AirgapError):
    code = "NO_SPACE"
    exit_code = ExitCode.NO_SPACE


class Interrupted(AirgapError):
    code = "INTERRUPTED"
    exit_code = ExitCode.INTERRUPTED


class AdapterDied(AirgapError):
    """Recorded in the adapter's status.json when the sidecar finds it dead."""

    code = "ADAPTER_DIED"
    exit_code = ExitCode.EVALUATION


class EgressBlocked(UnreachableError):
    """Offline, a connection to a host that is not allowed: raised inside the library that
    tried to connect, and propagates as this type."""
