"""pytest-benchmark of the SFU's per-packet path: one loud sender's SRTP packet through a real leg's
receive path and fanned out to 50 subscribers (renumber, rebuild, SRTP-protect, queue), then the
queued packets sent with sendmmsg to one local sink. `1:1` is the same path for one subscriber with
real Opus speech payloads (what a claim check would decode): the per-packet cost of a relayed call.

    python -m pytest bench/test_bench_sfu.py -q --benchmark-only

Real MediaLegs on real sockets, SRTP on every leg. Correctness assertions only, never timing; the
two-process throughput and SFU-vs-MCU comparison is `bench/sfu_forward.py`.
"""
from __future__ import annotations

import itertools
import socket

import pytest
import uvloop

from mixer import _rtp
from mixer.legs.leg import MediaLeg
from mixer.legs.ports import PortAllocator
from mixer.legs.transport import SendFlusher
from mixer.rtp.srtp import SrtpContext
from mixer.sdp import answer_audio, offer_audio, parse
from mixer.sdp.crypto import parse_crypto
from mixer.settings import EngineSettings
from mixer.sfu.conference import SfuConference

SUBSCRIBERS = 50
HOST = "127.0.0.1"


def _speech_payloads() -> list[bytes]:
    from mixer.codec import FrameEncoder
    from workloads import speech_frames

    encoder = FrameEncoder("opus")
    return [encoder.encode(frame) for frame in speech_frames(1.0)]


class FanOutBench:
    def __init__(self, send: bool, subscribers: int = SUBSCRIBERS, speech: bool = False) -> None:
        self.loop = uvloop.new_event_loop()
        self.settings = EngineSettings(max_packet_rate=10**7)
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sink.bind((HOST, 0))
        self.sink.setblocking(False)
        self.ports = PortAllocator(37000, 38999)
        self.flusher = SendFlusher(automatic=False)
        self.conference = SfuConference("bench", self.settings)
        self.legs: list[MediaLeg] = []
        for i in range(subscribers + 1):
            offer, crypto = offer_audio(local_ip=HOST, local_port=self.sink.getsockname()[1],
                                        codecs=("opus",), srtp=True)
            rtp, rtcp = self.ports.allocate(HOST, False)
            answer = answer_audio(offer, local_ip=HOST, local_port=rtp.getsockname()[1])
            leg = MediaLeg(f"leg{i}", answer, rtp, rtcp, self.settings, flusher=self.flusher,
                           retransmits=True)
            self.loop.run_until_complete(leg.open())
            self.conference.add_leg(leg)
            self.legs.append(leg)
            if i == 0:
                engine_key = parse_crypto(parse(answer.sdp).media[0].attribute("crypto"))
                self.client = SrtpContext(engine_key.suite, crypto.key, engine_key.key)
        self.send = send
        self.level = _rtp.audio_level_extension(1, 10, True)
        self.payloads = _speech_payloads() if speech else [bytes(90)]
        self.seq = itertools.count(1000)
        self._buf = bytearray(2048)
        for _ in range(5):  # the sender becomes a forwarded speaker
            self.conference.tick(self.round(*self.wire()[0]))

    def wire(self):
        seq = next(self.seq)
        payload = self.payloads[seq % len(self.payloads)]
        packet = _rtp.build_rtp(111, seq & 0xFFFF, seq * 960 & 0xFFFFFFFF, 0x4242, payload,
                                 False, _rtp.EXTENSION_PROFILE_ONE_BYTE, self.level)
        return (self.client.protect(packet), seq * 20.0), {}

    def round(self, wire: bytes, now_ms: float) -> float:
        leg = self.legs[0]
        leg._on_datagram(wire, leg.remote_rtp, False)
        if self.send:
            self.flusher.flush()
        else:
            for endpoint in self.flusher._pending:
                endpoint._out_data.clear()
                endpoint._out_addresses.clear()
            self.flusher._pending.clear()
        self.drain()
        return now_ms

    def drain(self) -> None:
        while True:
            try:
                self.sink.recv_into(self._buf)
            except BlockingIOError:
                return

    def close(self) -> None:
        for leg in self.legs:
            leg.close(send_bye=False)
        self.loop.close()
        self.sink.close()


@pytest.mark.parametrize("send", [False, True], ids=["fan-out", "fan-out+sendmmsg"])
def test_one_srtp_packet_to_50_subscribers(benchmark, send: bool) -> None:
    bench = FanOutBench(send)
    try:
        before = bench.conference.packets_forwarded
        benchmark.pedantic(bench.round, setup=bench.wire, rounds=300, iterations=1)
        forwarded = bench.conference.packets_forwarded - before
        assert forwarded == 300 * SUBSCRIBERS  # every subscriber got every packet
        slots = [s for leg_id, p in bench.conference.voices.items() if leg_id != "leg0"
                 for s in p.slots if s.source is not None]
        assert len(slots) == SUBSCRIBERS and all(s.sender.protect_failures == 0 for s in slots)
    finally:
        bench.close()


def test_one_srtp_packet_1_to_1(benchmark) -> None:
    """A 1:1 call through the SFU: one sender, one subscriber, real Opus speech, sendmmsg."""
    bench = FanOutBench(True, subscribers=1, speech=True)
    try:
        before = bench.conference.packets_forwarded
        benchmark.pedantic(bench.round, setup=bench.wire, rounds=2000, iterations=1)
        assert bench.conference.packets_forwarded - before == 2000
        benchmark.extra_info["level_decodes"] = bench.conference.voices["leg0"].level_decodes
        slot = next(s for s in bench.conference.voices["leg1"].slots if s.source is not None)
        assert slot.sender.protect_failures == 0
    finally:
        bench.close()
