"""What a client hears from the packets it received: a playout on a simulated 20 ms clock.

The benchmarks record each received packet with its arrival time and afterwards play them out
the way a softphone would, through the product's own `Playout` (jitter buffer, PLC, FEC, time
stretching), on a tick clock that starts with the first packet. Doing it afterwards keeps the
receiving side's CPU out of the call being measured, and makes the playout repeatable.
"""
from __future__ import annotations

import numpy as np

from mixer import _rtp
from mixer.codec import FRAME_MS, FRAME_SAMPLES
from mixer.playout import Playout

TICK_PHASE_MS = 7.0   # the receiver's clock is not in phase with the sender's


def play_out(packets: list, codec: str, *, ptime_ms: int = 20, min_delay_ms: float = 20.0,
             max_delay_ms: float = 200.0, time_stretch: bool = True,
             tail_ms: float = 400.0) -> tuple[np.ndarray, Playout]:
    """`packets` are (arrival_s, seq, ts, payload) as SimulatedParticipant records them, or
    (arrival_s, RtpPacket). Returns 48 kHz int16 audio (silence where nothing played) and the
    playout, whose stats say what it did."""
    playout = Playout(codec, ptime_ms, min_delay_ms=min_delay_ms, max_delay_ms=max_delay_ms,
                      time_stretch=time_stretch)
    if not packets:
        return np.zeros(0, dtype=np.int16), playout
    items = []
    for entry in packets:
        if len(entry) == 2:
            items.append((entry[0] * 1000.0, entry[1]))
        else:
            arrival, seq, ts, payload = entry
            header = _rtp.build_rtp(0, seq, ts, 0, payload, False, -1, None)
            items.append((arrival * 1000.0, _rtp.RtpPacket.parse(header)))
    items.sort(key=lambda item: item[0])
    now = items[0][0] + TICK_PHASE_MS
    end = items[-1][0] + tail_ms
    out, index = [], 0
    while now <= end:
        while index < len(items) and items[index][0] <= now:
            playout.put(items[index][1], items[index][0])
            index += 1
        playout.pull(now)
        frame = playout.decode()
        out.append(frame.copy() if frame is not None else np.zeros(FRAME_SAMPLES, dtype=np.int16))
        now += FRAME_MS
    return np.concatenate(out), playout
