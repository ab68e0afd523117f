"""Which bitrate and complexity for the MCU's mixes: PESQ against CPU per encode.

    python bench/encoder_grid.py           # ~2 min

The talker's stream (Opus 32 kb/s, complexity 10, as a browser or ffmpeg sends) is decoded and
encoded again at each bitrate and complexity, as the MCU does for a listener, and scored with
PESQ-WB against the original; next to it the CPU time of one 20 ms encode (process time, median
of the frames' mean over 3 runs, so other processes' load shows little). The loss-hint columns
show what in-band FEC costs on a clean network at the chosen rate (bits taken from the signal).
"""
from __future__ import annotations

import time

import numpy as np

from mixer._opus import OpusDecoder, OpusEncoder
from mixer.sim.score import pesq_score
from mixer.sim.speech import VOICES, speech

BITRATES = (32000, 40000, 48000, 64000)
COMPLEXITIES = (1, 3, 5, 7, 10)


def transcode(pcm: np.ndarray, bitrate: int, complexity: int, hint: int = 0) -> tuple[np.ndarray, float]:
    encoder = OpusEncoder(48000, 1, "voip", 20, bitrate, complexity, hint > 0, hint, False)
    decoder = OpusDecoder(48000, 1, 20)
    frames = [np.ascontiguousarray(pcm[i:i + 960]) for i in range(0, len(pcm) // 960 * 960, 960)]
    out, spent = [], []
    for _ in range(3):
        began = time.process_time()
        payloads = [encoder.encode(frame) for frame in frames]
        spent.append((time.process_time() - began) / len(frames))
    out = [decoder.decode(p) for p in payloads[-len(frames):]]
    return np.concatenate(out), float(np.median(spent)) * 1e6


def main() -> None:
    sources = {v: transcode(speech(v), 32000, 10)[0] for v in VOICES}
    print("| bitrate | complexity | " + " | ".join(f"PESQ-WB {v}" for v in VOICES) + " | us per encode |")
    print("|---|---|" + "---|" * len(VOICES) + "---|")
    for bitrate in BITRATES:
        for complexity in COMPLEXITIES:
            scores, costs = [], []
            for voice in VOICES:
                heard, cost = transcode(sources[voice], bitrate, complexity)
                scores.append(pesq_score(speech(voice), heard))
                costs.append(cost)
            print(f"| {bitrate // 1000} kb/s | {complexity} | " + " | ".join(f"{s:.2f}" for s in scores)
                  + f" | {np.mean(costs):.0f} |", flush=True)
    print("\nFEC on a clean network, 64 kb/s complexity 5 (loss hint %: PESQ-WB per voice)")
    for hint in (0, 3, 5, 10):
        scores = [pesq_score(speech(v), transcode(sources[v], 64000, 5, hint)[0]) for v in VOICES]
        print(f"| hint {hint} % | " + " | ".join(f"{s:.2f}" for s in scores) + " |")


if __name__ == "__main__":
    main()
