"""How well the engine's 20 ms clock keeps wall time on this machine (what tests no longer assert).

    python bench/clock_accuracy.py [--seconds 10] [--stall-ms 600]

Runs `TickClock` on uvloop with an idle tick and prints ticks per second against the 50 expected,
tick lateness p50/p99/max, skipped ticks, and the drift of media time (last deadline minus first)
against wall time. With `--stall-ms`, one tick blocks the loop that long halfway through, and the
run shows the skipped ticks and that media time still equals wall time after it.
"""
from __future__ import annotations

import argparse
import asyncio
import time

import uvloop

from mixer.engine.clock import TickClock


async def measure(seconds: float, stall_ms: float) -> dict:
    deadlines: list[float] = []
    stalled = False

    def on_tick(deadline_ms: float) -> None:
        nonlocal stalled
        deadlines.append(deadline_ms)
        if stall_ms and not stalled and len(deadlines) >= seconds * 25:
            stalled = True
            time.sleep(stall_ms / 1000.0)

    clock = TickClock(on_tick)
    wall_start = time.monotonic()
    clock.start()
    await asyncio.sleep(seconds)
    clock.stop()
    wall = time.monotonic() - wall_start
    stats = clock.stats()
    media = (deadlines[-1] - deadlines[0]) / 1000.0 + 0.02
    return {"wall_s": wall, "ticks_per_s": (clock.ticks + clock.skipped) / wall,
            "expected_ticks_per_s": 50.0, "skipped": clock.skipped,
            "media_minus_wall_ms": (media - (time.monotonic() - wall_start - 0.02)) * 1000.0,
            **{k: stats[k] for k in ("tick_lateness_p50_ms", "tick_lateness_p99_ms",
                                     "tick_lateness_max_ms")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--stall-ms", type=float, default=0.0)
    args = parser.parse_args()
    result = uvloop.run(measure(args.seconds, args.stall_ms))
    print(f"{result['ticks_per_s']:.2f} ticks/s run or skipped (expected 50; ratio "
          f"{result['ticks_per_s'] / 50.0:.4f}) over {result['wall_s']:.1f} s; "
          f"{result['skipped']} skipped")
    print(f"lateness p50 {result['tick_lateness_p50_ms']:.3f} ms, p99 "
          f"{result['tick_lateness_p99_ms']:.3f} ms, max {result['tick_lateness_max_ms']:.3f} ms")
    print(f"media time - wall time at the end: {result['media_minus_wall_ms']:+.1f} ms "
          f"(within one 20 ms period: the clock kept time)")


if __name__ == "__main__":
    main()
