"""What changing the playout delay costs: adaptive buffer vs a fixed-delay one, PESQ-WB.

    python bench/jitter_tsm.py            # both voices, 30 and 80 ms jitter, ~1 min

The same Opus stream (32 kb/s, complexity 10) arrives with uniform jitter, either all along
(`steady`) or only from 3 s to 10 s (`onset`: the buffer must grow when the jitter starts and
shrink after it stops), and is played out three ways through `mixer.playout.Playout`:

- `fixed`: a buffer whose delay never moves (min = max = 120 ms, more than the jitter): the
  reference, it never conceals anything and never changes delay;
- `drop`: the adaptive buffer as it was before issue 20 (shrinks by dropping a frame, plays
  silence while it re-buffers after an underrun);
- `tsm`: the adaptive buffer with time-scale modification (accelerates in pauses, conceals while
  re-buffering, holds a frame more while packets are lost).

The issue's target: delay changes cost less than 0.1 PESQ against the fixed-delay buffer.
Pure computation (no sockets, no clock): the numbers do not depend on the machine's load.
"""
from __future__ import annotations

import argparse
import random

import numpy as np

from mixer._opus import OpusEncoder
from mixer.sim.receiver import play_out
from mixer.sim.score import pesq_score
from mixer.sim.speech import VOICES, speech

ONSET_S, CALM_S = 3.0, 10.0


def arrivals(pcm: np.ndarray, jitter_ms: float, onset: bool, seed: int) -> list:
    encoder = OpusEncoder(48000, 1, "voip", 20, 32000, 10, False, 0, False)
    rng = random.Random(seed)
    packets = []
    for k in range(len(pcm) // 960):
        payload = encoder.encode(np.ascontiguousarray(pcm[k * 960:(k + 1) * 960]))
        t = k * 0.02
        spread = jitter_ms if (not onset or ONSET_S <= t < CALM_S) else 0.0
        packets.append((1.0 + t + rng.uniform(0.0, spread) / 1000.0, k & 0xFFFF, k * 960, payload))
    return packets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    print("| voice | jitter | pattern | fixed | drop (before) | tsm | tsm - fixed | accelerated ms | concealed while re-buffering |")
    print("|---|---|---|---|---|---|---|---|---|")
    for voice in VOICES:
        pcm = speech(voice)
        for jitter in (30.0, 80.0):
            for onset in (False, True):
                fixed, drop, tsm, acc, stall = [], [], [], [], []
                for seed in range(args.seeds):
                    packets = arrivals(pcm, jitter, onset, 7 + seed)
                    fixed.append(pesq_score(pcm, play_out(packets, "opus", min_delay_ms=120,
                                                          max_delay_ms=120, time_stretch=False)[0]))
                    drop.append(pesq_score(pcm, play_out(packets, "opus", time_stretch=False)[0]))
                    heard, playout = play_out(packets, "opus", time_stretch=True)
                    tsm.append(pesq_score(pcm, heard))
                    acc.append(playout.accelerated_ms)
                    stall.append(playout.stall_concealed)
                f, d, t = (float(np.mean(x)) for x in (fixed, drop, tsm))
                print(f"| {voice} | {jitter:g} ms | {'onset' if onset else 'steady'} | {f:.2f} | "
                      f"{d:.2f} | {t:.2f} | {t - f:+.2f} | {np.mean(acc):.0f} | {np.mean(stall):.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
