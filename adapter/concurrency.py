"""How many model requests may be in flight: fixed (the job spec set num_concurrent) or found
at run time (it did not).

The adaptive limit probes the endpoint the way a latency-bound server (a GPU serving N
sequences at once, queueing the rest) asks to be probed. Each window of answers gives a
throughput and a mean latency:

- it starts moderate (`START`) and grows (doubling, then +1/8) while latency stays near the
  floor (the lowest window latency) or throughput still rises (over the last `MEMORY`);
- latency 1.5x the floor with no throughput gain means requests queue (in the server or in
  the client's own event loop): it shrinks by 1/8, down to `START` — below that only after
  the server turned requests away, since a queue of a few costs a GPU server nothing;
- a turn-away (429/503) or a failed attempt halves it at once (a burst of them counts once),
  and `Gate.pause()` holds every new request for the server's Retry-After.

It never leaves [1, ceiling]. The answers do not depend on it: only when they come.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

START = 8
MEMORY = 16  # windows of recent throughput history
GROW_WHILE_LATENCY_BELOW = 1.2  # x the floor (lowest window latency): no queueing yet
SHRINK_ABOVE = 1.5  # x the floor, with no throughput gain: requests are queueing
MIN_GAIN = 1.05  # throughput must rise 5% to count as a gain


@dataclass
class Window:
    started: float
    answers: int = 0
    latency_sum: float = 0.0
    peak_in_flight: int = 0


@dataclass
class Limit:
    """The current limit and the controller that moves it (plain state, no I/O)."""

    ceiling: int
    adaptive: bool
    value: int = 0
    slow_start: bool = True
    lowest: int = START  # 1 once the server has turned requests away
    last_cut: float = 0.0
    floor_latency: float | None = None  # since the start or the last turn-away
    recent: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=MEMORY)
    )  # throughput of the last windows
    history: list[int] = field(default_factory=list)  # every value taken (for the log/tests)

    def __post_init__(self) -> None:
        self.ceiling = max(1, self.ceiling)
        if not self.value:
            self.value = min(START, self.ceiling) if self.adaptive else self.ceiling
        self.history.append(self.value)

    def _set(self, value: int) -> None:
        value = max(1, min(self.ceiling, value))
        if value != self.value:
            self.value = value
            self.history.append(value)

    def on_window(self, w: Window, now: float) -> None:
        """A window of answers without errors has closed."""
        if not self.adaptive or w.answers == 0:
            return
        latency = w.latency_sum / w.answers
        rate = w.answers / max(now - w.started, 1e-6)
        best = max(self.recent, default=0.0)
        self.recent.append(rate)
        floor = self.floor_latency = min(latency, self.floor_latency or latency)
        gained = rate > best * MIN_GAIN
        saturated = w.peak_in_flight >= self.value  # the limit, not the work left, bounded it
        if latency > floor * SHRINK_ABOVE and not gained:
            self.slow_start = False
            if self.value > self.lowest:
                self._set(max(self.lowest, self.value - max(1, self.value // 8)))
        elif saturated and (gained or latency < floor * GROW_WHILE_LATENCY_BELOW):
            step = self.value if self.slow_start else max(1, self.value // 8)
            self._set(self.value + step)
        elif saturated:
            self.slow_start = False

    def on_trouble(self, now: float) -> None:
        """A turn-away (429/503) or a failed attempt: back off at once; a burst of them (the
        answers to requests sent before the last cut) counts once."""
        if not self.adaptive or now - self.last_cut < max(self.floor_latency or 0.0, 0.05):
            return
        self.last_cut = now
        self.slow_start = False
        self.lowest = 1
        self.recent.clear()  # the server's state changed: measure anew
        self.floor_latency = None
        self._set(self.value // 2)


class Gate:
    """An asyncio gate for at most `limit.value` holders (the value may change any time),
    closed to newcomers until a pause set by a turn-away ends."""

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.in_flight = 0
        self.paused_until = 0.0
        self._cond = asyncio.Condition()
        self._window = Window(time.monotonic())

    async def acquire(self) -> None:
        async with self._cond:
            while True:
                wait = self.paused_until - time.monotonic()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._cond.wait(), wait)
                    continue
                if self.in_flight < self.limit.value:
                    break
                await self._cond.wait()
            self.in_flight += 1
            self._window.peak_in_flight = max(self._window.peak_in_flight, self.in_flight)

    async def release(self, latency: float | None) -> None:
        """`latency` of the answer, or None when the attempt failed."""
        async with self._cond:
            self.in_flight -= 1
            now = time.monotonic()
            if latency is None:
                self.limit.on_trouble(now)
                self._window = Window(now)
            else:
                w = self._window
                w.answers += 1
                w.latency_sum += latency
                if w.answers >= max(2 * self.limit.value, 16):
                    before = self.limit.value
                    self.limit.on_window(w, now)
                    if self.limit.value != before:
                        log.debug("concurrency %d -> %d", before, self.limit.value)
                    self._window = Window(now)
            # wake only as many as may now enter (a grown limit lets several in)
            self._cond.notify(max(0, self.limit.value - self.in_flight))

    async def pause(self, seconds: float) -> None:
        async with self._cond:
            self.paused_until = max(self.paused_until, time.monotonic() + seconds)
