"""Engine CPU of one PSTN leg (G.711 <-> Opus translation) against one VoIP leg (Opus), in an MCU.

    python bench/pstn_leg_cpu.py              # ~2 min: every scenario twice
    python bench/pstn_leg_cpu.py --window 5 --repeat 1

The engine is a `voicemix engine` process pinned to core 0; this process (core 1) holds every
participant's UDP socket and, every 20 ms, sends each leg its next packet from pre-encoded 1 s
cycles (so its own CPU stays small and off the engine's core) and drains what the engine sends.
A VoIP leg sends Opus with the RFC 6464 level extension (what browsers send); a PSTN leg sends
PCMU, as a carrier does, with no level extension: the engine decodes it every tick to know
whether it talks. What the engine does for each kind:

- a VoIP listener: jitter buffer, its level read from the header, a copy of the shared Opus mix;
- a PSTN listener: jitter buffer, a G.711 decode and 8 -> 48 kHz resample to measure its level,
  a copy of the shared G.711 mix (one 48 -> 8 kHz resample and encode per tick for all of them);
- a VoIP talker: Opus decode into the mix, its own mix-minus Opus encode;
- a PSTN talker: G.711 decode + upsample into the mix, its own mix-minus downsampled and G.711
  encoded (the translation both ways).

Each scenario adds N legs of one kind to a baseline of 2 Opus talkers; the cost per leg is
(engine CPU with them - engine CPU of the baseline) / N over the same window, from /proc.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mixer.engine.client import HttpEngine  # noqa: E402
from mixer import _g711, _rtp  # noqa: E402
from mixer._opus import OpusEncoder  # noqa: E402
from mixer.sdp import offer_audio, parse  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
LEVEL_EXT = 1


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def opus_cycle(freq: float | None) -> list[tuple[bytes, int]]:
    """50 pre-encoded 20 ms Opus frames (a tone, or silence) with their RFC 6464 levels."""
    encoder = OpusEncoder(48000, 1, "voip", 20, 32000)
    out = []
    for k in range(50):
        t = (np.arange(960) + 960 * k) / 48000
        pcm = (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16) if freq else np.zeros(960, np.int16)
        out.append((encoder.encode(pcm), 20 if freq else 127))
    return out


def pcmu_cycle(freq: float | None) -> list[bytes]:
    out = []
    for k in range(50):
        t = (np.arange(160) + 160 * k) / 8000
        pcm = (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16) if freq else np.zeros(160, np.int16)
        out.append(_g711.ulaw_encode(pcm))
    return out


class Leg:
    def __init__(self, kind: str, freq: float | None) -> None:
        self.kind = kind
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.cycle = opus_cycle(freq) if kind == "opus" else pcmu_cycle(freq)
        self.ssrc = int.from_bytes(os.urandom(4), "big")
        self.remote = None
        self.seq = 0

    def offer(self) -> str:
        if self.kind == "opus":
            return offer_audio(local_ip="127.0.0.1", local_port=self.port, codecs=("opus",),
                               rtcp_mux=True, audio_level_ext_id=LEVEL_EXT)[0]
        return offer_audio(local_ip="127.0.0.1", local_port=self.port, codecs=("PCMU",),
                           rtcp_mux=True, audio_level_ext_id=None)[0]

    def send(self, k: int) -> None:
        if self.kind == "opus":
            payload, level = self.cycle[k % 50]
            ext = _rtp.audio_level_extension(LEVEL_EXT, level, level < 127)
            packet = _rtp.build_rtp(111, self.seq & 0xFFFF, k * 960, self.ssrc, payload, False,
                                    _rtp.EXTENSION_PROFILE_ONE_BYTE, ext)
        else:
            packet = _rtp.build_rtp(0, self.seq & 0xFFFF, k * 160, self.ssrc, self.cycle[k % 50])
        self.seq += 1
        self.sock.sendto(packet, self.remote)

    def drain(self) -> None:
        try:
            while True:
                self.sock.recv(4096)
        except BlockingIOError:
            pass


async def scenario(engine: HttpEngine, pid: int, added: list[tuple[str, float | None]],
                   warmup: float, window: float) -> float:
    """Engine CPU seconds per second with 2 Opus talkers plus `added` legs."""
    conference = (await engine.create_conference("mcu"))["id"]
    legs = [Leg("opus", 350.0), Leg("opus", 520.0)] + [Leg(kind, freq) for kind, freq in added]
    for leg in legs:
        answer = await engine.add_leg(conference, leg.offer())
        description = parse(answer["sdp"])
        media = next(m for m in description.media if m.media == "audio")
        leg.remote = ("127.0.0.1", media.port)
    loop = asyncio.get_running_loop()
    start = loop.time()
    k = 0
    measured = None
    cpu_at = None
    while True:
        now = loop.time()
        if measured is None and now - start >= warmup:
            measured, cpu_at = now, cpu_seconds(pid)
        if measured is not None and now - measured >= window:
            cpu = cpu_seconds(pid) - cpu_at
            elapsed = now - measured
            break
        for leg in legs:
            leg.send(k)
            leg.drain()
        k += 1
        await asyncio.sleep(max(0.0, start + k * 0.02 - loop.time()))
    await engine.delete_conference(conference)
    for leg in legs:
        leg.sock.close()
    return cpu / elapsed


async def run(args, pid: int, control: str) -> None:
    engine = HttpEngine(f"http://{control}")
    n_listen, n_talk = args.listeners, args.talkers
    scenarios = {
        "baseline (2 Opus talkers)": [],
        f"+{n_listen} VoIP listeners (Opus)": [("opus", None)] * n_listen,
        f"+{n_listen} PSTN listeners (PCMU)": [("pcmu", None)] * n_listen,
        f"+{n_talk} VoIP talkers (Opus)": [("opus", 710.0 + 200 * i) for i in range(n_talk)],
        f"+{n_talk} PSTN talkers (PCMU)": [("pcmu", 710.0 + 200 * i) for i in range(n_talk)],
    }
    results: dict[str, list[float]] = {name: [] for name in scenarios}
    for _ in range(args.repeat):
        for name, added in scenarios.items():
            results[name].append(await scenario(engine, pid, added, args.warmup, args.window))
    await engine.close()
    base = float(np.mean(results["baseline (2 Opus talkers)"]))
    print(f"engine CPU per leg, MCU, engine pinned to core 0 (load average {os.getloadavg()[0]:.1f}); "
          f"window {args.window:g} s x {args.repeat}")
    print(f"{'scenario':<32} {'engine CPU':>11} {'per added leg':>14} {'us per tick':>12}")
    per_leg: dict[str, float] = {}
    for name, values in results.items():
        mean = float(np.mean(values))
        count = n_listen if "listeners" in name else (n_talk if "talkers" in name and "+" in name else 0)
        if count:
            leg = (mean - base) / count
            per_leg[name] = leg
            print(f"{name:<32} {100 * mean:>10.1f}% {100 * leg:>13.2f}% {leg * 20000:>11.0f}"
                  f"   runs: {', '.join(f'{100 * v:.1f}%' for v in values)}")
        else:
            print(f"{name:<32} {100 * mean:>10.1f}%   runs: {', '.join(f'{100 * v:.1f}%' for v in values)}")
    names = list(per_leg)
    if len(names) == 4:
        print(f"PSTN/VoIP ratio: listener {per_leg[names[1]] / per_leg[names[0]]:.2f}x, "
              f"talker {per_leg[names[3]] / per_leg[names[2]]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", type=int, default=20)
    parser.add_argument("--talkers", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    voicemix = shutil.which("voicemix") or str(Path(sys.executable).with_name("voicemix"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        control = f"127.0.0.1:{s.getsockname()[1]}"
    engine = subprocess.Popen(["taskset", "-c", "0", voicemix, "engine", "--control", control,
                               "--ports", "47000-47999"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    os.sched_setaffinity(0, {1})
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(tuple([control.split(":")[0], int(control.split(":")[1])]), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        import uvloop
        uvloop.run(run(args, engine.pid, control))
    finally:
        engine.terminate()
        engine.wait(10)


if __name__ == "__main__":
    main()
