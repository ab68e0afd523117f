"""The engine's 20 ms media clock: ticks scheduled against absolute deadlines, lateness measured.

Scheduling each tick at `start + n * period` (not "now + period") means a late tick does not push the
following ones back, so the media clock never drifts from wall time. When the loop falls more than a
few ticks behind (overload, a stalled process) the missed ticks are skipped and counted rather than
run in a burst that would flood the network.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

MAX_CATCH_UP_TICKS = 3
LATENESS_WINDOW = 3000  # last 60 s of 20 ms ticks


class TickClock:
    """Calls `on_tick(now_ms)` every `period_ms` on the running loop."""

    def __init__(self, on_tick: Callable[[float], None], period_ms: float = 20.0) -> None:
        self.on_tick = on_tick
        self.period_ms = period_ms
        self.ticks = 0
        self.skipped = 0
        self._lateness = np.zeros(LATENESS_WINDOW, dtype=np.float32)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._index = 0
        self.busy_ms = 0.0

    @staticmethod
    def now_ms() -> float:
        return time.monotonic() * 1000.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._start = self.now_ms() + self.period_ms
        self._index = 0
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    def _schedule(self) -> None:
        deadline_ms = self._start + self._index * self.period_ms
        # loop.call_at uses the loop's clock (time.monotonic for asyncio and uvloop), in seconds
        self._handle = self._loop.call_at(deadline_ms / 1000.0, self._fire)

    def _fire(self) -> None:
        now = self.now_ms()
        deadline = self._start + self._index * self.period_ms
        behind = int((now - deadline) // self.period_ms)
        if behind > MAX_CATCH_UP_TICKS:
            self.skipped += behind
            self._index += behind
            deadline = self._start + self._index * self.period_ms
        self._lateness[self.ticks % LATENESS_WINDOW] = now - deadline
        self.ticks += 1
        self._index += 1
        began = time.perf_counter()
        try:
            self.on_tick(deadline)
        finally:
            self.busy_ms += (time.perf_counter() - began) * 1000.0
            if self._handle is not None:
                self._schedule()

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
