"""Server-side participants that live in the controller: bots that play audio and the recorder.

Both are `mixer.sim.participant.SimulatedParticipant`s, the same real UDP RTP client the engine's
tests use: they join the engine conference by an SDP offer over loopback and exchange real RTP.
A bot plays a tone (generated frame by frame, so a long bot costs no memory) or a recording; the
recorder never talks, so it hears the whole call (the mix from an MCU, the forwarded speakers'
streams from an SFU), and writes it to a 48 kHz mono WAV file as it arrives.
"""
from __future__ import annotations

import asyncio
import logging
import time
import wave
from pathlib import Path

import numpy as np

from mixer import _rtp
from mixer.codec import CODECS, MIX_RATE, FrameDecoder
from mixer.sim.participant import SimulatedParticipant

log = logging.getLogger("voicemix.controller")

BOT_AMPLITUDE = 0.2
REORDER_WINDOW_S = 0.2     # the recorder waits this long for late packets before writing
DRAIN_INTERVAL_S = 0.25
MAX_CONCEALED_FRAMES = 5   # a longer gap in sequence numbers is written as silence
MAX_DRIFT_S = 2.0          # a stream whose timestamps run this far from its arrivals restarted


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
        self.received.streams.clear()


class _Stream:
    """One SSRC the recorder hears: an MCU sends one (the mix), an SFU one per forwarded speaker."""

    __slots__ = ("decoder", "first_ts", "offset", "last_seq", "next_position")

    def __init__(self, codec: str) -> None:
        self.decoder = FrameDecoder(codec)
        self.first_ts: int | None = None
        self.offset = 0            # file position (samples) of first_ts
        self.last_seq: int | None = None
        self.next_position = 0     # where this stream's next decoded frame goes


class Recorder(SimulatedParticipant):
    """Hears the call and writes it to `path` as 48 kHz mono WAV; `begin()` ... `finish()`.

    Every stream it receives (one mix from an MCU; one per forwarded speaker from an SFU) is
    decoded on its own and placed by its RTP timestamps, from where its first packet arrived on
    the recording's clock; the streams are summed. What is older than the reorder window is final
    and written, silence included, so the file keeps wall-clock time. A gap in sequence numbers of
    up to MAX_CONCEALED_FRAMES is concealed by the decoder (Opus PLC, G.711 repetition); a
    timestamp that runs far from the arrival clock (a sender restart) starts the stream anew, so a
    hostile stream cannot make the recorder buffer minutes of audio.
    """

    attached_at = 0.0  # monotonic time it joined its call (the controller sets it)

    def __init__(self, name: str, path: Path, codec: str = "opus") -> None:
        super().__init__(name, 0.0, np.zeros(0, dtype=np.int16), codec=codec,
                         send_audio_level=False)
        self.path = path
        self._codec = codec
        self._ratio = MIX_RATE // CODECS[codec].clock_rate
        self._writer: wave.Wave_write | None = None
        self._streams: dict[int, _Stream] = {}
        self._t0: float | None = None            # arrival time of file position 0
        self._mix = np.zeros(0, dtype=np.int32)  # samples not yet final, from samples_written on
        self.samples_written = 0
        self.late_packets = 0
        self.restarts = 0
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
        """Place every packet that arrived before `cutoff` (per stream, in sequence order) and
        write what is final up to `cutoff` on the recording's clock."""
        for ssrc, packets in list(self.received.streams.items()):
            ready = [p for p in packets if p[0] <= cutoff]
            if not ready:
                continue
            self.received.streams[ssrc] = [p for p in packets if p[0] > cutoff]
            stream = self._streams.get(ssrc)
            if stream is None:
                stream = self._streams[ssrc] = _Stream(self._codec)
            reference = stream.last_seq if stream.last_seq is not None else ready[0][1]
            ready.sort(key=lambda p: _rtp.seq_diff(p[1], reference))
            for arrival, seq, ts, payload in ready:
                self._place(stream, arrival, seq, ts, payload)
        self.received.packets.clear()  # the same packets, kept by SSRC above
        if self._t0 is not None:
            final = self.samples_written + len(self._mix) if cutoff == float("inf") else \
                int((cutoff - self._t0) * MIX_RATE)
            self._write_until(final)

    def _place(self, stream: _Stream, arrival: float, seq: int, ts: int, payload: bytes) -> None:
        if self._t0 is None:
            self._t0 = arrival
        here = int((arrival - self._t0) * MIX_RATE)  # this packet's arrival on the file's clock
        if stream.first_ts is not None:
            position = stream.offset + ((ts - stream.first_ts) & 0xFFFFFFFF) * self._ratio
            if abs(position - here) > MAX_DRIFT_S * MIX_RATE:
                stream.first_ts = None  # timestamps left the arrival clock: a restart
                self.restarts += 1
        if stream.first_ts is None:
            stream.first_ts = ts
            stream.offset = max(here, self.samples_written)
            stream.last_seq = None
            stream.next_position = stream.offset
        if stream.last_seq is not None:
            gap = _rtp.seq_diff(seq, stream.last_seq)
            if gap <= 0:
                self.late_packets += 1
                return
            for _ in range(min(gap - 1, MAX_CONCEALED_FRAMES)):
                stream.decoder.conceal()
                self._take_frames(stream)
        stream.next_position = stream.offset + ((ts - stream.first_ts) & 0xFFFFFFFF) * self._ratio
        stream.decoder.decode(payload)
        self._take_frames(stream)
        stream.last_seq = seq

    def _take_frames(self, stream: _Stream) -> None:
        while (frame := stream.decoder.take_frame()) is not None:
            self._add(stream.next_position, frame)
            stream.next_position += len(frame)

    def _add(self, position: int, samples: np.ndarray) -> None:
        start = position - self.samples_written
        if start < 0:  # older than what is already written: too late
            samples = samples[-start:]
            start = 0
        end = start + len(samples)
        if end > len(self._mix):
            self._mix = np.concatenate([self._mix, np.zeros(end - len(self._mix), dtype=np.int32)])
        self._mix[start:end] += samples

    def _write_until(self, position: int) -> None:
        count = position - self.samples_written
        if count <= 0:
            return
        if count > len(self._mix):  # nothing received lately: silence keeps the clock
            self._mix = np.concatenate([self._mix, np.zeros(count - len(self._mix), dtype=np.int32)])
        self._write(np.clip(self._mix[:count], -32768, 32767).astype(np.int16))
        self._mix = self._mix[count:]

    def _write(self, samples: np.ndarray) -> None:
        if len(samples):
            if self._writer is not None:
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
