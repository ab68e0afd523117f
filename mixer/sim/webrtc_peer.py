"""A WebRTC peer nobody here wrote: aiortc (a full ICE agent, DTLS, SRTP, Opus) as a test client.

`AiortcPeer` sends a tone (or given speech, `PcmTrack`) on one `sendrecv` audio m-line, optionally receives on `receive_slots`
`recvonly` ones (how a browser joins an SFU call), and records what each received track decoded to,
with arrival times, so tests can say who was heard on which m-line and for how long there was
silence. aiortc is a development dependency: only tests and benchmarks import this module.
"""
from __future__ import annotations

import asyncio
import contextlib
import fractions
import time

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from av import AudioFrame

from mixer.analysis import tone_levels_db

RATE = 48000
FRAME = 960  # 20 ms


class ToneTrack(MediaStreamTrack):
    """A 20 ms-paced sine at `freq_hz` (the microphone of a test peer); `muted` sends silence."""

    kind = "audio"

    def __init__(self, freq_hz: float, amplitude: float = 0.2) -> None:
        super().__init__()
        self.freq_hz = freq_hz
        self.amplitude = amplitude
        self.muted = False
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._n * FRAME / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(FRAME) + self._n * FRAME) / RATE
        level = 0.0 if self.muted else self.amplitude
        pcm = (np.sin(2 * np.pi * self.freq_hz * t) * level * 32767).astype(np.int16)
        frame = _frame(pcm, self._n * FRAME)
        self._n += 1
        return frame


class PcmTrack(ToneTrack):
    """A microphone that says `pcm` (48 kHz int16) once, from the moment `start_at` (monotonic
    seconds) is set, and is silent before and after: speech for the quality benchmark."""

    def __init__(self, pcm: np.ndarray) -> None:
        super().__init__(0.0, 0.0)
        self.pcm = np.asarray(pcm, dtype=np.int16)
        self.start_at: float | None = None
        self._said = 0

    async def recv(self) -> AudioFrame:
        frame = await super().recv()
        if self.start_at is not None and time.monotonic() >= self.start_at and not self.muted:
            chunk = self.pcm[self._said:self._said + FRAME]
            self._said += len(chunk)
            if len(chunk):
                samples = np.zeros(FRAME, dtype=np.int16)
                samples[:len(chunk)] = chunk
                frame = _frame(samples, frame.pts)
        return frame

    @property
    def finished(self) -> bool:
        return self._said >= len(self.pcm)


def _frame(pcm: np.ndarray, pts: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = RATE
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, RATE)
    return frame


class AiortcPeer:
    """One aiortc RTCPeerConnection with a tone microphone (or `pcm`, said once when
    `track.start_at` is set); records every received track by mid."""

    def __init__(self, name: str, freq_hz: float, *, receive_slots: int = 0,
                 ice_servers: list[dict] | None = None, relay_only: bool = False,
                 pcm: np.ndarray | None = None) -> None:
        self.name = name
        self.freq_hz = freq_hz
        self.receive_slots = receive_slots
        servers = [RTCIceServer(urls=s["urls"], username=s.get("username"),
                                credential=s.get("credential")) for s in ice_servers or []]
        config = RTCConfiguration(iceServers=servers or None)
        if relay_only:
            config.iceTransportPolicy = "relay"
        self.pc = RTCPeerConnection(config)
        self.track = ToneTrack(freq_hz) if pcm is None else PcmTrack(pcm)
        self.received: dict[str, list[tuple[float, np.ndarray]]] = {}  # mid -> [(arrival, pcm)]
        self._pumps: list[asyncio.Task] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track) -> None:
        transceiver = next((t for t in self.pc.getTransceivers() if t.receiver.track is track), None)
        mid = transceiver.mid if transceiver is not None else str(len(self.received))
        frames = self.received.setdefault(mid, [])

        async def pump() -> None:
            while True:
                try:
                    frame = await track.recv()
                except Exception:  # MediaStreamError when the track ends
                    return
                samples = frame.to_ndarray().reshape(-1)
                channels = len(frame.layout.channels)
                frames.append((time.monotonic(), samples[::channels].astype(np.int16)))
        self._pumps.append(asyncio.get_running_loop().create_task(pump()))

    # -------------------------------------------------------------------------------- signaling
    async def offer(self) -> str:
        self.pc.addTransceiver(self.track, direction="sendrecv")
        for _ in range(self.receive_slots):
            self.pc.addTransceiver("audio", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))

    async def answer(self, offer_sdp: str) -> str:
        """The answering side of a direct call (another peer offered)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        self.pc.addTrack(self.track)  # takes the offered transceiver: sendrecv
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def connected(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.pc.connectionState != "connected":
            if self.pc.connectionState == "failed" or time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: connection {self.pc.connectionState}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.pc.close()
        for pump in self._pumps:
            pump.cancel()
        for pump in self._pumps:
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    # --------------------------------------------------------------------------------- analysis
    def heard(self, mid: str | None = None, skip_s: float = 0.0) -> np.ndarray:
        """PCM received on `mid` (all tracks summed when None), after `skip_s` of each track."""
        tracks = [self.received.get(mid, [])] if mid is not None else list(self.received.values())
        pcms = []
        for frames in tracks:
            pcm = np.concatenate([f for _, f in frames]) if frames else np.zeros(0, np.int16)
            pcms.append(pcm[int(skip_s * RATE):])
        if not pcms:
            return np.zeros(0, np.int16)
        length = max(len(p) for p in pcms)
        total = np.zeros(length, np.int32)
        for pcm in pcms:
            total[:len(pcm)] += pcm
        return np.clip(total, -32768, 32767).astype(np.int16)

    def levels(self, freqs: list[float], mid: str | None = None, skip_s: float = 0.5) -> dict:
        pcm = self.heard(mid, skip_s)
        return tone_levels_db(pcm, freqs) if len(pcm) > RATE // 10 else {f: -120.0 for f in freqs}

    def tone_times(self, freq_hz: float, threshold_db: float = -40.0) -> list[float]:
        """Arrival times of received 20 ms frames (any track) that carry `freq_hz` above the
        threshold: the moments this peer heard that voice."""
        times = []
        for frames in self.received.values():
            for arrival, pcm in frames:
                if len(pcm) >= FRAME // 2 and tone_levels_db(pcm, [freq_hz])[freq_hz] > threshold_db:
                    times.append(arrival)
        return sorted(times)
