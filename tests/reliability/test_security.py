"""The media tier's defences against hostile packets and requests, each proven on real sockets.

One test (or more) per threat in docs/security.md: floods are rate limited per leg and per source
class, SRTP refuses strangers and replays, latching follows only authenticated media, oversized
datagrams are dropped, ports and conferences are capped, the control API bounds its bodies. Where a
defence is missing the test is marked xfail(strict=True) with the reason.
"""
from __future__ import annotations

import asyncio
import socket
import time

import pytest
import uvloop
from aiohttp import ClientSession

from mixer import _mix, _rtp
from mixer.engine.control import MAX_BODY_BYTES, start_control_api
from mixer.engine.engine import Engine, EngineError
from mixer.rtp.rtcp import RtcpBye, serialize_compound
from mixer.rtp.srtp import SrtpContext
from mixer.sdp import offer_audio, parse
from mixer.sdp.crypto import generate_crypto, parse_crypto
from mixer.settings import EngineSettings

OPUS_PT = 111


class Peer:
    """A raw RTP client: its own socket, an offer, the leg it got, and its SRTP context."""

    def __init__(self, srtp: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.use_srtp = srtp
        self.srtp: SrtpContext | None = None
        self.leg = None
        self.leg_address: tuple[str, int] | None = None
        self.seq = 100
        self.ssrc = 0x1111

    async def join(self, engine: Engine, conference_id: str) -> None:
        offer, crypto = offer_audio(local_ip="127.0.0.1", local_port=self.address[1], srtp=self.use_srtp)
        answer = await engine.add_leg(conference_id, offer)
        media = parse(answer["sdp"]).media[0]
        self.leg_address = ("127.0.0.1", media.port)
        self.leg = engine.conferences[conference_id].voices[answer["id"]].leg
        if self.use_srtp:
            self.srtp = SrtpContext(crypto.suite, crypto.key, parse_crypto(media.attribute("crypto")).key)

    def packet(self, ssrc: int | None = None, payload: bytes = b"\xf8\xff\xfe") -> bytes:
        self.seq += 1
        data = _rtp.build_rtp(OPUS_PT, self.seq & 0xFFFF, self.seq * 960 & 0xFFFFFFFF,
                               self.ssrc if ssrc is None else ssrc, payload)
        return self.srtp.protect(data) if self.srtp is not None else data

    def send(self, data: bytes, sock: socket.socket | None = None) -> None:
        (sock or self.sock).sendto(data, self.leg_address)

    def drain(self) -> int:
        count = 0
        try:
            while True:
                self.sock.recv(4096)
                count += 1
        except BlockingIOError:
            return count

    def close(self) -> None:
        self.sock.close()


def stranger_socket(host: str = "127.0.0.1") -> socket.socket:
    """A socket on `host`: another port of the participant's host by default; 127.0.0.2 and up
    are other hosts as far as the engine can tell (docs/security.md, reflection)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def scenario(settings: EngineSettings | None = None):
    """Decorator: run `body(engine, conference_id)` on a fresh engine with one MCU conference."""
    def wrap(body):
        async def main():
            engine = Engine(settings or EngineSettings())
            engine.start()
            conference_id = engine.create_conference("mcu")["id"]
            try:
                return await body(engine, conference_id)
            finally:
                engine.stop()
        return uvloop.run(main())
    return wrap


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


# ---------------------------------------------------------------------------------------- floods
def test_a_strangers_flood_is_rate_limited_and_neither_starves_the_participant_nor_others():
    @scenario(EngineSettings(max_packet_rate=200))
    async def result(engine, conference_id):
        victim, neighbour = Peer(), Peer()
        await victim.join(engine, conference_id)
        await neighbour.join(engine, conference_id)
        attacker = stranger_socket()
        began = time.monotonic()
        for tick in range(50):  # one second: the participants send 50 packets each ...
            victim.send(victim.packet())
            neighbour.send(neighbour.packet())
            for _ in range(60):  # ... while a stranger sends 3000 datagrams at the victim's port
                victim.send(b"\x80\x00" + bytes(160), attacker)
            await asyncio.sleep(0.02)
        await settle()
        attacker.close()
        return victim.leg.stats(), neighbour.leg.stats(), time.monotonic() - began

    victim, neighbour, elapsed = result
    # strangers get at most 200/s plus one second of burst, however long the loop took
    assert victim["drops"]["rate_limited"] >= 3000 - 200 * (1 + elapsed) - 10
    assert sum(victim["drops"].values()) == 3000  # the rest: payload type 0 was not negotiated
    assert victim["packets_in"] == 50               # every packet of the participant counted
    assert neighbour["packets_in"] == 50 and not any(neighbour["drops"].values())


def test_a_flood_from_the_participants_own_address_is_capped_at_that_leg():
    @scenario(EngineSettings(max_packet_rate=200))
    async def result(engine, conference_id):
        flooder, neighbour = Peer(), Peer()
        await flooder.join(engine, conference_id)
        await neighbour.join(engine, conference_id)
        began = time.monotonic()
        for tick in range(25):
            neighbour.send(neighbour.packet())
            for _ in range(40):
                flooder.send(flooder.packet())
            await asyncio.sleep(0.02)
        await settle()
        return flooder.leg.stats(), neighbour.leg.stats(), time.monotonic() - began

    flooder, neighbour, elapsed = result
    assert flooder["packets_in"] + flooder["drops"]["rate_limited"] == 1000
    assert flooder["packets_in"] <= 200 * (1 + elapsed) + 10  # one second of burst plus the refill
    assert neighbour["packets_in"] == 25 and not any(neighbour["drops"].values())


def test_oversized_and_empty_datagrams_are_dropped_and_counted():
    @scenario()
    async def result(engine, conference_id):
        plain, secure = Peer(), Peer(srtp=True)
        await plain.join(engine, conference_id)
        await secure.join(engine, conference_id)
        for peer in (plain, secure):
            peer.send(b"\x80\x6f" + bytes(60000))  # a 60 KB "RTP" datagram
            peer.send(b"")
            peer.send(b"\x80")
        await settle()
        return plain.leg.stats(), secure.leg.stats()

    plain, secure = result
    # the 60 KB datagram is larger than any media packet: dropped at the socket layer, counted
    assert plain["drops"]["oversized"] == 1 and plain["drops"]["malformed"] == 2
    assert plain["packets_in"] == 0
    assert secure["drops"]["oversized"] == 1 and secure["drops"]["srtp"] == 2
    assert secure["packets_in"] == 0


# ------------------------------------------------------------------------------------------ SRTP
def test_srtp_replays_are_dropped_and_counted():
    @scenario()
    async def result(engine, conference_id):
        peer = Peer(srtp=True)
        await peer.join(engine, conference_id)
        captured = []
        for _ in range(20):
            captured.append(peer.packet())
            peer.send(captured[-1])
            await asyncio.sleep(0.005)
        await settle()
        for _ in range(10):  # an attacker on the path replays what it saw
            peer.send(captured[5], stranger_socket())
            peer.send(captured[19])
        await settle()
        return peer.leg.stats()

    stats = result
    assert stats["packets_in"] == 20
    assert stats["drops"]["srtp"] == 20 and stats["srtp_stats"]["replays"] == 20


def test_srtp_leg_refuses_strangers_without_the_key():
    @scenario()
    async def result(engine, conference_id):
        peer = Peer(srtp=True)
        await peer.join(engine, conference_id)
        for _ in range(5):
            peer.send(peer.packet())
        await settle()
        attacker = stranger_socket()
        other_key = generate_crypto(1).key
        forger = SrtpContext("AES_CM_128_HMAC_SHA1_80", other_key, other_key)
        for seq in range(30):
            plain = _rtp.build_rtp(OPUS_PT, seq, seq * 960, 0x6666, b"injected")
            peer.send(plain, attacker)                 # plain RTP on an SRTP leg
            peer.send(forger.protect(plain), attacker)  # SRTP under a key the engine never agreed
        bye = serialize_compound([RtcpBye(sources=[peer.ssrc], reason=b"spoofed")])
        peer.send(bye, attacker)
        await settle()
        attacker.close()
        return peer.leg.stats()

    stats = result
    assert stats["packets_in"] == 5 and stats["remote_ssrc"] == 0x1111 and stats["ssrc_changes"] == 0
    assert stats["drops"]["srtp"] == 60
    assert stats["drops"]["rtcp_srtp"] == 1 and stats["remote_bye"] is False


# -------------------------------------------------------------------------------------- latching
def test_latching_follows_only_authenticated_media():
    """Symmetric RTP (RFC 4961): another host's plain RTP moves nothing once the participant's
    host has sent; SRTP-authenticated media from another host (a NAT rebinding: same key, new
    address) moves the destination there."""
    @scenario()
    async def result(engine, conference_id):
        peer, plain_peer = Peer(srtp=True), Peer()
        await peer.join(engine, conference_id)
        await plain_peer.join(engine, conference_id)
        peer.send(peer.packet())             # both participants have sent from where they offered
        plain_peer.send(plain_peer.packet())
        await settle()
        attacker = stranger_socket("127.0.0.3")
        for _ in range(5):  # a stranger on another host tries to pull both legs' media to itself
            peer.send(_rtp.build_rtp(OPUS_PT, 1, 1, 0x1111, b"x"), attacker)
            plain_peer.send(plain_peer.packet(), attacker)
        await settle()
        hijacked = (peer.leg.remote_rtp, plain_peer.leg.remote_rtp)
        moved = stranger_socket("127.0.0.2")  # the participant's NAT binding changed: same key
        peer.send(peer.packet(), moved)
        await settle(0.1)          # a few ticks: the engine now sends to the new address
        received_at_new = 0
        try:
            while True:
                moved.recv(4096)
                received_at_new += 1
        except BlockingIOError:
            pass
        result = hijacked, peer.leg.remote_rtp, moved.getsockname(), received_at_new
        received_by_attacker = 0
        try:
            while True:
                attacker.recv(4096)
                received_by_attacker += 1
        except BlockingIOError:
            pass
        attacker.close()
        moved.close()
        return result, received_by_attacker, peer.address, plain_peer.address

    (hijacked, latched, moved_address, received_at_new), attacked, srtp_address, plain_address = result
    assert hijacked == (srtp_address, plain_address)  # unauthenticated packets moved nothing
    assert tuple(latched) == tuple(moved_address) and received_at_new > 0
    assert attacked == 0


def test_media_from_another_port_of_the_offered_host_keeps_the_offered_destination():
    @scenario()
    async def result(engine, conference_id):
        peer = Peer(srtp=True)
        await peer.join(engine, conference_id)
        peer.send(peer.packet(), stranger_socket())  # authenticated, from another port
        await settle()
        return peer.leg.remote_rtp, peer.address, peer.leg.packets_in

    remote, address, packets_in = result
    assert remote == address and packets_in == 1


def test_a_strangers_plain_rtp_cannot_take_over_the_participants_stream():
    @scenario()
    async def result(engine, conference_id):
        peer = Peer()
        await peer.join(engine, conference_id)
        attacker = stranger_socket()
        for _ in range(20):
            peer.send(peer.packet())
            peer.send(peer.packet(ssrc=0x6666), attacker)
            await asyncio.sleep(0.02)
        await settle()
        attacker.close()
        return peer.leg.stats()

    stats = result
    assert stats["ssrc_changes"] == 0 and stats["remote_ssrc"] == 0x1111


# -------------------------------------------------------------------------- resource exhaustion
def test_port_exhaustion_answers_503_and_failed_offers_do_not_leak_ports():
    @scenario(EngineSettings(media_ports="42100-42105"))  # at most 3 even/odd pairs
    async def result(engine, conference_id):
        peers, refused = [], None
        for _ in range(4):
            peer = Peer()
            try:
                await peer.join(engine, conference_id)
                peers.append(peer)
            except EngineError as exc:
                refused = exc
                break
        in_use = engine.ports.in_use
        bad_offer = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                     "m=audio 30002 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n")
        engine.remove_leg(conference_id, peers[0].leg.id)
        await settle()  # the transport closes its socket on the loop's next iteration
        codes = []
        for _ in range(3):  # refused offers must give their port back every time
            try:
                await engine.add_leg(conference_id, bad_offer)
            except EngineError as exc:
                codes.append(exc.code)
        again = Peer()
        await again.join(engine, conference_id)
        return len(peers), refused, in_use, codes, engine.ports.in_use

    joined, refused, in_use, codes, in_use_after = result
    assert 1 <= joined <= 3 and in_use == joined
    assert refused is not None and refused.status == 503 and refused.code == "no_ports"
    assert codes == ["no_common_codec"] * 3
    assert in_use_after == joined  # one left, one joined again: no port lost to the bad offers


def test_conference_and_leg_caps():
    @scenario(EngineSettings(max_conferences=3, max_legs_per_conference=2))
    async def result(engine, conference_id):
        engine.create_conference("mcu")
        engine.create_conference("mcu")
        with pytest.raises(EngineError) as too_many:
            engine.create_conference("mcu")
        for _ in range(2):
            await Peer().join(engine, conference_id)
        with pytest.raises(EngineError) as full:
            await Peer().join(engine, conference_id)
        return too_many.value, full.value, engine.ports.in_use

    too_many, full, in_use = result
    assert (too_many.status, too_many.code) == (503, "too_many_conferences")
    assert (full.status, full.code) == (409, "conference_full")
    assert in_use == 2  # the refused leg took no port


# ----------------------------------------------------------------------------------- control API
def test_control_api_bounds_request_bodies():
    async def main():
        engine = Engine()
        engine.start()
        runner, port = await start_control_api(engine)
        engine.create_conference("mcu", "room")
        huge = b'{"sdp": "' + b"a" * (MAX_BODY_BYTES + 10) + b'"}'

        async def chunks():
            for i in range(0, len(huge), 8192):
                yield huge[i:i + 8192]
        try:
            async with ClientSession(f"http://127.0.0.1:{port}") as http:
                answers = []
                async with http.post("/conferences/room/legs", data=huge,
                                     headers={"Content-Type": "application/json"}) as r:
                    answers.append((r.status, await r.json()))
                async with http.post("/conferences/room/legs", data=chunks(),  # no Content-Length
                                     headers={"Content-Type": "application/json"}) as r:
                    answers.append((r.status, await r.json()))
                # an SDP just under the limit made of thousands of attributes: parsed, refused cleanly
                offer, _ = offer_audio(local_ip="127.0.0.1", local_port=30000)
                stuffed = offer + "a=x-filler:1\r\n" * ((MAX_BODY_BYTES - 2 * len(offer) - 500) // 18)
                async with http.post("/conferences/room/legs", json={"sdp": stuffed}) as r:
                    answers.append((r.status, await r.json()))
                stats = engine.stats()
            return answers, stats
        finally:
            engine.stop()
            await runner.cleanup()

    answers, stats = uvloop.run(main())
    for status, body in answers[:2]:
        assert status == 413 and set(body["error"]) == {"code", "message"}
    assert answers[2][0] in (201, 400)
    assert stats["ports_in_use"] == stats["legs"]


def test_forged_audio_levels_cannot_silence_a_real_talker():
    import numpy as np

    from mixer.codec import FrameEncoder

    @scenario(EngineSettings(max_speakers=3))
    async def result(engine, conference_id):
        liars, honest = [Peer() for _ in range(3)], Peer()
        for peer in (*liars, honest):
            await peer.join(engine, conference_id)
        silence = FrameEncoder("opus").encode(np.zeros(960, dtype=np.int16))
        tone = (np.sin(np.arange(960) * 2 * np.pi * 700 / 48000) * 12000).astype(np.int16)
        talk = FrameEncoder("opus")
        loud_claim = _rtp.audio_level_extension(1, 0, True)
        honest_level = _rtp.audio_level_extension(1, _mix.audio_level(tone), True)
        honest_in_mix = 0
        for frame in range(75):
            for liar in liars:
                liar.seq += 1
                liar.send(_rtp.build_rtp(OPUS_PT, liar.seq, liar.seq * 960, 0x100 + liars.index(liar),
                                          silence, False, _rtp.EXTENSION_PROFILE_ONE_BYTE, loud_claim))
            honest.seq += 1
            honest.send(_rtp.build_rtp(OPUS_PT, honest.seq, honest.seq * 960, 0x200, talk.encode(tone),
                                        False, _rtp.EXTENSION_PROFILE_ONE_BYTE, honest_level))
            await asyncio.sleep(0.02)
            if frame > 25:
                honest_in_mix += honest.leg.id in engine.conferences[conference_id].stats()["speakers"]
            for peer in (*liars, honest):
                peer.drain()
        return honest_in_mix

    assert result > 25  # the one real talker is mixed most of the time
