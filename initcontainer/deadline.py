"""The overall deadline of one sync (TEST_DATA_S3_TIMEOUT): every wait is bounded by it."""

from __future__ import annotations

import time

from common.errors import DeadlineError


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def error(self, doing: str) -> DeadlineError:
        return DeadlineError(
            f"sync did not finish within {self.seconds:g} s ({doing})",
            "raise TEST_DATA_S3_TIMEOUT (e.g. 30m) or check the network path to S3; "
            "a rerun keeps the files already in place",
        )
