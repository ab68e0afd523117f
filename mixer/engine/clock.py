"""The engine's 20 ms media clock: ticks scheduled against absolute deadlines, lateness measured.

Scheduling each tick at `start + n * period` (not "now + period") means a late tick does not push the
following ones back, so the media clock never drifts from wall time. When the loop falls more than a
few ticks behind (overload, a stalled process) the missed ticks are skipped and counted rather than
run in a burst that would flood the network.

Each tick hands its deadline to the conferences (`on_tick(deadline_ms)`). Everything that keeps
media time derives it from that value, never from counting ticks: after skipped ticks the next
deadline has jumped by the time that passed, so outgoing RTP timestamps, recordings and jitter
buffers all see the stall as the gap in time it was.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from mixer.metrics import TICK_LATENESS_BUCKETS, FixedHistogram

MAX_CATCH_UP_TICKS = 3
LATENESS_WINDOW = 3000  # last 60 s of 20 ms ticks


class TickClock:
    """Calls `on_tick(now_ms)` every `period_ms` on the running loop."""

    def __init__(self, on_tick: Callable[[float], None], period_ms: float = 20.0,
                 time_ms: Callable[[], float] | None = None) -> None:
        self.on_tick = on_tick
        self.period_ms = period_ms
        self._time_ms = time_ms or self.now_ms  # injectable, so tests can drive time themselves
        self.ticks = 0
        self.skipped = 0
        self._lateness = np.zeros(LATENESS_WINDOW, dtype=np.float32)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._index = 0
        self.busy_ms = 0.0
        # since start, for the metrics: lateness of every tick and the time each tick's work took
        self.lateness_seconds = FixedHistogram(TICK_LATENESS_BUCKETS)
        self.duration_seconds = FixedHistogram(TICK_LATENESS_BUCKETS)
        self._after_tick: list[asyncio.Future] = []

    @staticmethod
    def now_ms() -> float:
        return time.monotonic() * 1000.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.reset(self._time_ms())
        self._schedule()

    def reset(self, now_ms: float) -> None:
        """Start the grid one period after `now_ms` (done by `start()`; tests call it directly)."""
        self._start = now_ms + self.period_ms
        self._index = 0

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._wake_waiters()

    async def after_tick(self) -> None:
        """Return right after the next tick has run (at once when the clock is stopped): work
        that holds the loop for a while, such as a metrics scrape, then runs in the gap before the
        following tick instead of delaying it."""
        if self._handle is None:
            return
        future = asyncio.get_running_loop().create_future()
        self._after_tick.append(future)
        await future

    def _wake_waiters(self) -> None:
        waiters, self._after_tick = self._after_tick, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    @property
    def running(self) -> bool:
        return self._handle is not None

    def _schedule(self) -> None:
        deadline_ms = self._start + self._index * self.period_ms
        # loop.call_at uses the loop's clock (time.monotonic for asyncio and uvloop), in seconds
        self._handle = self._loop.call_at(deadline_ms / 1000.0, self._fire)

    def _fire(self) -> None:
        deadline = self.advance(self._time_ms())
        began = time.perf_counter()
        try:
            self.on_tick(deadline)
        finally:
            elapsed = time.perf_counter() - began
            self.busy_ms += elapsed * 1000.0
            self.duration_seconds.observe(elapsed)
            if self._handle is not None:
                self._schedule()
            if self._after_tick:
                self._wake_waiters()

    def advance(self, now_ms: float) -> float:
        """The deadline of the tick to run on a wake-up at `now_ms`, skipping (and counting) the
        missed ticks when more than MAX_CATCH_UP_TICKS behind; moves the grid on by one."""
        deadline = self._start + self._index * self.period_ms
        behind = int((now_ms - deadline) // self.period_ms)
        if behind > MAX_CATCH_UP_TICKS:
            self.skipped += behind
            self._index += behind
            deadline = self._start + self._index * self.period_ms
        self._lateness[self.ticks % LATENESS_WINDOW] = now_ms - deadline
        self.lateness_seconds.observe((now_ms - deadline) / 1000.0)
        self.ticks += 1
        self._index += 1
        return deadline

    @property
    def next_deadline_ms(self) -> float:
        return self._start + self._index * self.period_ms

    def lateness_ms(self, percentile: float) -> float:
        n = min(self.ticks, LATENESS_WINDOW)
        if n == 0:
            return 0.0
        return float(np.percentile(self._lateness[:n], percentile))

    def stats(self) -> dict:
        return {
            "ticks": self.ticks,
            "skipped_ticks": self.skipped,
            "tick_lateness_p50_ms": round(self.lateness_ms(50), 3),
            "tick_lateness_p99_ms": round(self.lateness_ms(99), 3),
            "tick_lateness_max_ms": round(self.lateness_ms(100), 3),
            "tick_busy_ms_mean": round(self.busy_ms / self.ticks, 3) if self.ticks else 0.0,
        }
