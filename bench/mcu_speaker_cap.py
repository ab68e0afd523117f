"""What mixing every talker costs: MCU tick CPU for k simultaneous talkers under `max_speakers` caps.

    python bench/mcu_speaker_cap.py [--ticks 300]

The MCU mixes every talker while no more than `max_speakers` talk at once (default 8); above that,
the loudest. A cap only costs anything when more people than it talk at the same moment: each mixed
talker is one more decode, one more own (mix-minus) encode and one more row in the mix. This prints
the mean CPU per tick (in-process `TickBench`: real legs and sockets, jitter buffers fed directly)
for conferences of N = 100 and 500 with k = 3, 6, 8 and 12 talking at once, capped at 3 (the old
default) and at 8, and the ratio of the two caps at each k.
"""
from __future__ import annotations

import argparse
import time

from mixer.mcu.conference import McuConference
from mixer.settings import EngineSettings

from mcu_tickbench import TickBench


def tick_ms(n: int, talkers: int, cap: int, ticks: int) -> float:
    bench = TickBench(McuConference, n, EngineSettings(max_speakers=cap), talkers=talkers)
    try:
        bench.warm_up()
        spent = 0.0
        for _ in range(ticks):
            args, _ = bench.setup_round()
            began = time.process_time()
            bench.tick(*args)
            spent += time.process_time() - began
        return spent / ticks * 1000.0
    finally:
        bench.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=300)
    args = parser.parse_args()
    print(f"{'N':>4} {'talking':>7} {'cap 3 ms/tick':>14} {'cap 8 ms/tick':>14} {'cap 8 / cap 3':>13}"
          f" {'share of a core (cap 8)':>24}")
    for n in (100, 500):
        for talkers in (3, 6, 8, 12):
            low = tick_ms(n, talkers, 3, args.ticks)
            high = tick_ms(n, talkers, 8, args.ticks)
            print(f"{n:>4} {talkers:>7} {low:>14.3f} {high:>14.3f} {high / low:>13.2f}"
                  f" {high / 20.0:>23.1%}")


if __name__ == "__main__":
    main()
