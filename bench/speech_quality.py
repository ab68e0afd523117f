"""Speech quality of every media path, with references measured in the same run: docs/quality.md.

    python bench/speech_quality.py                 # every path, every condition (~6 min)
    python bench/speech_quality.py --paths mcu_listener sfu --conditions clean "random 5%"
    python bench/speech_quality.py --visqol         # plus ViSQOL (full band) on clean rows (~1 min each)
    python bench/speech_quality.py --json out.json

Speech (two voices, `mixer.sim.speech`) is sent as real RTP into a real engine on loopback and
what the listener received is played out like a softphone would (`mixer.sim.receiver`: the
product's jitter buffer, FEC and PLC) and scored against what went in: PESQ wide-band for Opus
paths, narrow-band for G.711 (`mixer.sim.score`).

Paths are plugins: a `Path` names itself, says which hops it has and which band scores it, and
runs one call per condition. Every condition runs in its own conference, all conditions of a path
at once (talkers send pre-encoded packets, so the load generator costs almost nothing).

Conditions (`mixer.sim.impair` proxy) sit on one hop: `down` (the listener's link: what the
server's encoder and FEC policy face) or `up` (the talker's link: what the server's jitter buffer,
FEC decoding and PLC face). References are computed offline on the same seeded loss and delay
patterns: the codec alone through that one hop, and two encodes in tandem (the talker's, then the
server's at the engine's settings, FEC as the server would choose) with the hop where the path has
it: the best any transcoding server can do.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path as FsPath

import numpy as np

from mixer.codec import FRAME_SAMPLES, FrameEncoder, OpusSettings
from mixer.mcu.encoding import FEC_TIERS, tier_hint
from mixer.settings import EngineSettings
from mixer.sim.call import join
from mixer.sim.impair import GilbertElliott, Impairment, ImpairedPath, join_through
from mixer.sim.participant import SimulatedParticipant
from mixer.sim.receiver import play_out
from mixer.sim.score import pesq_score, visqol_score
from mixer.sim.speech import VOICES, speech

# The receiving client's jitter buffer keeps at least two frames, as browsers do: with one, the
# packet after a lost one is never there in time for Opus FEC to rebuild the loss.
RECEIVER_MIN_DELAY_MS = 40.0
# The talker is a client like ffmpeg or a browser: Opus 32 kb/s, complexity 10; with loss on its
# link it turns on FEC with a small hint, as a WebRTC sender does when its receiver reports loss.
TALKER = OpusSettings(bitrate=32000, complexity=10, fec=False, packet_loss_percent=0)
MEAN_BURST = 2.5  # packets per loss burst in the bursty conditions (Gilbert-Elliott)
CONDITIONS: dict[str, Impairment] = {
    "clean": Impairment(),
    "random 2%": Impairment(loss=0.02),
    "random 5%": Impairment(loss=0.05),
    "random 10%": Impairment(loss=0.10),
    "bursty 2%": Impairment(burst=GilbertElliott.for_loss(0.02, MEAN_BURST)),
    "bursty 5%": Impairment(burst=GilbertElliott.for_loss(0.05, MEAN_BURST)),
    "bursty 10%": Impairment(burst=GilbertElliott.for_loss(0.10, MEAN_BURST)),
    "jitter 30 ms": Impairment(jitter_ms=30.0),
    "jitter 80 ms": Impairment(jitter_ms=80.0),
}


def loss_of(impairment: Impairment) -> float:
    return impairment.loss + (impairment.burst.mean_loss if impairment.burst else 0.0)


def talker_settings(impairment: Impairment, talker: OpusSettings = TALKER) -> OpusSettings:
    return talker.with_fec(3) if loss_of(impairment) > 0 else talker


def server_fec_hint(impairment: Impairment) -> int:
    """The hint the engine's policy settles on for a receiver with this loss."""
    percent, tier = loss_of(impairment) * 100, 0
    while tier < len(FEC_TIERS) and percent >= FEC_TIERS[tier][0]:
        tier += 1
    return tier_hint(tier)


class _Replay:
    """Stands in for a participant's encoder: hands out payloads encoded before the call."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads, self.index = payloads, 0

    def encode(self, frame) -> bytes:
        payload = self.payloads[min(self.index, len(self.payloads) - 1)]
        self.index += 1
        return payload


def encode_all(pcm: np.ndarray, codec: str, opus: OpusSettings = TALKER) -> list[bytes]:
    encoder = FrameEncoder(codec, opus)
    return [encoder.encode(np.ascontiguousarray(pcm[i:i + FRAME_SAMPLES]))
            for i in range(0, len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES, FRAME_SAMPLES)]


def participant(name: str, pcm: np.ndarray, codec: str, opus: OpusSettings = TALKER) -> SimulatedParticipant:
    person = SimulatedParticipant(name, 0.0, pcm, codec=codec)
    person.encoder = _Replay(encode_all(pcm, codec, opus))
    return person


def silent(name: str, frames: int, codec: str) -> SimulatedParticipant:
    return participant(name, np.zeros(frames * FRAME_SAMPLES, dtype=np.int16), codec)


# ------------------------------------------------------------------------------ offline references
def through_hop(payloads: list[bytes], impairment: Impairment, seed: int) -> list:
    """The packets of one stream as a receiver gets them over one impaired hop (seeded)."""
    path = ImpairedPath(impairment, seed, lambda data: None)
    received = []
    for k, payload in enumerate(payloads):
        fate = path.fate()
        for delay in fate or ():
            received.append((1.0 + k * 0.02 + delay / 1000.0, k & 0xFFFF, (k * 960) & 0xFFFFFFFF, payload))
    return received


def codec_alone(pcm: np.ndarray, codec: str, impairment: Impairment, seed: int,
                talker: OpusSettings = TALKER) -> np.ndarray:
    opus = talker_settings(impairment, talker) if codec == "opus" else TALKER
    heard, _ = play_out(through_hop(encode_all(pcm, codec, opus), impairment, seed), codec,
                        min_delay_ms=RECEIVER_MIN_DELAY_MS)
    return heard


def tandem(pcm: np.ndarray, first: str, second: str, impairment: Impairment, hop: str,
           seed: int, settings: EngineSettings, talker: OpusSettings = TALKER) -> np.ndarray:
    """Talker's encode -> hop 1 -> playout -> server's encode -> hop 2 -> playout."""
    clean = Impairment()
    up, down = (impairment, clean) if hop == "up" else (clean, impairment)
    opus1 = talker_settings(up, talker)
    # the server's own jitter buffer: the engine's settings
    middle, _ = play_out(through_hop(encode_all(pcm, first, opus1), up, seed), first,
                         min_delay_ms=settings.jitter_min_ms, max_delay_ms=settings.jitter_max_ms,
                         time_stretch=settings.jitter_time_stretch)
    server = OpusSettings(settings.opus_bitrate, settings.opus_complexity).with_fec(server_fec_hint(down))
    heard, _ = play_out(through_hop(encode_all(middle, second, server), down, seed + 1), second,
                        min_delay_ms=RECEIVER_MIN_DELAY_MS)
    return heard


# ------------------------------------------------------------------------------------ live paths
@dataclass
class Call:
    """One condition's call: who talks what, who listens, and which received stream is scored."""

    condition: str
    hop: str
    scored: list  # (listener participant, reference pcm, voice name)


class EngineProcess:
    """`voicemix engine` in its own process (as in production, and so that the load generator's
    event loop does not share a core's time slices with the engine's), with its CPU time."""

    def __init__(self, settings_env: dict[str, str], control_port: int = 8797,
                 ports: str = "46000-46999") -> None:
        self.url = f"http://127.0.0.1:{control_port}"
        env = {**os.environ, **settings_env, "VOICEMIX_MEDIA_PORTS": ports}
        self.log = tempfile.NamedTemporaryFile(prefix="voicemix-engine-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mixer.cli", "engine", "--control", f"127.0.0.1:{control_port}",
             "--ports", ports], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.client = None

    async def ready(self):
        from mixer.engine.client import HttpEngine

        self.client = HttpEngine(self.url)
        for _ in range(200):
            if self.process.poll() is not None:
                raise RuntimeError(f"engine exited: {open(self.log.name).read()[-2000:]}")
            try:
                await self.client.stats()
                return self.client
            except Exception:
                await asyncio.sleep(0.1)
        raise RuntimeError("engine not ready")

    def cpu_s(self) -> float:
        return process_cpu_s(self.process.pid)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        # SIGINT stops at once; SIGTERM would drain (wait for the conferences to end)
        self.process.send_signal(signal.SIGINT)
        await asyncio.to_thread(self.process.wait)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its threads) from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Path:
    """A media path under test. Subclasses set the class attributes and `setup()` one call."""

    name = ""
    band = "wb"             # PESQ band: wb (Opus) or nb (G.711)
    hops = ("down", "up")   # which hops a condition may sit on
    mode = "mcu"
    first, second = "opus", "opus"   # codecs of the talker and the listener (for the references)
    talker = TALKER                  # the talker's encoder settings (for the references)
    voices_per_call = 1

    async def setup(self, engine, conference_id: str, voices: list[tuple[str, np.ndarray]],
                    impairment: Impairment, hop: str, seed: int, links: list) -> tuple[list, list]:
        """Join the call's participants; returns (talkers, scored [(listener, ref pcm, voice)])."""
        raise NotImplementedError

    server_kind = "voicemix"

    async def add(self, engine, conference_id, person, impaired: bool, impairment, hop_of_person,
                  seed, links) -> None:
        """Join `person`, behind an impaired link on `hop_of_person` when `impaired`."""
        up, down = Impairment(), Impairment()
        if impaired and not _is_clean(impairment):
            up, down = (impairment, up) if hop_of_person == "up" else (up, impairment)
        await engine.join(conference_id, person, up, down, seed, links)

    def received(self, listener: SimulatedParticipant) -> list:
        return listener.received.packets

    def heard(self, listener) -> tuple[np.ndarray, dict]:
        """What `listener` heard, played out like a softphone, and its receiver's counters."""
        codec = self.second if self.name != McuTalker.name else "opus"
        heard, playout = play_out(self.received(listener), codec, min_delay_ms=RECEIVER_MIN_DELAY_MS)
        receiver = {k: playout.stats()[k] for k in ("lost", "late", "underruns", "stall_concealed",
                                                    "accelerated_ms")}
        receiver.update(playout.decoder_stats())
        return heard, receiver


def _is_clean(impairment: Impairment) -> bool:
    return impairment == Impairment()


class McuListener(Path):
    name, mode = "MCU listener", "mcu"

    async def setup(self, engine, cid, voices, impairment, hop, seed, links):
        (voice, pcm), = voices
        frames = len(pcm) // FRAME_SAMPLES
        talker = participant("talker", pcm, "opus", talker_settings(impairment if hop == "up" else Impairment()))
        listeners = [silent("listener", frames, self.second), silent("listener2", frames, self.second)]
        await self.add(engine, cid, talker, hop == "up", impairment, "up", seed, links)
        await self.add(engine, cid, listeners[0], hop == "down", impairment, "down", seed + 1, links)
        await self.add(engine, cid, listeners[1], False, impairment, "down", seed, links)
        return [talker, *listeners], [(listeners[0], pcm, voice)]


class Sfu(McuListener):
    name, mode = "SFU", "sfu"


class G711Listener(McuListener):
    name, band, second = "MCU, G.711 listener (Opus -> PCMU)", "nb", "PCMU"


class G711Talker(Path):
    name, band, first = "MCU, G.711 talker (PCMU -> Opus)", "nb", "PCMU"

    async def setup(self, engine, cid, voices, impairment, hop, seed, links):
        (voice, pcm), = voices
        frames = len(pcm) // FRAME_SAMPLES
        talker = participant("phone", pcm, "PCMU")
        listener = silent("listener", frames, "opus")
        await self.add(engine, cid, talker, hop == "up", impairment, "up", seed, links)
        await self.add(engine, cid, listener, hop == "down", impairment, "down", seed + 1, links)
        return [talker, listener], [(listener, pcm, voice)]


class McuTalker(Path):
    """Two talk at once: each hears the other through its own mix-minus encoder."""

    name, voices_per_call = "MCU talker (mix-minus)", 2

    async def setup(self, engine, cid, voices, impairment, hop, seed, links):
        (va, a), (vb, b) = voices
        n = max(len(a), len(b))
        a, b = np.pad(a, (0, n - len(a))), np.pad(b, (0, n - len(b)))
        opus = talker_settings(impairment) if hop == "up" else TALKER
        alice, bob = participant("alice", a, "opus", opus), participant("bob", b, "opus", opus)
        # the condition sits on alice's link: on her uplink bob hears it, on her downlink she does
        await self.add(engine, cid, alice, True, impairment, hop, seed, links)
        await self.add(engine, cid, bob, False, impairment, hop, seed, links)
        scored = [(alice, b, vb)] if hop == "down" else [(bob, a, va)]
        if _is_clean(impairment):
            scored = [(alice, b, vb), (bob, a, va)]
        return [alice, bob], scored


class EngineRecording:
    """A recording of the call's mix made by the engine (WAV), fetched after the call."""

    def __init__(self, conference_id: str) -> None:
        self.conference_id = conference_id
        self.recording_id: str | None = None
        self.pcm = np.zeros(0, dtype=np.int16)

    async def start(self, client) -> None:
        self.recording_id = (await client.start_recording(self.conference_id, format="wav"))["id"]

    async def finish(self, client) -> None:
        import io
        import wave

        await client.stop_recording(self.conference_id, self.recording_id)
        for _ in range(50):
            if (await client.recording_info(self.recording_id)).get("state") != "recording":
                break
            await asyncio.sleep(0.1)
        data = b"".join([chunk async for chunk in client.recording_chunks(self.recording_id)])
        with wave.open(io.BytesIO(data), "rb") as reader:
            rate = reader.getframerate()
            pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
        if rate != 48000:
            from mixer.sim.speech import resample
            pcm = (np.clip(resample(pcm / 32768.0, rate, 48000), -1, 1) * 32767).astype(np.int16)
        self.pcm = pcm


class Recording(Path):
    """The engine's recording of the mix (WAV), scored from the file it serves."""

    name, hops = "recording (engine, WAV mix)", ("up",)

    async def setup(self, engine, cid, voices, impairment, hop, seed, links):
        (voice, pcm), = voices
        talker = participant("talker", pcm, "opus", talker_settings(impairment))
        await self.add(engine, cid, talker, True, impairment, "up", seed, links)
        recording = EngineRecording(cid)
        await recording.start(engine.client)
        return [talker], [(recording, pcm, voice)]


class WebRtcParticipant:
    """An aiortc peer (ICE, DTLS-SRTP, its own Opus encoder and decoder: a stack nobody here wrote)
    behind the participant interface the runner uses. It says `pcm` once the call starts."""

    def __init__(self, name: str, pcm: np.ndarray, talks: bool) -> None:
        from types import SimpleNamespace

        from mixer.sim.webrtc_peer import AiortcPeer

        self.name, self.signal = name, pcm
        self.peer = AiortcPeer(name, 0.0, pcm=pcm if talks else None)
        self.received = SimpleNamespace(packets=[], streams={})  # the runner clears these

    async def join(self, client, conference_id: str) -> None:
        answer = await client.add_leg(conference_id, await self.peer.offer(), self.name)
        await self.peer.accept(answer["sdp"])
        await self.peer.connected()

    def forget_received(self) -> None:
        for frames in self.peer.received.values():
            frames.clear()

    def start(self, at_s: float) -> None:
        if hasattr(self.peer.track, "start_at"):
            loop = asyncio.get_running_loop()
            self.peer.track.start_at = time.monotonic() + max(0.0, at_s - loop.time())

    def heard(self) -> np.ndarray:
        return self.peer.heard()

    async def hang_up(self) -> None:
        await self.peer.close()

    def close(self) -> None:
        pass


class WebRtcListener(McuListener):
    """A browser-like listener: an aiortc peer on a WebRTC leg (ICE-lite, DTLS-SRTP, rtcp-mux),
    scored on what aiortc itself decoded. Conditions sit on the talker's plain-RTP link: the
    impairment proxy relays plain UDP only, not an ICE-nominated pair."""

    name, hops = "WebRTC leg listener (aiortc)", ("up",)

    async def setup(self, engine, cid, voices, impairment, hop, seed, links):
        (voice, pcm), = voices
        frames = len(pcm) // FRAME_SAMPLES
        talker = participant("talker", pcm, "opus", talker_settings(impairment if hop == "up" else Impairment()))
        browser = WebRtcParticipant("browser", np.zeros(frames * FRAME_SAMPLES, dtype=np.int16), False)
        other = silent("listener2", frames, self.second)
        await self.add(engine, cid, talker, hop == "up", impairment, "up", seed, links)
        await browser.join(engine.client, cid)
        await self.add(engine, cid, other, False, impairment, "down", seed, links)
        return [talker, browser, other], [(browser, pcm, voice)]

    def heard(self, listener) -> tuple[np.ndarray, dict]:
        pcm = listener.heard()
        return pcm, {"frames_decoded_by_aiortc": len(pcm) // FRAME_SAMPLES}


class WebRtcTalker(Path):
    """A browser-like talker: aiortc sends the speech over a WebRTC leg with its own encoder
    (libopus through PyAV: 96 kb/s stereo, complexity 10, no FEC); a plain-RTP listener is
    scored. Conditions sit on the listener's link (see WebRtcListener)."""

    name, hops = "WebRTC leg talker (aiortc)", ("down",)
    talker = OpusSettings(bitrate=96000, complexity=10, fec=False, packet_loss_percent=0)

    async def setup(self, engine, cid, voices, impairment, hop, seed, links):
        (voice, pcm), = voices
        frames = len(pcm) // FRAME_SAMPLES
        browser = WebRtcParticipant("browser", pcm, True)
        listener = silent("listener", frames, "opus")
        other = silent("listener2", frames, "opus")
        await browser.join(engine.client, cid)
        await self.add(engine, cid, listener, hop == "down", impairment, "down", seed + 1, links)
        await self.add(engine, cid, other, False, impairment, "down", seed, links)
        return [browser, listener, other], [(listener, pcm, voice)]


class JanusListener(McuListener):
    """The same call through Janus AudioBridge with its default room settings."""

    name, server_kind = "Janus AudioBridge listener (defaults)", "janus"


class JanusG711Listener(G711Listener):
    name, server_kind = "Janus AudioBridge, G.711 listener (Opus -> PCMU)", "janus"


PATHS = {cls.__name__.lower(): cls for cls in (McuListener, McuTalker, Sfu, G711Listener, G711Talker,
                                               Recording, WebRtcListener, WebRtcTalker,
                                               JanusListener, JanusG711Listener)}


class VoicemixServer:
    """The engine process behind the paths' `create` / `join`."""

    def __init__(self, settings: EngineSettings) -> None:
        self.process = EngineProcess(settings_env(settings))
        self.client = None

    async def start(self) -> None:
        self.client = await self.process.ready()

    async def create(self, mode: str) -> str:
        return (await self.client.create_conference(mode))["id"]

    async def join(self, cid: str, person: SimulatedParticipant, up: Impairment, down: Impairment,
                   seed: int, links: list) -> None:
        if _is_clean(up) and _is_clean(down):
            await join(self.client, cid, person)
        else:
            _, link = await join_through(self.client, cid, person, up, down, seed)
            links.append(link)

    def cpu_s(self) -> float:
        return self.process.cpu_s()

    async def leg_playout(self, cid: str) -> dict:
        """What the engine's playout did with each leg's incoming stream (its jitter buffer)."""
        legs = (await self.client.get_conference(cid)).get("legs", [])
        keys = ("lost", "underruns", "stall_concealed", "accelerated_ms", "target_delay_ms")
        return {leg.get("label"): {k: leg.get("jitter_buffer", {}).get(k) for k in keys} for leg in legs}

    async def stats(self) -> dict:
        """The engine's clock: how late its ticks ran (a loaded machine shows here first)."""
        stats = await self.client.stats()
        return {k: v for k, v in stats.items() if "late" in k or "skipped" in k}

    async def stop(self) -> None:
        await self.process.stop()


class JanusServer:
    """Janus AudioBridge behind the same `create` / `join`: one room per conference, plain RTP
    participants."""

    def __init__(self) -> None:
        from janus_bridge import JanusProcess

        self.process = JanusProcess()
        self.session = None
        self.rooms = 0

    async def start(self) -> None:
        from janus_bridge import JanusSession

        await self.process.ready()
        self.session = await JanusSession(self.process.url).open()

    async def create(self, mode: str) -> str:
        self.rooms += 1
        room = 9000 + self.rooms
        await self.session.create_room(room)
        return str(room)

    async def join(self, cid: str, person: SimulatedParticipant, up: Impairment, down: Impairment,
                   seed: int, links: list) -> None:
        from mixer.sdp import parse
        from mixer.sim.impair import ImpairedLink

        offer = await person.offer()
        client = (person.host, parse(offer).media[0].port)
        link = None
        receive_at = client
        if not (_is_clean(up) and _is_clean(down)):
            link = await ImpairedLink.open(client, up, down, seed)
            links.append(link)
            receive_at = link.engine_facing
        payload_type = 111 if person.codec == "opus" else 0
        janus = await self.session.join_rtp(int(cid), person.name, receive_at[0], receive_at[1],
                                            payload_type, codec=person.codec)
        person._pt = payload_type
        if link is not None:
            link.connect(janus)
            person._remote = link.client_facing
        else:
            person._remote = janus

    def cpu_s(self) -> float:
        return process_cpu_s(self.process.pid)

    async def stats(self) -> dict:
        return {}

    async def leg_playout(self, cid: str) -> dict:
        return {}

    async def stop(self) -> None:
        await self.session.close()
        self.process.stop()


async def run_path(path: Path, conditions: list[str], voice_names: list[str],
                   settings: EngineSettings, seed: int = 1, batch: int = 4) -> list[dict]:
    """Every condition of one path, one conference each, `batch` conferences at a time (more
    at once and the load generator's own event loop starts to add jitter); returns scored rows."""
    voices_all = [(v, speech(v)) for v in voice_names]
    groups = ([voices_all] if path.voices_per_call == 2 else [[v] for v in voices_all])
    plan = []
    for g, voices in enumerate(groups):
        for c, condition in enumerate(conditions):
            hops = ("clean",) if _is_clean(CONDITIONS[condition]) else path.hops
            plan.extend((voices, condition, hop, seed * 1000 + g * 100 + c * 10 + (hop == "up"))
                        for hop in hops)
    rows = []
    for first in range(0, len(plan), batch):
        rows.extend(await _run_batch(path, plan[first:first + batch], settings))
    return rows


async def _run_batch(path: Path, plan: list, settings: EngineSettings) -> list[dict]:
    server = JanusServer() if path.server_kind == "janus" else VoicemixServer(settings)
    await server.start()
    engine = server
    jobs, links, people = [], [], []
    for voices, condition, hop, s in plan:
        cid = await server.create(path.mode)
        talkers, scored = await path.setup(engine, cid, voices, CONDITIONS[condition],
                                           "down" if hop == "clean" else hop, s, links)
        people.extend(talkers)
        jobs.append((condition, hop, s, scored, cid))
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.3)
    for person in people:  # what arrived while the others were set up came in bunches: not scored
        person.received.packets.clear()
        person.received.streams.clear()
        if isinstance(person, WebRtcParticipant):
            person.forget_received()
    start = loop.time() + 0.2
    for person in people:
        person.start(start)
    longest = max(len(p.signal) for p in people) / 48000
    await asyncio.sleep(longest + 1.2)
    for job in jobs:
        for listener, _, _ in job[3]:
            if isinstance(listener, EngineRecording):
                await listener.finish(server.client)
    server_stats = await server.stats()
    legs = {job[4]: await server.leg_playout(job[4]) for job in jobs}
    for person in people:
        if isinstance(person, WebRtcParticipant):
            await person.hang_up()
    await server.stop()
    for person in people:
        person.close()
    for link in links:
        link.close()
    rows = []
    for condition, hop, s, scored, cid in jobs:
        for listener, reference, voice in scored:
            if isinstance(listener, EngineRecording):
                heard = listener.pcm
                receiver = {}
            else:
                heard, receiver = path.heard(listener)
            rows.append({"path": path.name, "condition": condition, "hop": hop, "voice": voice,
                         "band": path.band, "seed": s, "pesq": _score(reference, heard, path.band),
                         "receiver": receiver, "server": server_stats, "engine_legs": legs[cid],
                         "_ref": reference, "_heard": heard})
    return rows


def settings_env(settings: EngineSettings) -> dict[str, str]:
    """The engine settings that differ from the defaults, as VOICEMIX_* variables."""
    defaults = EngineSettings().model_dump()
    return {f"VOICEMIX_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in settings.model_dump().items()
            if value != defaults[name] and value is not None}


def _score(reference: np.ndarray, heard: np.ndarray, band: str) -> float | None:
    if len(heard) < 48000:
        return None
    try:
        return round(pesq_score(reference, heard, band), 3)
    except Exception as error:  # PESQ refuses signals it cannot align (no utterance found)
        print(f"  PESQ failed: {error}", file=sys.stderr)
        return None


def references(rows: list[dict], path: Path, settings: EngineSettings) -> None:
    """Add the codec-alone and tandem scores for each row's condition, hop and seed."""
    for row in rows:
        impairment = CONDITIONS[row["condition"]]
        pcm = row["_ref"]
        hop = "down" if row["hop"] == "clean" else row["hop"]
        seed = row["seed"] + (1 if hop == "down" else 0)
        alone_codec = path.second if path.band == "nb" and path.first == "opus" else path.first
        row["codec_alone"] = _score(pcm, codec_alone(pcm, alone_codec, impairment, seed, path.talker),
                                    path.band)
        row["tandem"] = _score(pcm, tandem(pcm, path.first, path.second, impairment, hop,
                                           row["seed"], settings, path.talker), path.band)


def _visqol(reference: np.ndarray, heard: np.ndarray) -> float | None:
    score = visqol_score(reference, heard)
    return None if score is None else round(score, 3)


def table(rows: list[dict]) -> str:
    lines = ["| path | condition | hop | voice | PESQ | codec alone | tandem | ViSQOL | ViSQOL codec alone / tandem |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['path']} | {r['condition']} | {r['hop']} | {r['voice']} | "
                     f"{_fmt(r['pesq'])} | {_fmt(r.get('codec_alone'))} | {_fmt(r.get('tandem'))} | "
                     f"{_fmt(r.get('visqol'))} | {_fmt(r.get('visqol_codec_alone'))} / "
                     f"{_fmt(r.get('visqol_tandem'))} |")
    return "\n".join(lines)


def wide_table(rows: list[dict]) -> str:
    """One line per path and hop (and its references), one column per condition; each cell is
    the voices' scores, "espeak / flite"."""
    conditions = [c for c in CONDITIONS if any(r["condition"] == c for r in rows)]
    voices = [v for v in VOICES if any(r["voice"] == v for r in rows)]
    lines = ["| path | hop | " + " | ".join(conditions) + " |", "|---|---|" + "---|" * len(conditions)]
    keys = []
    for r in rows:
        for hop in ("down", "up"):
            if (r["path"], hop) not in keys and (r["hop"] in (hop, "clean")):
                if r["hop"] == hop or any(x["path"] == r["path"] and x["hop"] == hop for x in rows):
                    keys.append((r["path"], hop))

    def cell(path: str, hop: str, condition: str, field: str) -> str:
        found = {r["voice"]: r.get(field) for r in rows if r["path"] == path and r["condition"] == condition
                 and r["hop"] in ((hop,) if condition != "clean" else ("clean",))}
        return " / ".join(_fmt(found.get(v)) for v in voices) if found else "n/a"

    done_refs = set()
    for path, hop in keys:
        lines.append(f"| {path} | {hop} | " + " | ".join(cell(path, hop, c, "pesq") for c in conditions) + " |")
        band = next(r["band"] for r in rows if r["path"] == path)
        for field, label in (("codec_alone", "codec alone"), ("tandem", "two encodes in tandem")):
            ref_key = (field, band, hop, path if field == "tandem" else band)
            if any(r.get(field) is not None for r in rows if r["path"] == path) and ref_key not in done_refs:
                done_refs.add(ref_key)
                lines.append(f"| *{label} ({path})* | {hop} | " +
                             " | ".join(cell(path, hop, c, field) for c in conditions) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paths", nargs="*", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--conditions", nargs="*", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--voices", nargs="*", default=list(VOICES), choices=list(VOICES))
    parser.add_argument("--visqol", action="store_true", help="ViSQOL on clean rows (~1 min each)")
    parser.add_argument("--no-references", action="store_true")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--render", help="print the wide table of a --json file and exit")
    args = parser.parse_args()
    if args.render:
        print(wide_table(json.loads(FsPath(args.render).read_text())))
        return
    settings = EngineSettings()
    print(f"engine encoder: {settings.opus_bitrate} b/s, complexity {settings.opus_complexity}, "
          f"FEC {'follows RTCP' if settings.opus_fec and settings.opus_packet_loss_percent is None else settings.opus_packet_loss_percent}; "
          f"time stretch {'on' if settings.jitter_time_stretch else 'off'}; talker {TALKER}")
    all_rows = []
    for key in args.paths:
        path = PATHS[key]()
        began = time.monotonic()
        import uvloop
        rows = uvloop.run(run_path(path, args.conditions, args.voices, settings, args.seed))
        if not args.no_references:
            references(rows, path, settings)
        if args.visqol:
            for row in rows:
                if row["condition"] == "clean" and row["band"] == "wb":
                    row["visqol"] = _visqol(row["_ref"], row["_heard"])
                    if not args.no_references:
                        pcm, clean = row["_ref"], Impairment()
                        row["visqol_codec_alone"] = _visqol(pcm, codec_alone(pcm, "opus", clean, 1))
                        row["visqol_tandem"] = _visqol(pcm, tandem(pcm, "opus", "opus", clean, "down",
                                                                   1, settings))
        print(f"{path.name}: {len(rows)} rows in {time.monotonic() - began:.0f} s", file=sys.stderr)
        print(table(rows), flush=True)
        all_rows.extend(rows)
        if args.json:  # after every path: a long run that is stopped keeps what it measured
            FsPath(args.json).write_text(json.dumps(
                [{k: v for k, v in r.items() if not k.startswith("_")} for r in all_rows], indent=1))


if __name__ == "__main__":
    main()
