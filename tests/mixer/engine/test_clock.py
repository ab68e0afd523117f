"""The 20 ms media clock: absolute deadlines (no drift after a slow tick), skipping after stalls.

Time is injected (`TickClock.advance(now_ms)` is what a wake-up of the event loop runs), so these
tests hold on a loaded machine; wall-clock behaviour is measured in `bench/clock_accuracy.py`.
"""
import asyncio
import time

import uvloop
from hypothesis import given, settings, strategies as st

from mixer.engine.clock import MAX_CATCH_UP_TICKS, TickClock

PERIOD = 20.0


def clock_at(start_ms: float = 1000.0) -> TickClock:
    clock = TickClock(lambda deadline: None, PERIOD)
    clock.reset(start_ms)
    return clock


def test_deadlines_stay_on_the_grid_after_a_slow_tick():
    clock = clock_at()
    deadlines = []
    for k in range(20):
        wake = clock.next_deadline_ms + (35.0 if k == 10 else 0.5)  # one wake-up 35 ms late
        deadlines.append(clock.advance(wake))
    assert all(b - a == PERIOD for a, b in zip(deadlines, deadlines[1:])), deadlines
    assert clock.skipped == 0
    assert clock.stats()["tick_lateness_max_ms"] == 35.0


def test_a_late_wake_up_within_the_catch_up_limit_replays_the_missed_ticks():
    clock = clock_at()
    first = clock.advance(clock.next_deadline_ms)
    late = clock.advance(first + PERIOD * (MAX_CATCH_UP_TICKS + 1))  # 3 periods behind after it
    assert late == first + PERIOD and clock.skipped == 0
    # the loop runs the next ones at once (their deadlines have passed) until it is back on time
    burst = [clock.advance(first + PERIOD * (MAX_CATCH_UP_TICKS + 1)) for _ in range(MAX_CATCH_UP_TICKS)]
    assert burst == [first + PERIOD * k for k in range(2, 2 + MAX_CATCH_UP_TICKS)]


def test_a_long_stall_skips_ticks_and_the_deadline_jumps_by_the_time_that_passed():
    clock = clock_at()
    before = clock.advance(clock.next_deadline_ms)
    after = clock.advance(before + 600.0 + 3.0)  # the process was paused for 600 ms
    assert clock.skipped == 600 // PERIOD - 1
    assert after == before + 600.0  # media time went on as wall time did
    assert clock.stats()["ticks"] == 2 and clock.stats()["skipped_ticks"] == 29


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(0.0, 19.9), st.floats(20.0, 3500.0)), min_size=1, max_size=200))
def test_any_sequence_of_late_skipped_and_on_time_ticks_keeps_media_time_equal_to_wall_time(lateness):
    """Whatever the wake-ups, every deadline is on the grid, deadlines only grow, no tick runs more
    than MAX_CATCH_UP_TICKS periods behind, and ticks run + ticks skipped = periods elapsed."""
    start = 5000.0
    clock = clock_at(start)
    deadlines = []
    for late in lateness:
        wake = max(clock.next_deadline_ms + late, deadlines[-1] if deadlines else 0.0)
        deadline = clock.advance(wake)
        assert wake - deadline <= PERIOD * (MAX_CATCH_UP_TICKS + 1)
        assert (deadline - start - PERIOD) % PERIOD == 0
        assert not deadlines or deadline > deadlines[-1]
        deadlines.append(deadline)
    elapsed_periods = (deadlines[-1] - (start + PERIOD)) / PERIOD + 1  # the grid starts a period on
    assert clock.ticks + clock.skipped == elapsed_periods


def test_on_the_event_loop_a_stalled_tick_makes_the_next_deadline_jump():
    """The clock on a real uvloop: a tick that blocks the loop for 200 ms (10 periods) is followed
    by a tick whose deadline jumped, not by a burst of ten. Only lower bounds on time are checked."""
    calls = []

    def on_tick(deadline_ms):
        calls.append(deadline_ms)
        if len(calls) == 5:
            time.sleep(0.2)

    async def scenario():
        clock = TickClock(on_tick)
        clock.start()
        while len(calls) < 8:
            await asyncio.sleep(0.02)
        clock.stop()
        return clock

    clock = uvloop.run(scenario())
    assert clock.skipped >= 10 - MAX_CATCH_UP_TICKS - 1
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert max(gaps) >= PERIOD * (10 - MAX_CATCH_UP_TICKS - 1)
    assert all(gap % PERIOD == 0 for gap in gaps)
