"""No reflection: a leg sends media only to an address that has shown it wants it (issue 18).

Real UDP on loopback, where 127.0.0.1 and 127.0.0.5 are different hosts as far as the engine can
tell. A plain leg whose offer names a third party's address sends it nothing; a client that sends
from another port of the offered host (ffmpeg's separate sender and receiver) receives at the
offered port; media first from another host latches the leg there (symmetric RTP, RFC 4961); an
optional unconfirmed start is bounded; a WebRTC leg sends nothing before ICE (RFC 7675 consent).
"""
from __future__ import annotations

import asyncio
import socket

import uvloop

from mixer import _rtp
from mixer.analysis import tone
from mixer.engine.engine import Engine
from mixer.rtp.rtcp import RtcpReceiverReport, serialize_compound
from mixer.sdp import offer_audio, parse
from mixer.settings import EngineSettings
from mixer.sim.call import join
from mixer.sim.participant import SimulatedParticipant
from mixer.sim.webrtc_client import ScriptedWebRtcClient

VICTIM_HOST = "127.0.0.5"
OPUS_PT = 111


def udp(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.recv(4096)
        except BlockingIOError:
            return count
        count += 1


async def with_talker(body, **settings):
    """`body(engine, conference)` in an MCU conference where a participant talks all along."""
    engine = Engine(EngineSettings(media_ports="45000-45999", **settings))
    engine.start()
    talker = SimulatedParticipant("talker", 440.0, tone(440.0, 4.0, amplitude=0.2))
    try:
        conference = engine.create_conference("mcu")["id"]
        await join(engine, conference, talker)
        talker.start()
        return await body(engine, conference)
    finally:
        talker.close()
        engine.stop()


def leg_port(answer: dict) -> int:
    return parse(answer["sdp"]).media[0].port


def test_a_leg_offered_to_a_third_party_sends_it_nothing():
    async def body(engine, conference):
        victim_rtp, victim_rtcp = udp(VICTIM_HOST), udp(VICTIM_HOST)
        offer, _ = offer_audio(local_ip=VICTIM_HOST, local_port=victim_rtp.getsockname()[1])
        answer = await engine.add_leg(conference, offer, "reflector?")
        leg = engine.conferences[conference].voices[answer["id"]].leg
        await asyncio.sleep(1.0)  # 50 ticks of the talker's audio for this leg
        before = drain(victim_rtp), drain(victim_rtcp), leg.stats()
        # someone on another host claims the leg by sending to it: it latches there (symmetric
        # RTP), and the address the offer named still gets nothing
        claimant = udp("127.0.0.1")
        for seq in range(5):
            claimant.sendto(_rtp.build_rtp(OPUS_PT, seq, seq * 960, 0xC1A1, b"\xf8\xff\xfe"),
                            ("127.0.0.1", leg_port(answer)))
        await asyncio.sleep(0.5)
        after = drain(victim_rtp), drain(victim_rtcp), drain(claimant), leg.stats()
        address = claimant.getsockname()
        for sock in (victim_rtp, victim_rtcp, claimant):
            sock.close()
        return before, after, address

    (rtp, rtcp, stats), (rtp2, rtcp2, claimed, stats2), claimant = uvloop.run(with_talker(body))
    assert rtp == 0 and rtcp == 0, "the engine sent media to an address that never asked for it"
    assert stats["media_consent"]["state"] == "waiting" and stats["packets_out"] == 0
    assert stats["media_consent"]["withheld"] >= 20  # ticks it had audio for and held back
    assert rtp2 == 0 and rtcp2 == 0
    assert stats2["media_consent"]["state"] == "latched"
    assert stats2["media_consent"]["destination"] == f"{claimant[0]}:{claimant[1]}"
    assert claimed > 5  # the source of the media gets the stream (RFC 4961)


def test_a_client_sending_from_another_port_of_the_offered_host_receives_at_the_offered_port():
    """ffmpeg's way: one process sends, another listens on the port the offer names."""
    async def body(engine, conference):
        receiver, sender = udp("127.0.0.1"), udp("127.0.0.1")
        offer, _ = offer_audio(local_ip="127.0.0.1", local_port=receiver.getsockname()[1])
        answer = await engine.add_leg(conference, offer, "split")
        port = leg_port(answer)
        await asyncio.sleep(0.3)
        early = drain(receiver)
        for seq in range(25):
            sender.sendto(_rtp.build_rtp(OPUS_PT, seq, seq * 960, 0x5E4D, b"\xf8\xff\xfe"),
                          ("127.0.0.1", port))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        result = early, drain(receiver), drain(sender)
        leg = engine.conferences[conference].voices[answer["id"]].leg
        receiver.close()
        sender.close()
        return result, leg.stats()

    (early, received, to_sender), stats = uvloop.run(with_talker(body))
    assert early == 0
    assert received > 20 and to_sender == 0
    assert stats["media_consent"]["state"] == "offered" and stats["packets_in"] == 25


def test_a_receive_only_client_consents_with_rtcp():
    """A client that never sends RTP (RFC 3550 6: receivers report too) gets the stream once
    its receiver reports arrive from the offered host."""
    async def body(engine, conference):
        receiver, reports = udp("127.0.0.1"), udp("127.0.0.1")
        offer, _ = offer_audio(local_ip="127.0.0.1", local_port=receiver.getsockname()[1])
        answer = await engine.add_leg(conference, offer, "listener")
        media = parse(answer["sdp"]).media[0]
        rtcp_port = media.port if media.rtcp_mux else media.port + 1
        reports.sendto(serialize_compound([RtcpReceiverReport(ssrc=0x4EAD)]), ("127.0.0.1", rtcp_port))
        await asyncio.sleep(0.6)
        result = drain(receiver)
        receiver.close()
        reports.close()
        return result

    assert uvloop.run(with_talker(body)) > 15


def test_the_unconfirmed_start_is_short_and_bounded():
    async def body(engine, conference):
        victim = udp(VICTIM_HOST)
        offer, _ = offer_audio(local_ip=VICTIM_HOST, local_port=victim.getsockname()[1])
        await engine.add_leg(conference, offer, "unconfirmed")
        await asyncio.sleep(1.5)
        count = drain(victim)
        victim.close()
        return count

    count = uvloop.run(with_talker(body, unconfirmed_send_s=0.2))
    # at most one packet a tick while it lasts, and it ends (checked every half second)
    assert 0 < count <= 0.7 / 0.02 + 2


def test_a_webrtc_leg_sends_nothing_to_its_offered_candidates_before_ice():
    """ICE-lite answers checks and never sends first: media goes only where a check with the
    right credentials came from (RFC 8445 2.5, RFC 7675 consent)."""
    async def body(engine, conference):
        victim = udp(VICTIM_HOST)
        port = victim.getsockname()[1]
        client = ScriptedWebRtcClient()
        await client.open()
        offer = client.offer().replace("c=IN IP4 0.0.0.0", f"c=IN IP4 {VICTIM_HOST}").replace(
            "m=audio 9 ", f"m=audio {port} ")
        offer = offer.replace("a=rtcp-mux\r\n", "a=rtcp-mux\r\n"
                              f"a=candidate:1 1 udp 2130706431 {VICTIM_HOST} {port} typ host\r\n")
        answer = await engine.add_leg(conference, offer, "browser")
        client.accept(answer["sdp"])
        await asyncio.sleep(1.0)
        before = drain(victim)
        await client.connect()               # ICE from 127.0.0.1, DTLS, then media
        await client.wait_for_rtp(20)
        after = drain(victim)
        client.close()
        victim.close()
        return before, after, len(client.rtp)

    before, after, received = uvloop.run(with_talker(body))
    assert before == 0 and after == 0 and received >= 20
