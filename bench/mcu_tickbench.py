"""A conference of real MediaLegs driven in-process, one 20 ms tick at a time (no engine, no clock).

Shared by `test_bench_mcu.py` (pytest-benchmark of one tick) and `mcu_costs.py` (per-operation cost
model): N legs on real UDP sockets from PortAllocator, answered by `answer_audio` to an offer whose
client address is one local sink socket. `feed()` files each leg's next prepared RtpPacket straight into
its jitter buffer; `receive()` instead hands each leg its wire packet through the leg's own receive
path (`MediaLeg._on_datagram`: rate limit, parse, statistics, jitter buffer), as the leg's reader callback would.
"""
from __future__ import annotations

import socket

import uvloop

from mixer import _rtp
from mixer.legs.leg import MediaLeg
from mixer.legs.ports import PortAllocator
from mixer.legs.transport import SendFlusher
from mixer.sdp import answer_audio, offer_audio
from mixer.settings import EngineSettings

from mcu_scale import AUDIO_LEVEL_EXT_ID, CYCLE_FRAMES, ONE_BYTE_PROFILE, TALKERS, encode_cycles

HOST = "127.0.0.1"
WARMUP_TICKS = 10


class TickBench:
    """A conference of N real legs whose jitter buffers are fed directly, one frame per tick."""

    def __init__(self, conference_type: type, n: int, settings: EngineSettings | None = None,
                 ports: tuple[int, int] = (31000, 38999), talkers: int = TALKERS) -> None:
        self.loop = uvloop.new_event_loop()
        self.settings = settings or EngineSettings()
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sink.bind((HOST, 0))
        self.sink.setblocking(False)
        self.ports = PortAllocator(*ports)
        self.conference = conference_type("bench", self.settings)
        self.legs: list[MediaLeg] = []
        self.flusher = SendFlusher(automatic=False)  # tick() flushes the sends itself
        offer, _ = offer_audio(local_ip=HOST, local_port=self.sink.getsockname()[1], codecs=("opus",),
                               rtcp_mux=True, audio_level_ext_id=AUDIO_LEVEL_EXT_ID)
        for i in range(n):
            rtp, rtcp = self.ports.allocate(HOST, False)
            answer = answer_audio(offer, local_ip=HOST, local_port=rtp.getsockname()[1])
            leg = MediaLeg(f"leg{i}", answer, rtp, rtcp, self.settings, flusher=self.flusher)
            self.loop.run_until_complete(leg.open())
            self.conference.add_leg(leg)
            self.legs.append(leg)
        self.talkers = talkers
        self.tones, self.tone_exts, self.silence, self.silent_ext = encode_cycles(talkers)
        self.k = 0
        self.now_ms = 1_000_000.0
        self.received = 0
        self._buf = bytearray(4096)

    def wires(self) -> list[bytes]:
        """This frame's wire packet for every leg (`talkers` of them: tone, level V=1; the others:
        comfort noise, level 127 V=0)."""
        f = self.k % CYCLE_FRAMES
        result = []
        for i, leg in enumerate(self.legs):
            if i < self.talkers:
                payload, ext = self.tones[i][f], self.tone_exts[i][f]
            else:
                payload, ext = self.silence[f], self.silent_ext
            result.append(_rtp.build_rtp(leg.payload_type, (1000 + self.k) & 0xFFFF,
                                          (i * 7919 + self.k * 960) & 0xFFFFFFFF, 0x10000 + i, payload,
                                          self.k == 0, ONE_BYTE_PROFILE, ext))
        self.k += 1
        return result

    def feed(self) -> None:
        """File this frame's packet in every leg's jitter buffer (what the receive path does)."""
        for leg, wire in zip(self.legs, self.wires()):
            self.conference.voices[leg.id].jitter_buffer.put(_rtp.RtpPacket.parse(wire), self.now_ms - 5.0)

    def receive(self, wires: list[bytes]) -> None:
        """Hand each leg its packet through its own receive path, as the leg's reader callback would."""
        for leg, wire in zip(self.legs, wires):
            leg._on_datagram(wire, leg.remote_rtp, False)

    def drain(self) -> None:
        self.flusher.flush()  # anything the legs queued (RTCP)
        while True:
            try:
                size = self.sink.recv_into(self._buf)
            except BlockingIOError:
                return
            if not (size >= 2 and 200 <= self._buf[1] <= 204):  # not RTCP
                self.received += 1

    def setup_round(self):
        self.drain()
        self.feed()
        return (self.now_ms,), {}

    def tick(self, now_ms: float) -> None:
        self.conference.tick(now_ms)
        self.flusher.flush()
        self.now_ms += 20.0

    def warm_up(self) -> None:
        for _ in range(WARMUP_TICKS):
            args, _ = self.setup_round()
            self.tick(*args)

    def close(self) -> None:
        for leg in self.legs:
            leg.close(send_bye=False)
        self.loop.close()
        self.sink.close()
