"""Interop with a peer nobody here wrote: ffmpeg sending and receiving Opus RTP in an MCU conference.

ffmpeg is driven the way a SIP/SDP-speaking gateway would drive it: we write the SDP offer that
describes ffmpeg's side (plain RTP/AVP, no rtcp-mux, RTCP on port+1), the engine answers, and
ffmpeg is pointed at whatever the *answer* says (address, port, payload type). Everything checked
is a measurement: the level of each tone in what SimulatedParticipants decoded, or in the WAV file
ffmpeg wrote, plus the engine's own per-leg counters.

Skipped only when ffmpeg is missing or built without libopus.
"""
import asyncio
import functools
import random
import secrets
import shutil
import socket
import subprocess
import wave

import numpy as np
import pytest
import uvloop

from mixer.analysis import tone_levels_db
from mixer.engine.engine import Engine
from mixer.sdp import parse
from mixer.sim.call import HEARD_THRESHOLD_DB, join
from mixer.sim.participant import SimulatedParticipant, talk_signal

HOST = "127.0.0.1"
RATE = 48000
FFMPEG_TONE_HZ = 1170.0          # what ffmpeg says (a TEST_TONES_HZ member)
TALKER_TONES_HZ = (350.0, 520.0)  # the SimulatedParticipants next to the ffmpeg sender
RX_TONES_HZ = (710.0, 930.0)      # the SimulatedParticipants heard by the ffmpeg receiver
FFMPEG_TIMEOUT_S = 15.0          # hard bound on every ffmpeg run; it is killed after that
# Ports for ffmpeg's side are taken below the kernel's ephemeral range (32768+) and the engine's
# (40000-49999), so neither the OS nor the engine hands them to someone else meanwhile.
FFMPEG_PORTS = (20000, 29998)


def run(coro):
    return uvloop.run(coro)


@functools.cache
def _ffmpeg_problem() -> str | None:
    """Why these tests cannot run here, or None."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return "ffmpeg is not installed (not on PATH)"
    try:
        encoders = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True,
                                  text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run ffmpeg -encoders: {exc}"
    if not any(line.split()[1:2] == ["libopus"] for line in encoders.splitlines()):
        return "ffmpeg is built without libopus (no libopus in `ffmpeg -encoders`)"
    return None


@pytest.fixture
def ffmpeg() -> str:
    problem = _ffmpeg_problem()
    if problem is not None:
        pytest.skip(problem)
    return shutil.which("ffmpeg")


# ------------------------------------------------------------------------------------- helpers
def reserve_port_pair() -> tuple[int, list[socket.socket]]:
    """An even port P with P and P+1 free on HOST, held by bound sockets until released."""
    rng = random.Random(secrets.randbits(32))
    for _ in range(200):
        port = rng.randrange(*FFMPEG_PORTS) & ~1
        held = []
        try:
            for p in (port, port + 1):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind((HOST, p))
            return port, held
        except OSError:
            for sock in held:
                sock.close()
    raise RuntimeError("no free UDP port pair for ffmpeg")


def release(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def gateway_offer(port: int, payload_type: int, direction: str) -> str:
    """The offer a SIP gateway fronting ffmpeg would send: plain RTP, Opus only, RTCP on port+1."""
    return "\r\n".join([
        "v=0",
        f"o=- {secrets.randbelow(2**62)} 1 IN IP4 {HOST}",
        "s=ffmpeg",
        f"c=IN IP4 {HOST}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {payload_type}",
        f"a=rtpmap:{payload_type} opus/48000/2",
        "a=ptime:20",
        f"a={direction}",
        "",
    ])


def read_answer(answer_sdp: str) -> dict:
    """Where the engine's answer says to send RTP and RTCP, and which payload type it kept."""
    answer = parse(answer_sdp)
    media = next(m for m in answer.media if m.media == "audio")
    address = (media.connection or answer.connection).address
    rtpmap = media.rtpmap(media.formats[0])
    rtcp = media.rtcp
    return {
        "address": address,
        "port": media.port,
        "rtcp_port": media.port if media.rtcp_mux else (rtcp.port if rtcp else media.port + 1),
        "rtcp_mux": media.rtcp_mux,
        "payload_type": int(media.formats[0]),
        "rtpmap": rtpmap,
        "direction": media.direction,
    }


async def run_ffmpeg(args: list[str], timeout_s: float = FFMPEG_TIMEOUT_S) -> tuple[int, str]:
    """Run ffmpeg without blocking the event loop (the engine runs on it); kill it on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return proc.returncode, stderr.decode(errors="replace")


def continuous_talker(name: str, freq: float, seconds: float) -> SimulatedParticipant:
    return SimulatedParticipant(name, freq, talk_signal(freq, np.ones(int(seconds * 4), dtype=bool)))


def read_wav_mono(path) -> tuple[np.ndarray, int, int]:
    with wave.open(str(path), "rb") as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        data = wav.readframes(wav.getnframes())
    assert width == 2, f"expected 16-bit PCM from ffmpeg, got {width * 8}-bit"
    pcm = np.frombuffer(data, dtype="<i2").reshape(-1, channels)
    return pcm[:, 0].copy(), rate, channels


# --------------------------------------------------------------------------- ffmpeg as sender
def test_ffmpeg_sends_opus_rtp_and_participants_hear_it(ffmpeg, tmp_path):
    async def scenario():
        engine = Engine()
        engine.start()
        held: list[socket.socket] = []
        talkers: list[SimulatedParticipant] = []
        try:
            conference = engine.create_conference("mcu")["id"]
            talkers = [continuous_talker(f"p{i + 1}", f, 5.5) for i, f in enumerate(TALKER_TONES_HZ)]
            for p in talkers:
                await join(engine, conference, p)
            port, held = reserve_port_pair()
            offer = gateway_offer(port, 97, "sendonly")
            leg = await engine.add_leg(conference, offer, label="ffmpeg-tx")
            answer = read_answer(leg["sdp"])
            start = asyncio.get_running_loop().time() + 0.05
            for p in talkers:
                p.start(start)
            release(held)
            held = []
            command = [
                ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
                "-re", "-f", "lavfi", "-i", f"sine=frequency={FFMPEG_TONE_HZ:g}:sample_rate={RATE}",
                "-t", "4", "-c:a", "libopus", "-b:a", "32k", "-application", "voip",
                "-frame_duration", "20", "-payload_type", str(answer["payload_type"]),
                "-ssrc", "305419896", "-f", "rtp",
                f"rtp://{answer['address']}:{answer['port']}?localrtpport={port}"
                f"&localrtcpport={port + 1}&rtcpport={answer['rtcp_port']}&pkt_size=1200",
            ]
            rc, stderr = await run_ffmpeg(command)
            await asyncio.sleep(0.3)  # the last mixes in flight
            stats = engine.get_conference(conference)
            return talkers, offer, leg["sdp"], answer, command, rc, stderr, stats
        finally:
            release(held)
            engine.stop()
            await asyncio.sleep(0.05)
            for p in talkers:
                p.close()

    talkers, offer, answer_sdp, answer, command, rc, stderr, stats = run(scenario())
    (tmp_path / "offer.sdp").write_text(offer)
    (tmp_path / "answer.sdp").write_text(answer_sdp)
    assert rc == 0, f"ffmpeg failed ({rc}): {' '.join(command)}\n{stderr}"
    # the answer is what the gateway asked for: Opus at the offered PT, receive-only, no mux
    assert answer["payload_type"] == 97 and answer["rtpmap"][:2] == ("opus", 48000)
    assert answer["direction"] == "recvonly" and not answer["rtcp_mux"]

    ffmpeg_leg = next(leg for leg in stats["legs"] if leg["label"] == "ffmpeg-tx")
    assert ffmpeg_leg["remote_ssrc"] == 305419896, "the engine did not lock onto ffmpeg's stream"
    assert ffmpeg_leg["packets_in"] >= 150, f"4 s of 20 ms packets expected, got {ffmpeg_leg['packets_in']}"
    drops = ffmpeg_leg["drops"]
    for reason in ("malformed", "payload_type", "rate_limited", "not_receiving", "rtcp_malformed"):
        assert drops[reason] == 0, f"engine dropped ffmpeg's packets as {reason}: {drops}"
    assert ffmpeg_leg["packets_out"] == 0, "the engine sent media to a sendonly (recvonly-answered) peer"

    freqs = [FFMPEG_TONE_HZ, *TALKER_TONES_HZ]
    for listener, other in ((talkers[0], talkers[1]), (talkers[1], talkers[0])):
        pcm, _ = listener.heard_audio()
        levels = tone_levels_db(pcm[int(0.5 * RATE):], freqs)
        assert levels[FFMPEG_TONE_HZ] > -30, f"{listener.name} heard ffmpeg only at {levels}"
        assert levels[other.freq_hz] > -30, f"{listener.name} lost {other.name}: {levels}"
        assert levels[listener.freq_hz] < HEARD_THRESHOLD_DB, f"{listener.name} heard itself: {levels}"


# ------------------------------------------------------------------------- ffmpeg as receiver
def receiver_sdp(port: int, payload_type: int) -> str:
    """What ffmpeg needs to receive the engine's stream at `port`, from the negotiated answer."""
    return "\r\n".join([
        "v=0",
        f"o=- 0 0 IN IP4 {HOST}",
        "s=voicemix mix",
        f"c=IN IP4 {HOST}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {payload_type}",
        f"a=rtpmap:{payload_type} opus/48000/2",
        "a=recvonly",
        "",
    ])


def test_ffmpeg_receives_the_mix_as_opus_rtp(ffmpeg, tmp_path):
    sdp_path = tmp_path / "recv.sdp"
    wav_path = tmp_path / "out.wav"

    async def scenario():
        engine = Engine()
        engine.start()
        held: list[socket.socket] = []
        talkers: list[SimulatedParticipant] = []
        try:
            conference = engine.create_conference("mcu")["id"]
            talkers = [continuous_talker(f"p{i + 1}", f, 6.0) for i, f in enumerate(RX_TONES_HZ)]
            for p in talkers:
                await join(engine, conference, p)
            # one leg, two ffmpeg processes: the receiver listens on the port the offer names,
            # the sender sends from another port of the same host. The engine sends to the
            # offered port only once media has come from that host (docs/security.md)
            port, held = reserve_port_pair()
            send_port, send_held = reserve_port_pair()
            held += send_held
            leg = await engine.add_leg(conference, gateway_offer(port, 111, "sendrecv"),
                                       label="ffmpeg-rx")
            answer = read_answer(leg["sdp"])
            sdp_path.write_text(receiver_sdp(port, answer["payload_type"]))
            release(held)
            held = []
            command = [
                ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
                "-protocol_whitelist", "file,udp,rtp", "-reorder_queue_size", "50",
                "-i", str(sdp_path), "-t", "3", "-ac", "1", "-ar", str(RATE),
                "-c:a", "pcm_s16le", "-y", str(wav_path),
            ]
            sender = [
                ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
                "-re", "-f", "lavfi", "-i", f"sine=frequency={FFMPEG_TONE_HZ:g}:sample_rate={RATE}",
                "-t", "5", "-c:a", "libopus", "-b:a", "32k", "-application", "voip",
                "-frame_duration", "20", "-payload_type", str(answer["payload_type"]),
                "-f", "rtp",
                f"rtp://{answer['address']}:{answer['port']}?localrtpport={send_port}"
                f"&localrtcpport={send_port + 1}&rtcpport={answer['rtcp_port']}&pkt_size=1200",
            ]
            ffmpeg_run = asyncio.ensure_future(run_ffmpeg(command))
            sender_run = asyncio.ensure_future(run_ffmpeg(sender))
            await asyncio.sleep(0.2)  # ffmpeg binds its port before the talking starts
            start = asyncio.get_running_loop().time() + 0.05
            for p in talkers:
                p.start(start)
            rc, stderr = await ffmpeg_run
            sender_rc, sender_stderr = await sender_run
            assert sender_rc == 0, f"the ffmpeg sender failed ({sender_rc}): {sender_stderr}"
            stats = engine.get_conference(conference)
            return talkers, answer, command, rc, stderr, stats
        finally:
            release(held)
            engine.stop()
            await asyncio.sleep(0.05)
            for p in talkers:
                p.close()

    talkers, answer, command, rc, stderr, stats = run(scenario())
    assert rc == 0, f"ffmpeg failed ({rc}): {' '.join(command)}\n{stderr}"
    assert answer["payload_type"] == 111 and answer["direction"] == "sendrecv"

    pcm, rate, _ = read_wav_mono(wav_path)
    assert rate == RATE
    assert len(pcm) >= int(2.5 * RATE), f"ffmpeg wrote only {len(pcm) / RATE:.2f} s"
    levels = tone_levels_db(pcm[int(0.5 * RATE):], RX_TONES_HZ)
    for freq in RX_TONES_HZ:
        assert levels[freq] > -35, f"ffmpeg's recording lacks {freq} Hz: {levels}\n{stderr}"

    ffmpeg_leg = next(leg for leg in stats["legs"] if leg["label"] == "ffmpeg-rx")
    assert ffmpeg_leg["packets_out"] > 100 and ffmpeg_leg["packets_in"] > 100
    assert ffmpeg_leg["media_consent"]["state"] == "offered"  # not latched to the sender's port
    # the talkers still hear each other
    for listener, other in ((talkers[0], talkers[1]), (talkers[1], talkers[0])):
        heard, _ = listener.heard_audio()
        heard_levels = tone_levels_db(heard[int(0.5 * RATE):], RX_TONES_HZ)
        assert heard_levels[other.freq_hz] > -30, f"{listener.name} lost {other.name}: {heard_levels}"
