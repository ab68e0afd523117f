"""What a talker hears when it moves between the shared mix and its own mix-minus encoder.

    python bench/encoder_switch.py         # ~20 s

A decoder follows one stream whose packets come alternately (every `--period` ms) from two
encoders fed the same speech, as an MCU participant's do when it starts and stops talking:
the listeners' shared encoder, and its own. Scored with PESQ-WB against the speech, for:

- `one encoder`: no switching at all (the ceiling);
- `switch, cold`: the own encoder keeps its own history (what the MCU did before);
- `switch, continued`: when the own encoder takes over, it first copies the shared encoder's state
  (`OpusEncoder.copy_state_from`, the engine's `mcu_seamless_switch`); the way back is still a
  jump (keeping the own encoder on until the next pause was tried and gained nothing measurable).

Pure computation: the numbers do not depend on the machine's load.
"""
from __future__ import annotations

import argparse

import numpy as np

from mixer._opus import OpusDecoder, OpusEncoder
from mixer.sim.score import pesq_score
from mixer.sim.speech import VOICES, speech


def run(pcm: np.ndarray, period_frames: int, mode: str) -> float:
    shared = OpusEncoder(48000, 1, "voip", 20, 64000, 5, False, 0, False)
    own = OpusEncoder(48000, 1, "voip", 20, 64000, 5, False, 0, False)
    decoder = OpusDecoder(48000, 1, 20)
    out = []
    for k in range(len(pcm) // 960):
        frame = np.ascontiguousarray(pcm[k * 960:(k + 1) * 960])
        from_shared = shared.encode(frame)
        talking = mode != "one" and (k // period_frames) % 2 == 1
        if talking:
            if mode == "continued" and k % period_frames == 0:
                own.copy_state_from(shared)
            out.append(decoder.decode(own.encode(frame)))
        else:
            out.append(decoder.decode(from_shared))
    return pesq_score(pcm, np.concatenate(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--period", type=int, default=500, help="ms between switches")
    args = parser.parse_args()
    frames = max(1, args.period // 20)
    print(f"| voice | one encoder | switch every {args.period} ms, cold | continued |")
    print("|---|---|---|---|")
    for voice in VOICES:
        pcm = speech(voice)
        scores = [run(pcm, frames, mode) for mode in ("one", "cold", "continued")]
        print(f"| {voice} | " + " | ".join(f"{s:.2f}" for s in scores) + " |", flush=True)


if __name__ == "__main__":
    main()
