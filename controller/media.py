"""Server-side participants that live in the controller: bots that play audio and the recorder.

Both are `mixer.sim.participant.SimulatedParticipant`s, the same real UDP RTP client the engine's
tests use: they join the engine conference by an SDP offer over loopback and exchange real RTP.
A bot plays a tone (generated frame by frame, so a long bot costs no memory) or a recording; the
recorder never talks, so it hears the whole mix, and writes it to a 48 kHz mono WAV file as it
arrives.
"""
from __future__ import annotations

import asyncio
import logging
import time
import wave
from pathlib import Path

import numpy as np

from mixer import _core
from mixer.codec import CODECS, MIX_RATE, FrameDecoder
from mixer.sim.participant import SimulatedParticipant

log = logging.getLogger("voicemix.controller")

BOT_AMPLITUDE = 0.2
REORDER_WINDOW_S = 0.2     # the recorder waits this long for late packets before writing
DRAIN_INTERVAL_S = 0.25
MAX_CONCEALED_FRAMES = 5   # a longer gap in sequence numbers is written as silence
MAX_GAP_S = 600.0          # a timestamp jump beyond this is a sender restart, not silence


class PlayError(ValueError):
    """A bot's `play` value that names nothing playable."""


class ToneSignal:
    """A sine tone of `seconds`, computed per slice: SimulatedParticipant reads `signal[a:b]`."""

    def __init__(self, freq_hz: float, seconds: float, amplitude: float = BOT_AMPLITUDE) -> None:
        self.freq_hz = freq_hz
        self.samples = int(seconds * MIX_RATE)
        self.amplitude = amplitude

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, item: slice) -> np.ndarray:
        start, stop, _ = item.indices(self.samples)
        n = np.arange(start, max(start, stop))
        wave_ = np.sin(2 * np.pi * self.freq_hz * n / MIX_RATE) * self.amplitude * 32767
        return wave_.astype(np.int16)


def parse_tone(play: str) -> float | None:
    """The frequency of `tone:<hz>`, None if `play` is not a tone; PlayError if a bad one."""
    if not play.startswith("tone:"):
        return None
    try:
        freq = float(play[5:])
    except ValueError:
        raise PlayError(f"{play!r}: the tone frequency must be a number of Hz") from None
    if not 20.0 <= freq <= 20000.0:
        raise PlayError(f"{play!r}: the tone frequency must be within 20..20000 Hz")
    return freq


def read_recording(path: Path) -> np.ndarray:
    """A recording written by `Recorder` (48 kHz mono 16-bit WAV) as samples."""
    with wave.open(str(path), "rb") as reader:
        if (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) != (MIX_RATE, 1, 2):
            raise PlayError("only 48 kHz mono 16-bit recordings can be played")
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").astype(np.int16)


def open_wav(path: Path) -> wave.Wave_write:
    """A 48 kHz mono 16-bit WAV file for writing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = wave.open(str(path), "wb")
    writer.setnchannels(1)
    writer.setsampwidth(2)
    writer.setframerate(MIX_RATE)
    return writer


class BotParticipant(SimulatedParticipant):
    """A talking participant that keeps no received audio (it would grow with the call)."""

    attached_at = 0.0  # monotonic time it joined its call (the controller sets it)

    def _on_datagram(self, data: bytes) -> None:
        super()._on_datagram(data)
        self.received.packets.clear()


class Recorder(SimulatedParticipant):
    """Hears the mix and writes it to `path` as 48 kHz mono WAV; `run()` until `finish()`.

    Packets are placed by their RTP timestamp, so a stretch where the engine sent nothing is
    written as silence and the file keeps wall-clock time; a gap in sequence numbers of up to
    MAX_CONCEALED_FRAMES is concealed by the decoder (Opus PLC, G.711 repetition).
    """

    attached_at = 0.0  # monotonic time it joined its call (the controller sets it)

    def __init__(self, name: str, path: Path, codec: str = "opus") -> None:
        super().__init__(name, 0.0, np.zeros(0, dtype=np.int16), codec=codec,
                         send_audio_level=False)
        self.path = path
        self.decoder = FrameDecoder(codec)
        self._ratio = MIX_RATE // CODECS[codec].clock_rate
        self._writer: wave.Wave_write | None = None
        self._first_ts: int | None = None
        self._last_seq: int | None = None
        self.samples_written = 0
        self.late_packets = 0
        self._task: asyncio.Task | None = None
        self.started_at = time.time()

    def begin(self) -> None:
        self._writer = open_wav(self.path)
        self._task = asyncio.get_running_loop().create_task(self._drain_loop())

    async def _drain_loop(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_INTERVAL_S)
            self.drain(time.monotonic() - REORDER_WINDOW_S)

    def drain(self, cutoff: float) -> None:
        """Decode and write every packet that arrived before `cutoff`, in sequence order."""
        packets = self.received.packets
        ready = [p for p in packets if p[0] <= cutoff]
        if not ready:
            return
        self.received.packets = [p for p in packets if p[0] > cutoff]
        reference = self._last_seq if self._last_seq is not None else ready[0][1]
        ready.sort(key=lambda p: _core.seq_diff(p[1], reference))
        for _arrival, seq, ts, payload in ready:
            self._write_packet(seq, ts, payload)

    def _write_packet(self, seq: int, ts: int, payload: bytes) -> None:
        if self._first_ts is None:
            self._first_ts = ts
        if self._last_seq is not None:
            gap = _core.seq_diff(seq, self._last_seq)
            if gap <= 0:
                self.late_packets += 1
                return
            for _ in range(min(gap - 1, MAX_CONCEALED_FRAMES)):
                self.decoder.conceal()
                self._flush_frames()
        position = ((ts - self._first_ts) & 0xFFFFFFFF) * self._ratio
        silence = position - self.samples_written
        if 0 < silence <= MAX_GAP_S * MIX_RATE:
            self._write(np.zeros(silence, dtype=np.int16))
        self.decoder.decode(payload)
        self._flush_frames()
        self._last_seq = seq

    def _flush_frames(self) -> None:
        while (frame := self.decoder.take_frame()) is not None:
            self._write(frame)

    def _write(self, samples: np.ndarray) -> None:
        if self._writer is not None and len(samples):
            self._writer.writeframes(samples.astype("<i2").tobytes())
            self.samples_written += len(samples)

    async def finish(self) -> float:
        """Write what is left, close the file; returns the recording's duration in seconds."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.drain(float("inf"))
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.close()
        return self.samples_written / MIX_RATE


