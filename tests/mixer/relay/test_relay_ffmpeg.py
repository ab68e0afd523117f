"""A relayed 1:1 call with ffmpeg as one participant: payloads bit-exact in both directions.

ffmpeg is the kind of peer a SIP gateway drives: plain RTP/AVP, RTCP on port + 1. Its side of the
call is two processes on one leg (asymmetric RTP, which the engine allows for plain RTP): one sends
an Ogg Opus file's packets unchanged (`-c:a copy -f rtp`) from port P1, the other receives at the
port the offer named and writes each received packet's size and MD5 (`-f framemd5`). The other
participant is a SimulatedParticipant whose encoder output is recorded. Bit-exactness is then
checked on both sides against packets nobody in the engine made.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import shutil
import subprocess

import pytest
import uvloop

from mixer.analysis import tone
from mixer.engine.engine import Engine
from mixer.media.ogg import read_packets, read_pages
from mixer.settings import EngineSettings
from mixer.sim.call import join
from mixer.sim.participant import SimulatedParticipant
from tests.mixer.mcu.test_ffmpeg_interop import (
    HOST, _ffmpeg_problem, read_answer, release, reserve_port_pair, run_ffmpeg)
from tests.mixer.relay.test_relay_e2e import RecordingEncoder, assert_one_continuous_stream

FFMPEG_HZ = 1170.0
SIM_HZ = 520.0


@pytest.fixture
def ffmpeg() -> str:
    problem = _ffmpeg_problem()
    if problem is not None:
        pytest.skip(problem)
    return shutil.which("ffmpeg")


def offer(port: int, payload_type: int) -> str:
    return "\r\n".join([
        "v=0", f"o=- 1 1 IN IP4 {HOST}", "s=ffmpeg", f"c=IN IP4 {HOST}", "t=0 0",
        f"m=audio {port} RTP/AVP {payload_type}", f"a=rtpmap:{payload_type} opus/48000/2",
        "a=ptime:20", "a=sendrecv", ""])


def receiver_sdp(port: int, payload_type: int) -> str:
    return "\r\n".join([
        "v=0", f"o=- 0 0 IN IP4 {HOST}", "s=relay", f"c=IN IP4 {HOST}", "t=0 0",
        f"m=audio {port} RTP/AVP {payload_type}", f"a=rtpmap:{payload_type} opus/48000/2",
        "a=recvonly", ""])


@functools.cache
def _ogg_packets(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        packets = [packet for packet, _, _ in read_packets(read_pages(f))]
    return packets[2:]  # OpusHead, OpusTags


def framemd5_packets(text: str) -> list[tuple[int, str]]:
    """(size, md5) of each packet line of ffmpeg's framemd5 output."""
    rows = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        rows.append((int(fields[4]), fields[5]))
    return rows


def test_ffmpeg_one_to_one_is_relayed_bit_exact_both_ways(ffmpeg, tmp_path):
    ogg = tmp_path / "tone.ogg"
    made = subprocess.run([
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi",
        "-i", f"sine=frequency={FFMPEG_HZ:g}:sample_rate=48000", "-t", "3", "-c:a", "libopus",
        "-b:a", "32k", "-application", "voip", "-frame_duration", "20", "-y", str(ogg)],
        capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    file_packets = _ogg_packets(str(ogg))
    md5_path = tmp_path / "rx.framemd5"
    sdp_path = tmp_path / "rx.sdp"
    sim = SimulatedParticipant("sim", SIM_HZ, tone(SIM_HZ, 4.0, amplitude=0.2))
    sim.encoder = RecordingEncoder(sim.encoder)

    async def scenario():
        engine = Engine(EngineSettings(media_ports="43000-43999"))
        engine.start()
        held: list = []
        try:
            conference = engine.create_conference("relay")["id"]
            tx_port, tx_held = reserve_port_pair()
            rx_port, rx_held = reserve_port_pair()
            held = tx_held + rx_held
            leg = await engine.add_leg(conference, offer(rx_port, 111), label="ffmpeg")
            answer = read_answer(leg["sdp"])
            await join(engine, conference, sim)
            sdp_path.write_text(receiver_sdp(rx_port, answer["payload_type"]))
            release(rx_held)
            receiving = asyncio.ensure_future(run_ffmpeg([
                ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
                "-protocol_whitelist", "file,udp,rtp", "-reorder_queue_size", "0",
                "-i", str(sdp_path), "-t", "2.5", "-c:a", "copy", "-f", "framemd5", "-y",
                str(md5_path)]))
            await asyncio.sleep(0.3)   # ffmpeg binds its port
            sim.start()
            release(tx_held)
            held = []
            sent = await run_ffmpeg([
                ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i", str(ogg),
                "-c:a", "copy", "-payload_type", str(answer["payload_type"]), "-f", "rtp",
                f"rtp://{answer['address']}:{answer['port']}?localrtpport={tx_port}"
                f"&localrtcpport={tx_port + 1}&rtcpport={answer['rtcp_port']}&pkt_size=1200"])
            received = await receiving
            await asyncio.sleep(0.2)
            stats = engine.get_conference(conference)
            return sent, received, stats
        finally:
            release(held)
            engine.stop()
            await asyncio.sleep(0.05)
            sim.close()

    (tx_rc, tx_err), (rx_rc, rx_err), stats = uvloop.run(scenario())
    assert tx_rc == 0, tx_err
    assert rx_rc == 0, rx_err
    assert stats["stats"]["state"] == "forward"
    assert stats["stats"]["own_encodes"] == 0   # the sim joined second: nothing was mixed since
    # ffmpeg -> engine -> sim: the file's Opus packets, byte for byte, in one continuous stream
    got = [payload for _, _, _, payload in sim.received.packets]
    assert len(got) >= 0.9 * len(file_packets), f"{len(got)} of {len(file_packets)} packets"
    assert got == file_packets[:len(got)]
    assert_one_continuous_stream(sim, exact_step=960)
    # sim -> engine -> ffmpeg: what ffmpeg received is a run of the sim's payloads, byte for byte
    rows = framemd5_packets(md5_path.read_text())
    assert len(rows) >= 100, f"ffmpeg received {len(rows)} packets"
    sent = [(len(p), hashlib.md5(p).hexdigest()) for p in sim.encoder.payloads]
    first = sent.index(rows[0])
    assert rows == sent[first:first + len(rows)]
