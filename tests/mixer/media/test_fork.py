"""Media forks: a participant's packets or the mix sent to a destination as RTP or SDES-SRTP,
received by a plain Python RTP receiver and by ffmpeg reading the fork's SDP (both real UDP on
loopback); destinations checked like TURN peers; timestamps that keep time through a stall."""
from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import uvloop

from mixer import _rtp
from mixer.analysis import tone, tone_levels_db
from mixer.codec import MIX_RATE, FrameDecoder
from mixer.engine.engine import Engine
from mixer.engine.errors import EngineError
from mixer.rtp.rtcp import RtcpSenderReport, is_rtcp, parse_compound
from mixer.rtp.srtp import SrtpContext
from mixer.sdp import generate_crypto, parse, parse_crypto
from mixer.settings import EngineSettings
from mixer.sim.call import join
from mixer.sim.participant import SimulatedParticipant

ALICE_HZ, BOB_HZ = 520.0, 710.0


def free_port_pair() -> int:
    """An even port whose odd neighbour is free too (RTP and RTCP of the receiver)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1] & ~1
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            if port < 65000:
                return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


class RtpReceiver(asyncio.DatagramProtocol):
    """A minimal RTP receiver (what a transcription service runs): packets kept, RTCP apart."""

    def __init__(self, srtp: SrtpContext | None = None) -> None:
        self.srtp = srtp
        self.packets: list[tuple[float, _rtp.RtpPacket]] = []
        self.rtcp: list = []
        self.bad = 0

    def datagram_received(self, data: bytes, addr) -> None:
        if self.srtp is not None:
            data = self.srtp.unprotect_rtcp(data) if is_rtcp(data) else self.srtp.unprotect(data)
            if data is None:
                self.bad += 1
                return
        if is_rtcp(data):
            self.rtcp.extend(parse_compound(data))
            return
        self.packets.append((time.monotonic(), _rtp.RtpPacket.parse(data)))

    def audio(self, codec: str = "opus") -> np.ndarray:
        decoder = FrameDecoder(codec)
        frames = []
        for _, packet in sorted(self.packets, key=lambda p: p[1].sequence_number):
            decoder.decode(packet.payload)
            while (frame := decoder.take_frame()) is not None:
                frames.append(frame.copy())
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)


async def receiver(port: int, srtp: SrtpContext | None = None) -> tuple[RtpReceiver, list]:
    loop = asyncio.get_running_loop()
    protocol = RtpReceiver(srtp)
    rtp, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=("127.0.0.1", port))
    rtcp, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=("127.0.0.1", port + 1))
    return protocol, [rtp, rtcp]


async def talking_conference(mode: str, tmp_path: Path, **settings):
    engine = Engine(EngineSettings(data_dir=tmp_path, media_ports="47100-47299",
                                   fork_allow_loopback=True, **settings))
    engine.start()
    engine.create_conference(mode, "room")
    people = [SimulatedParticipant("alice", ALICE_HZ, tone(ALICE_HZ, 5, amplitude=0.2)),
              SimulatedParticipant("bob", BOB_HZ, tone(BOB_HZ, 5, amplitude=0.2))]
    ids = [await join(engine, "room", p) for p in people]
    start = asyncio.get_running_loop().time() + 0.05
    for p in people:
        p.start(start)
    return engine, people, ids


@pytest.mark.parametrize("mode,source,srtp", [("mcu", "alice", False), ("mcu", "mix", True),
                                              ("sfu", "mix", False), ("sfu", "bob", True)])
def test_a_python_rtp_receiver_gets_the_fork(tmp_path, mode, source, srtp):
    async def scenario():
        engine, people, ids = await talking_conference(mode, tmp_path)
        port = free_port_pair()
        name = {"alice": ids[0], "bob": ids[1], "mix": "mix"}[source]
        fork = await engine.add_fork("room", name, f"127.0.0.1:{port}", srtp=srtp, label="asr")
        media = parse(fork["sdp"]).media[0]
        assert media.port == port and (media.proto == "RTP/SAVP") is srtp
        context = None
        if srtp:  # the receiver's key is the one the SDP carries
            key = parse_crypto(media.attribute("crypto"))
            context = SrtpContext(key.suite, generate_crypto(1).key, key.key)
        protocol, transports = await receiver(port, context)
        await asyncio.sleep(2.0)
        stats = engine.get_fork("room", fork["id"])
        assert stats["state"] == "active" and stats["label"] == "asr"
        engine.remove_fork("room", fork["id"])
        await asyncio.sleep(0.1)
        engine.stop()
        for t in transports:
            t.close()
        for p in people:
            p.close()
        return protocol, stats

    protocol, stats = uvloop.run(scenario())
    assert protocol.bad == 0
    packets = [p for _, p in protocol.packets]
    assert len(packets) >= 90 and {p.payload_type for p in packets} == {111}
    assert len({p.ssrc for p in packets}) == 1  # one stream, whatever fills it
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))
    assert any(isinstance(r, RtcpSenderReport) and r.ssrc == packets[0].ssrc for r in protocol.rtcp)
    levels = tone_levels_db(protocol.audio()[MIX_RATE // 5:], [ALICE_HZ, BOB_HZ])
    if source == "mix":
        assert min(levels.values()) > -25, levels
    else:
        heard = ALICE_HZ if source == "alice" else BOB_HZ
        other = BOB_HZ if source == "alice" else ALICE_HZ
        assert levels[heard] > -25 and levels[other] < -50, levels
        assert stats["packets_forwarded"] >= 90 and stats["frames_encoded"] == 0


@pytest.mark.parametrize("source,srtp", [("mix", False), ("alice", True)])
def test_ffmpeg_receives_a_fork_from_its_sdp(tmp_path, source, srtp):
    async def scenario():
        engine, people, ids = await talking_conference("mcu", tmp_path)
        port = free_port_pair()
        fork = await engine.add_fork("room", "mix" if source == "mix" else ids[0],
                                     f"127.0.0.1:{port}", srtp=srtp)
        sdp = tmp_path / "fork.sdp"
        sdp.write_text(fork["sdp"])
        out = tmp_path / "out.raw"
        ffmpeg = await asyncio.create_subprocess_exec(
            "ffmpeg", "-v", "error", "-protocol_whitelist", "file,udp,rtp,srtp,crypto", "-i", str(sdp),
            "-t", "2", "-f", "s16le", "-ac", "1", "-ar", str(MIX_RATE), "-y", str(out),
            stderr=asyncio.subprocess.PIPE)
        _, errors = await asyncio.wait_for(ffmpeg.communicate(), 20)
        engine.stop()
        for p in people:
            p.close()
        return np.fromfile(out, dtype="<i2") if out.exists() else np.zeros(0), errors.decode()

    pcm, errors = uvloop.run(scenario())
    assert len(pcm) / MIX_RATE == pytest.approx(2.0, abs=0.05), errors
    levels = tone_levels_db(pcm, [ALICE_HZ, BOB_HZ])
    assert levels[ALICE_HZ] > -25, (levels, errors)
    if source == "mix":
        assert levels[BOB_HZ] > -25
    else:
        assert levels[BOB_HZ] < -50


def test_destinations_pass_the_peer_filter(tmp_path):
    async def scenario():
        strict = Engine(EngineSettings(data_dir=tmp_path, media_ports="47300-47399"))
        strict.create_conference("mcu", "room")
        leg_owner = SimulatedParticipant("alice", ALICE_HZ, tone(ALICE_HZ, 1))
        leg = await join(strict, "room", leg_owner)
        cases = [
            ("mix", "127.0.0.1:5004", 403, "destination_forbidden"),
            ("mix", "10.1.2.3:5004", 403, "destination_forbidden"),
            ("mix", "192.168.1.20:5004", 403, "destination_forbidden"),
            ("mix", "169.254.10.1:5004", 403, "destination_forbidden"),
            ("mix", "224.0.0.1:5004", 403, "destination_forbidden"),
            ("mix", "0.0.0.0:5004", 403, "destination_forbidden"),
            ("mix", "[::ffff:127.0.0.1]:5004", 422, "bad_destination"),  # IPv6 to an IPv4 engine
            ("mix", "localhost:5004", 403, "destination_forbidden"),      # a name that resolves there
            ("mix", "127.0.0.1", 422, "bad_destination"),
            ("mix", "127.0.0.1:0", 422, "bad_destination"),
            ("mix", "127.0.0.1:65535", 422, "bad_destination"),
            ("mix", "::1:5004", 422, "bad_destination"),
            ("nobody", "127.0.0.1:5004", 404, "no_such_leg"),
        ]
        for source, destination, status, code in cases:
            with pytest.raises(EngineError) as exc:
                await strict.add_fork("room", source, destination)
            assert (exc.value.status, exc.value.code) == (status, code), destination
        with pytest.raises(EngineError) as exc:
            await strict.add_fork("room", leg, "127.0.0.1:5004", codec="PCMU")
        assert exc.value.code == "bad_codec"
        assert strict.ports.in_use == 1  # nothing held by the refusals
        strict.delete_conference("room")
        leg_owner.close()
        # an operator lets a private range through: allowed exactly there
        allowing = Engine(EngineSettings(data_dir=tmp_path, media_ports="47400-47499",
                                         fork_allowed_ips=["127.0.0.0/8"]))
        allowing.create_conference("mcu", "room")
        fork = await allowing.add_fork("room", "mix", "127.0.0.9:5004", codec="PCMA")
        assert fork["codec"] == "PCMA" and "PCMA/8000" in fork["sdp"]
        with pytest.raises(EngineError) as exc:
            await allowing.add_fork("room", "mix", "10.0.0.1:5004")
        assert exc.value.code == "destination_forbidden"
        allowing.delete_conference("room")
        assert allowing.ports.in_use == 0
    uvloop.run(scenario())


def test_a_fork_keeps_time_through_a_stall_and_ends_with_its_participant(tmp_path):
    async def scenario():
        engine, people, ids = await talking_conference("mcu", tmp_path)
        port, port2 = free_port_pair(), free_port_pair()
        await engine.add_fork("room", "mix", f"127.0.0.1:{port}")
        alice = await engine.add_fork("room", ids[0], f"127.0.0.1:{port2}")
        mixed, transports = await receiver(port)
        forwarded, more = await receiver(port2)
        await asyncio.sleep(0.6)
        time.sleep(0.5)  # the process stalls: ticks are skipped
        await asyncio.sleep(0.6)
        engine.remove_leg("room", ids[0])  # alice leaves: her fork ends
        await asyncio.sleep(0.2)
        state = engine.get_fork("room", alice["id"])["state"]
        engine.stop()
        for t in transports + more:
            t.close()
        for p in people:
            p.close()
        return mixed, forwarded, state

    mixed, forwarded, state = uvloop.run(scenario())
    assert state == "source_left"
    assert any(getattr(r, "sources", None) for r in forwarded.rtcp)  # an RTCP BYE said goodbye
    packets = [p for _, p in mixed.packets]
    steps = [((b.timestamp - a.timestamp) & 0xFFFFFFFF, (b.sequence_number - a.sequence_number) & 0xFFFF, b.marker)
             for a, b in zip(packets, packets[1:])]
    jumps = [(ts, seq, marker) for ts, seq, marker in steps if ts != 960]
    # one jump: the stall, with timestamps advanced by the time that passed (0.5 s, within a
    # couple of ticks), sequence numbers still continuous, the marker bit on
    assert len(jumps) == 1, jumps
    ts, seq, marker = jumps[0]
    assert seq == 1 and marker and 0.4 * MIX_RATE <= ts <= 0.6 * MIX_RATE
