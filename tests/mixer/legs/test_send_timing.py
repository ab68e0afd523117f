"""A leg's outgoing stream keeps wall time through stalls (RFC 3550 5.1: the timestamp is the
sampling instant): timestamps follow the engine clock's tick times, sequence numbers stay
continuous, and the first packet after skipped ticks carries the marker bit. Real sockets, the
real clock bookkeeping with injected time."""
from __future__ import annotations

import asyncio
import socket

import uvloop
from hypothesis import given, settings, strategies as st

from mixer import _rtp
from mixer.engine.clock import TickClock
from mixer.engine.engine import Engine
from mixer.rtp.rtcp import RtcpReceiverReport, serialize_compound
from mixer.sdp import offer_audio
from mixer.settings import EngineSettings

PERIOD = 20.0


def receive_all(sock: socket.socket) -> list[_rtp.RtpPacket]:
    packets = []
    while True:
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            return packets
        if data[1] & 0x7F not in range(72, 77):  # not RTCP
            packets.append(_rtp.RtpPacket.parse(data))


async def stream_for(wakeups: list[float], codec: str) -> tuple[list[float], list[_rtp.RtpPacket], int]:
    """Tick times the clock gives for `wakeups`, each sent as one frame by a real leg; returns
    (tick times, packets received by the far end, the leg's clock rate)."""
    far_end = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far_end.bind(("127.0.0.1", 0))
    far_end.setblocking(False)
    far_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    engine = Engine(EngineSettings(media_ports="47000-47999"))
    try:
        engine.create_conference("mcu", "timing")
        offer, _ = offer_audio(local_ip="127.0.0.1", local_port=far_end.getsockname()[1],
                               codecs=(codec,))
        answer = await engine.add_leg("timing", offer)
        leg = engine.conferences["timing"].voices[answer["id"]].leg
        # the far end reports first (a receiver's RTCP): the engine sends only to an address
        # that has shown it wants the stream (docs/security.md, reflection)
        far_end.sendto(serialize_compound([RtcpReceiverReport(ssrc=0x5EED)]),
                       ("127.0.0.1", leg.local_port))
        for _ in range(2000):
            if leg.media_consented:
                break
            await asyncio.sleep(0.001)
        assert leg.media_consented
        clock = TickClock(lambda deadline: None, PERIOD)
        clock.reset(10_000.0)
        ticks = []
        for late in wakeups:
            tick_ms = clock.advance(clock.next_deadline_ms + late)
            ticks.append(tick_ms)
            leg.send_payload(b"\xf8\xff\xfe" if codec == "opus" else b"\xff" * 160, tick_ms, 0.0)
            engine.flusher.flush()
        await asyncio.sleep(0)
        return ticks, receive_all(far_end), leg.clock_rate
    finally:
        engine.stop()
        far_end.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.just(0.3), st.floats(0.0, 19.0), st.floats(20.0, 3100.0)),
                min_size=2, max_size=80),
       st.sampled_from(["opus", "PCMU"]))
def test_any_late_skipped_and_on_time_ticks_leave_timestamps_equal_to_start_plus_elapsed_time(
        wakeups, codec):
    ticks, packets, rate = uvloop.run(stream_for(wakeups, codec))
    assert len(packets) == len(ticks)
    first = packets[0]
    for k, (tick_ms, packet) in enumerate(zip(ticks, packets)):
        elapsed = round((tick_ms - ticks[0]) * rate / 1000)
        assert packet.timestamp == (first.timestamp + elapsed) & 0xFFFFFFFF
        assert packet.sequence_number == (first.sequence_number + k) & 0xFFFF  # nothing lost
        gap = k > 0 and tick_ms - ticks[k - 1] > PERIOD
        assert packet.marker == gap, f"marker must flag exactly the gaps (packet {k})"


def test_a_600_ms_stall_is_a_600_ms_gap_in_timestamps_with_the_marker_on_the_first_packet_after():
    wakeups = [0.5] * 10 + [600.0 + 3.0] + [0.5] * 10
    ticks, packets, rate = uvloop.run(stream_for(wakeups, "opus"))
    steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in zip(packets, packets[1:])]
    assert steps[:9] == [960] * 9 and steps[10:] == [960] * 10
    assert steps[9] == 960 + 600 * 48  # the ticks skipped during the stall
    assert [p.marker for p in packets].count(True) == 1 and packets[10].marker
