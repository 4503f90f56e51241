"""Many failed downloads, one error: the kind that tells the operator most, with a count."""

from __future__ import annotations

from common.errors import (
    AirgapError,
    AuthError,
    ConfigError,
    DeadlineError,
    NotFoundError,
    UnreachableError,
)

_PRIORITY = (AuthError, ConfigError, NotFoundError, UnreachableError, DeadlineError)


def worst(errors: list[AirgapError], total: int) -> AirgapError:
    chosen = errors[0]
    for kind in _PRIORITY:
        if found := next((e for e in errors if isinstance(e, kind)), None):
            chosen = found
            break
    if total <= 1:
        return chosen
    return type(chosen)(f"{len(errors)} of {total} downloads failed; {chosen.message}", chosen.hint)
