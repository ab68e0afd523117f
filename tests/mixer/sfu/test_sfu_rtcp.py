"""SFU RTCP termination on loopback with raw sockets: NACKs answered from the cache or passed on to
the sender, and sender reports for every forwarded slot."""
from __future__ import annotations

import asyncio
import socket

import uvloop

from mixer import _rtp
from mixer.analysis import tone
from mixer.codec import FrameEncoder
from mixer.engine.engine import Engine
from mixer.rtp.rtcp import RtcpNack, RtcpReceiverReport, RtcpSenderReport, is_rtcp, parse_compound, serialize_compound
from mixer.sdp import offer_audio, parse
from mixer.settings import EngineSettings

EXT_ID = 1


class RawClient:
    """A bare RTP endpoint: sends what the test builds, keeps everything it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.rtp: list[_rtp.RtpPacket] = []
        self.rtcp: list = []
        self.engine_port = 0
        self.payload_type = 111

    def offer(self) -> str:
        return offer_audio(local_ip="127.0.0.1", local_port=self.sock.getsockname()[1],
                           codecs=("opus",), audio_level_ext_id=EXT_ID)[0]

    def accept(self, answer: str) -> None:
        media = parse(answer).media[0]
        self.engine_port = media.port
        self.payload_type = int(media.formats[0])
        # a receiver reports from the start (RFC 3550 6): it also tells the engine this address
        # wants the media (it sends only where media came from, docs/security.md)
        self.send(serialize_compound([RtcpReceiverReport(ssrc=0x5EB)]))

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.engine_port))

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            if is_rtcp(data):
                self.rtcp.extend(parse_compound(data))
            else:
                self.rtp.append(_rtp.RtpPacket.parse(data))


def test_nack_is_answered_from_the_cache_or_passed_to_the_sender() -> None:
    async def scenario():
        engine = Engine(EngineSettings(media_ports="42000-42999", sfu_packet_cache=16,
                                       rtcp_interval_s=0.3))
        engine.start()
        conference_id = engine.create_conference("sfu")["id"]
        sender, subscriber = RawClient(), RawClient()
        for client in (sender, subscriber):
            client.accept((await engine.add_leg(conference_id, client.offer()))["sdp"])
        encoder = FrameEncoder("opus")
        voice = tone(440.0, 1.2, amplitude=0.3)
        ext = _rtp.audio_level_extension(EXT_ID, 10, True)
        for k in range(60):
            payload = encoder.encode(voice[k * 960:(k + 1) * 960])
            sender.send(_rtp.build_rtp(sender.payload_type, 1000 + k, 50_000 + 960 * k, 0xCAFE,
                                        payload, k == 0, _rtp.EXTENSION_PROFILE_ONE_BYTE, ext))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        subscriber.drain()
        sender.drain()
        forwarded = list(subscriber.rtp)
        slot_ssrc = forwarded[0].ssrc
        recent, old = forwarded[-3], forwarded[0]
        nack = RtcpNack(sender_ssrc=0x5EB, media_ssrc=slot_ssrc,
                        lost=[recent.sequence_number, old.sequence_number])
        subscriber.send(serialize_compound([nack]))
        await asyncio.sleep(0.15)
        subscriber.drain()
        sender.drain()
        stats = engine.get_conference(conference_id)["stats"]
        engine.stop()
        return forwarded, subscriber, sender, recent, old, stats, slot_ssrc

    forwarded, subscriber, sender, recent, old, stats, slot_ssrc = uvloop.run(scenario())
    assert len(forwarded) >= 50
    assert all(p.ssrc == slot_ssrc for p in forwarded)
    # the recent packet is resent as it was: same number, time and payload
    resent = subscriber.rtp[len(forwarded):]
    assert [(p.sequence_number, p.timestamp, p.payload) for p in resent] == [
        (recent.sequence_number, recent.timestamp, recent.payload)]
    assert stats["nack_retransmits"] == 1 and stats["nack_forwarded"] == 1
    # the old one is no longer cached: the sender is asked for it, in its own numbering
    nacks = [p for p in sender.rtcp if isinstance(p, RtcpNack)]
    assert len(nacks) == 1 and nacks[0].media_ssrc == 0xCAFE
    first_forwarded_source_seq = 1000 + (60 - len(forwarded))
    assert nacks[0].lost == [first_forwarded_source_seq]
    assert old.sequence_number != recent.sequence_number
    # the subscriber got sender reports for its slot's stream
    reports = [p for p in subscriber.rtcp if isinstance(p, RtcpSenderReport) and p.ssrc == slot_ssrc]
    assert reports and reports[-1].packet_count >= len(forwarded) - 20
