"""Floors for the scale benchmark: what the engine costs per participant before any mixing.

Two conference classes that keep the real legs (sockets, uvloop transports, SRTP/RTP parsing,
receive statistics, rate limit, RTCP) but do no media work, registered only in the benchmark's engine
process:

* ``recv-floor``: every packet goes through the leg's receive path and is then dropped; the tick sends
  nothing. Cost = uvloop/libuv UDP receive + `MediaLeg._on_datagram`/`_on_rtp`.
* ``io-floor``: the same, plus every tick sends each leg one constant Opus payload through
  `MediaLeg.send_payload` (build RTP, sendto, send statistics, RTCP schedule). Cost = all the
  per-packet I/O an MCU must do anyway: no jitter buffer, no decoding, no encoding, no mixing.

`ours - io-floor` is what the mixing itself costs; `io-floor` bounds how many participants one core
can hold with this transport design even with a free mixer.
"""
from __future__ import annotations

import time

from mixer.mcu.conference import McuConference

# A 20 ms Opus packet of the kind listeners get during silence (any bytes do: nobody decodes it here).
_PAYLOAD = bytes(range(40))


class RecvFloorConference(McuConference):
    mode = "recv-floor"

    def _on_rtp(self, leg, packet, arrival_ms) -> None:
        pass

    def tick(self, now_ms: float) -> None:
        self.ticks += 1


class IoFloorConference(RecvFloorConference):
    mode = "io-floor"

    def tick(self, now_ms: float) -> None:
        began = time.perf_counter()
        self.ticks += 1
        now_s, wall_s = time.monotonic(), time.time()
        for voice in self.voices.values():
            leg = voice.leg
            leg.send_payload(_PAYLOAD, now_ms, wall_s)
            leg.maybe_send_rtcp(now_s)
        self.busy_ms += (time.perf_counter() - began) * 1000.0


def register(engine_type) -> None:
    types = dict(engine_type.conference_types)
    types[RecvFloorConference.mode] = RecvFloorConference
    types[IoFloorConference.mode] = IoFloorConference
    engine_type.conference_types = types
