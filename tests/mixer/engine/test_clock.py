"""The 20 ms media clock: absolute deadlines (no drift after a slow tick), skipping after stalls."""
import asyncio
import time

import uvloop

from mixer.engine.clock import MAX_CATCH_UP_TICKS, TickClock


def run_clock(seconds: float, on_tick) -> TickClock:
    async def scenario():
        clock = TickClock(on_tick)
        clock.start()
        await asyncio.sleep(seconds)
        clock.stop()
        return clock

    return uvloop.run(scenario())


def test_deadlines_stay_on_the_grid_after_a_slow_tick():
    deadlines = []

    def on_tick(deadline_ms):
        deadlines.append(deadline_ms)
        if len(deadlines) == 10:
            time.sleep(0.035)  # one tick overruns by almost two periods

    clock = run_clock(1.0, on_tick)
    steps = [b - a for a, b in zip(deadlines, deadlines[1:])]
    assert all(abs(step - 20.0) < 1e-6 for step in steps), "ticks must stay on the 20 ms grid"
    # 1 s holds ~50 ticks; a drifting clock would have lost the overrun
    assert 47 <= clock.ticks <= 51
    assert clock.skipped == 0
    assert clock.stats()["tick_lateness_max_ms"] >= 10.0  # the overrun was measured


def test_a_long_stall_skips_ticks_instead_of_bursting():
    calls = []

    def on_tick(deadline_ms):
        calls.append(deadline_ms)
        if len(calls) == 5:
            time.sleep(0.2)  # 10 periods

    clock = run_clock(0.6, on_tick)
    assert clock.skipped >= 10 - MAX_CATCH_UP_TICKS - 1
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert max(gaps) >= 20.0 * (10 - MAX_CATCH_UP_TICKS - 1)  # jumped forward, did not replay
