"""CPU cost of the engine's media services: recording, players, forks, per 20 ms of audio.

    python bench/media_services.py [--seconds 4] [--rounds 5]

Every service is driven the way its conference drives it, in-process and without the event loop:
the recording's mix track gets one frame per tick, a participant track one Opus packet per tick
(and its reorder release), the SFU mixdown one packet per forwarded sender per tick, a player is
asked for one frame per tick (MCU: mixed into the total and three mix-minus rows; SFU: encoded and
packetized), a fork forwards one packet per tick or encodes the mix once per tick and sends it
through a real UDP socket to a loopback sink (the send system call included). Files are written to
a temporary directory (page cache: the disk's speed is not what is measured).

CPU is `time.process_time()` (user + system of this process) over `--seconds` of audio; rounds are
interleaved (every service once per round), and the median round is reported. The unit is CPU
microseconds per 20 ms of audio, and the share of one core that is: "per recorded call" is the mix,
"per track" one participant's track, "per player" and "per fork" one each. The machine is shared
with other work: run it twice, and read the numbers against each other more than absolutely.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))

import numpy as np  # noqa: E402

from mixer import _g711, _mix, _rtp  # noqa: E402
from mixer._opus import OpusEncoder  # noqa: E402
from mixer.analysis import tone  # noqa: E402
from mixer.codec import FRAME_SAMPLES, OpusSettings  # noqa: E402
from mixer.engine.engine import Engine  # noqa: E402
from mixer.legs.transport import SendFlusher  # noqa: E402
from mixer.media.mixdown import Mixdown  # noqa: E402
from mixer.media.player import Player, ToneSource, open_file  # noqa: E402
from mixer.media.recorder import MixTrack, OpusOggSink, ParticipantTrack  # noqa: E402
from mixer.settings import EngineSettings  # noqa: E402
from mixer.sfu.sources import PlayerSender  # noqa: E402

TICK_MS = 20.0


class FakeLeg:
    """What a mixdown input reads of a leg."""

    def __init__(self, leg_id: str, codec: str = "opus") -> None:
        self.id = leg_id
        self.codec = codec
        self.clock_rate = 48000 if codec == "opus" else 8000
        self.ptime_ms = 20
        self.label = leg_id


def speech_like(seconds: float) -> np.ndarray:
    """Three tones with a syllable-rate envelope: Opus codes it like voice."""
    t = np.arange(int(seconds * 48000)) / 48000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    pcm = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 710.0, 1430.0)) / 3
    return (pcm * envelope * 0.3 * 32767).astype(np.int16)


def opus_packets(pcm: np.ndarray, ssrc: int = 7) -> list[_rtp.RtpPacket]:
    encoder = OpusEncoder(48000, 1, "voip", 20, 32000, 5, True, 10, False)
    return [_rtp.RtpPacket.parse(_rtp.build_rtp(111, k & 0xFFFF, 960 * k, ssrc, encoder.encode(
        np.ascontiguousarray(pcm[k * 960:(k + 1) * 960])))) for k in range(len(pcm) // 960)]


def timed(ticks: int, step) -> float:
    """CPU microseconds per tick of `step(k)` over `ticks` ticks."""
    gc.collect()
    began = time.process_time()
    for k in range(ticks):
        step(k)
    return (time.process_time() - began) * 1e6 / ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ticks = int(args.seconds * 1000 / TICK_MS)
    pcm = speech_like(args.seconds + 1)
    frames = [np.ascontiguousarray(pcm[k * 960:(k + 1) * 960]) for k in range(ticks)]
    packets = opus_packets(pcm)
    narrow = tone(700.0, args.seconds + 1, rate=8000, amplitude=0.3)
    g711 = [_rtp.RtpPacket.parse(_rtp.build_rtp(0, k, 160 * k, 9, _g711.ulaw_encode(narrow[160 * k:160 * (k + 1)])))
            for k in range(ticks)]
    work = Path(tempfile.mkdtemp(prefix="voicemix-bench-media-"))
    files = {}
    with open(work / "prompt.ogg", "wb") as out:  # a 10 s prompt as a player file
        sink = OpusOggSink(out, 32000)
        sink.write(speech_like(10.0))
        sink.close()
    files["ogg"] = work / "prompt.ogg"
    import wave
    with wave.open(str(work / "prompt16k.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(speech_like(10.0)[::3].astype("<i2").tobytes())
    files["wav16"] = work / "prompt16k.wav"
    results: dict[str, list[float]] = {}

    async def forks_round(engine: Engine, sink_port: int) -> dict[str, float]:
        out = {}
        for name, source, srtp in (("fork of a participant (RTP)", "leg", False),
                                   ("fork of a participant (SRTP)", "leg", True),
                                   ("fork of the mix, Opus (RTP)", "mix", False),
                                   ("fork of the mix, Opus (SRTP)", "mix", True)):
            leg_id = next(iter(engine.conferences["room"].voices))
            fork = await engine.add_fork("room", leg_id if source == "leg" else "mix",
                                         f"127.0.0.1:{sink_port}", srtp=srtp)
            service = engine.conferences["room"].media.services[fork["id"]]
            source_leg = engine.conferences["room"].voices[leg_id].leg
            if source == "leg":
                def step(k, service=service, source_leg=source_leg):
                    service.on_packet(source_leg, packets[k], k * TICK_MS)
                    engine.flusher.flush()
            else:
                def step(k, service=service):
                    service.on_mix(k * TICK_MS, frames[k])
                    engine.flusher.flush()
            out[name] = timed(ticks, step)
            engine.remove_fork("room", fork["id"])
        return out

    async def run() -> None:
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sink_port = sink.getsockname()[1]
        engine = Engine(EngineSettings(data_dir=work, media_ports="48100-48199",
                                       fork_allow_loopback=True))
        engine.flusher = SendFlusher(automatic=False)
        engine.create_conference("mcu", "room")
        from mixer.sdp import offer_audio
        offer, _ = offer_audio(local_ip="127.0.0.1", local_port=sink_port, codecs=("opus",))
        await engine.add_leg("room", offer, "talker")
        for round_ in range(args.rounds):
            row: dict[str, float] = {}
            # recording: the mix
            for fmt in ("ogg", "wav"):
                track = MixTrack(work / f"mix{round_}.{fmt}", fmt, 32000, 0.0)
                row[f"recording: the mix ({fmt})"] = timed(ticks, lambda k: track.write(k * TICK_MS, frames[k]))
                track.finish(ticks * TICK_MS)
            # recording: one participant's track
            for fmt, codec, source in (("ogg", "opus", packets), ("wav", "opus", packets),
                                       ("ogg", "PCMU", g711)):
                track = ParticipantTrack("p", "p", codec, work / f"t{round_}{codec}.{fmt}", fmt,
                                         32000, 0.0, 0.0, 30.0)

                def step(k, track=track, source=source):
                    track.on_packet(source[k], k * TICK_MS)
                    track.release(k * TICK_MS)
                label = {("ogg", "opus"): "track, Opus muxed into Ogg (no decode)",
                         ("wav", "opus"): "track, Opus decoded to WAV",
                         ("ogg", "PCMU"): "track, G.711 transcoded into Ogg"}[(fmt, codec)]
                row[label] = timed(ticks, step)
                track.finish(ticks * TICK_MS)
            # SFU: the mixdown, per forwarded sender
            mixdown = Mixdown(EngineSettings())
            legs = [FakeLeg(f"s{i}") for i in range(3)]
            for leg in legs:
                mixdown.leg_added(leg)

            def step(k):
                for i, leg in enumerate(legs):
                    mixdown.on_packet(leg, packets[k], k * TICK_MS)
                mixdown.mix(k * TICK_MS, legs)
            row["SFU mixdown, per forwarded sender"] = timed(ticks, step) / len(legs)
            # players in an MCU: the frame, and one more row in a mix of three talkers (the
            # difference between mixing 4 rows and 3 is the player's share of the kernel)
            stack = np.stack([frames[0]] * 4)
            total = np.zeros(FRAME_SAMPLES, dtype=np.int16)
            minus = np.zeros((4, FRAME_SAMPLES), dtype=np.int16)
            three = timed(ticks, lambda k: _mix.mix_minus(stack[:3], total, minus[:3]))
            for name, make in (("player, tone, MCU (mixed in)", lambda: ToneSource(440.0, None)),
                               ("player, WAV 16 kHz, MCU (mixed in)", lambda: open_file(files["wav16"])),
                               ("player, Ogg Opus, MCU (mixed in)", lambda: open_file(files["ogg"]))):
                player = Player("p", make(), loop=True)

                def step(k, player=player):
                    stack[3] = player.frame(k * TICK_MS)
                    _mix.mix_minus(stack, total, minus)
                row[name] = timed(ticks, step) - three
                player.stop()
            sender = PlayerSender(Player("p", ToneSource(440.0, None)), OpusSettings())
            row["player, tone, SFU (encoded, packetized)"] = timed(
                ticks, lambda k: sender.next_packet(k * TICK_MS))
            row.update(await forks_round(engine, sink_port))
            for name, value in row.items():
                results.setdefault(name, []).append(value)
            # drain the sink so its buffer never fills
            sink.setblocking(False)
            try:
                while sink.recv(4096):
                    pass
            except BlockingIOError:
                pass
        engine.delete_conference("room")
        sink.close()

    asyncio.run(run())
    print(f"CPU per 20 ms of audio, median of {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s ({time.strftime('%Y-%m-%d')}, load average "
          f"{open('/proc/loadavg').read().split()[0]})")
    print(f"{'service':44s} {'us/20 ms':>9s} {'% core':>7s} {'min..max us':>14s}")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:44s} {median:9.1f} {median / 200:7.2f} "
              f"{min(values):6.1f}..{max(values):<6.1f}")


if __name__ == "__main__":
    main()
