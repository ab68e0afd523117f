"""Players: audio the engine plays into a conference (bots, announcements, hold music, prompts).

A player has no network peer: each tick its conference asks it for the next 20 ms frame (48 kHz
mono int16) and mixes it (MCU) or encodes and forwards it as a sender (SFU). Sources:

- a tone (`ToneSource`): a sine generated frame by frame, so a long tone costs no memory;
- a WAV file (`WavSource`): 16-bit PCM, mono or stereo (averaged), at 48 kHz or a rate that
  divides it (8, 12, 16, 24 kHz; resampled by the compiled polyphase resampler), read a second
  at a time;
- an Ogg Opus file (`OggOpusSource`, RFC 7845): demuxed a page at a time and decoded by libopus,
  pre-skip, output gain and end trimming applied.

Playback follows the ticks it is given: after a stall (ticks skipped) it goes on where it stopped,
so no word of a prompt is lost; whoever stamps the RTP timestamps advances them by the time that
passed. A file that turns out bad mid-way (a cut or corrupt tail) ends playback, it never raises
into the conference's tick.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mixer import _mix, _resample
from mixer._opus import OpusDecoder, OpusError, packet_duration
from mixer.codec import FRAME_SAMPLES, MIX_RATE
from mixer.media.ogg import OggError, OggOpusReader
from mixer.media.wav import WavError, read_wav_format

log = logging.getLogger("voicemix.engine")

TONE_AMPLITUDE = 0.2       # -14 dBFS: a clear tone that leaves headroom in the mix
MIN_TONE_HZ, MAX_TONE_HZ = 20.0, 20000.0
WAV_BLOCK_FRAMES = 50      # read a second of a WAV file at a time
PLAYING, FINISHED, STOPPED, FAILED = "playing", "finished", "stopped", "failed"


class PlayerError(ValueError):
    """A source that cannot be played: `code` is the control API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ToneSource:
    """A sine of `hz` for `seconds` (None: until stopped), phase-continuous across frames."""

    kind = "tone"

    def __init__(self, hz: float, seconds: float | None, amplitude: float = TONE_AMPLITUDE) -> None:
        if not (isinstance(hz, (int, float)) and MIN_TONE_HZ <= hz <= MAX_TONE_HZ):
            raise PlayerError("bad_tone", f"a tone is {MIN_TONE_HZ:g}..{MAX_TONE_HZ:g} Hz")
        self.hz = float(hz)
        self.total = None if seconds is None else int(seconds * MIX_RATE)
        self.position = 0
        self.amplitude = amplitude * 32767
        self._step = 2 * math.pi * self.hz / MIX_RATE
        self._n = np.arange(FRAME_SAMPLES)
        self._phase = 0.0
        self._frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        # a whole number of Hz repeats every 48000 / gcd(48000, hz) samples: one period is
        # computed once and frames are slices of it (a copy, not 960 sines, per tick)
        self._period: np.ndarray | None = None
        if self.hz == int(self.hz):
            length = MIX_RATE // math.gcd(MIX_RATE, int(self.hz))
            cycle = (np.sin(np.arange(length) * self._step) * self.amplitude).astype(np.int16)
            self._period = np.concatenate([cycle] * (FRAME_SAMPLES // length + 2))
            self._length = length

    def read(self) -> np.ndarray | None:
        if self.total is not None and self.position >= self.total:
            return None
        if self._period is not None:
            offset = self.position % self._length
            self._frame[:] = self._period[offset:offset + FRAME_SAMPLES]
        else:
            np.multiply(np.sin(self._phase + self._n * self._step), self.amplitude, out=self._frame,
                        casting="unsafe")
            # the phase is kept modulo 2 pi: exact however long the tone plays
            self._phase = (self._phase + FRAME_SAMPLES * self._step) % (2 * math.pi)
        self.position += FRAME_SAMPLES
        if self.total is not None and self.position > self.total:  # the last frame is partial
            self._frame[FRAME_SAMPLES - (self.position - self.total):] = 0
        return self._frame

    def rewind(self) -> None:
        self.position = 0
        self._phase = 0.0

    def describe(self) -> dict:
        return {"kind": self.kind, "hz": self.hz}

    def close(self) -> None:
        pass


class WavSource:
    """A 16-bit PCM WAV file, streamed from disk a block at a time."""

    kind = "wav"

    def __init__(self, path: Path) -> None:
        try:
            self.format = read_wav_format(path)
        except WavError as exc:
            raise PlayerError("unsupported_file", f"{path.name}: {exc}") from None
        if MIX_RATE % self.format.rate:
            raise PlayerError("unsupported_file", f"{path.name}: {self.format.rate} Hz does not "
                              f"divide 48 kHz (convert it to 8, 16, 24 or 48 kHz)")
        self.path = path
        self._handle: BinaryIO = open(path, "rb")
        self._ratio = MIX_RATE // self.format.rate
        self._resampler = _resample.Resampler(self.format.rate, MIX_RATE) if self._ratio > 1 else None
        self._pending = np.zeros(0, dtype=np.int16)
        self._read_bytes = 0
        self._frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.rewind()

    def rewind(self) -> None:
        self._handle.seek(self.format.data_offset)
        self._read_bytes = 0
        self._pending = np.zeros(0, dtype=np.int16)
        if self._resampler is not None:
            self._resampler.reset()

    def _fill(self) -> bool:
        channels = self.format.channels
        want = min(WAV_BLOCK_FRAMES * FRAME_SAMPLES // self._ratio * 2 * channels,
                   self.format.data_bytes - self._read_bytes)
        if want <= 0:
            return False
        data = self._handle.read(want)
        self._read_bytes += len(data)
        data = data[:len(data) - len(data) % (2 * channels)]
        if not data:
            return False
        pcm = np.frombuffer(data, dtype="<i2")
        if channels == 2:
            pcm = ((pcm[0::2].astype(np.int32) + pcm[1::2]) // 2).astype(np.int16)
        else:
            pcm = pcm.astype(np.int16)
        if self._resampler is not None:
            pcm = self._resampler.process(np.ascontiguousarray(pcm))
        self._pending = np.concatenate([self._pending, pcm])
        return True

    def read(self) -> np.ndarray | None:
        while len(self._pending) < FRAME_SAMPLES:
            if not self._fill():
                break
        if not len(self._pending):
            return None
        count = min(FRAME_SAMPLES, len(self._pending))
        self._frame[:count] = self._pending[:count]
        self._frame[count:] = 0
        self._pending = self._pending[count:]
        return self._frame

    def describe(self) -> dict:
        return {"kind": self.kind, "file": self.path.name, "rate": self.format.rate,
                "channels": self.format.channels,
                "seconds": round(self.format.frames / self.format.rate, 3)}

    def close(self) -> None:
        self._handle.close()


class OggOpusSource:
    """An Ogg Opus file, demuxed a page at a time and decoded to 48 kHz mono."""

    kind = "ogg"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: BinaryIO = open(path, "rb")
        self._decoder = OpusDecoder(MIX_RATE, 1)
        self._scratch = np.zeros(5760, dtype=np.int16)
        self._frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        try:
            self._open()
        except (OggError, OSError) as exc:
            self._handle.close()
            raise PlayerError("unsupported_file", f"{path.name}: {exc}") from None
        self.decode_errors = 0

    def _open(self) -> None:
        self._reader = OggOpusReader(self._handle)
        self._packets = self._reader.packets(_duration)
        head = self._reader.head
        self._skip = head.pre_skip
        self._gain = 10 ** (head.output_gain_q8 / 256 / 20)  # RFC 7845 5.1: Q7.8 dB
        self._pending = np.zeros(0, dtype=np.int16)

    def rewind(self) -> None:
        self._handle.seek(0)
        self._decoder = OpusDecoder(MIX_RATE, 1)
        self._open()

    def _fill(self) -> bool:
        try:
            packet, trim = next(self._packets)
        except StopIteration:
            return False
        except OggError as exc:  # a bad page mid-file: play what came before, then end
            log.warning("player: %s: %s", self.path.name, exc)
            return False
        try:
            n = self._decoder.decode_into(packet, self._scratch)
        except OpusError:
            self.decode_errors += 1
            n = self._decoder.conceal_into(self._scratch)
        pcm = self._scratch[:max(n - trim, 0)]
        if self._skip:
            dropped = min(self._skip, len(pcm))
            self._skip -= dropped
            pcm = pcm[dropped:]
        if self._gain != 1.0 and len(pcm):
            pcm = np.clip(pcm * self._gain, -32768, 32767).astype(np.int16)
        self._pending = np.concatenate([self._pending, pcm])
        return True

    def read(self) -> np.ndarray | None:
        while len(self._pending) < FRAME_SAMPLES:
            if not self._fill():
                break
        if not len(self._pending):
            return None
        count = min(FRAME_SAMPLES, len(self._pending))
        self._frame[:count] = self._pending[:count]
        self._frame[count:] = 0
        self._pending = self._pending[count:]
        return self._frame

    def describe(self) -> dict:
        return {"kind": self.kind, "file": self.path.name, "channels": self._reader.head.channels}

    def close(self) -> None:
        self._handle.close()


def _duration(packet: bytes) -> int:
    try:
        return packet_duration(packet)
    except OpusError as exc:
        raise ValueError(str(exc)) from None


def open_file(path: Path) -> WavSource | OggOpusSource:
    """A source for a WAV or Ogg Opus file, told apart by their first bytes."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except FileNotFoundError:
        raise PlayerError("no_such_file", f"no file {path.name}") from None
    except IsADirectoryError:
        raise PlayerError("no_such_file", f"{path.name} is a directory") from None
    except OSError as exc:
        raise PlayerError("unsupported_file", f"{path.name}: {exc.strerror}") from None
    if magic == b"RIFF":
        return WavSource(path)
    if magic == b"OggS":
        return OggOpusSource(path)
    raise PlayerError("unsupported_file", f"{path.name} is neither WAV nor Ogg")


class Player:
    """One source played into one conference: `frame()` once per tick gives the next 20 ms, until
    the source ends (then `state` is "finished", or it starts over with `loop`), `stop()` is
    called, or `seconds` of playback have passed."""

    def __init__(self, player_id: str, source, *, label: str | None = None, loop: bool = False,
                 seconds: float | None = None) -> None:
        self.id = player_id
        self.label = label or player_id
        self.source = source
        self.loop = loop
        self.limit_frames = None if seconds is None else max(1, int(seconds * 1000 // 20))
        self.state = PLAYING
        self.muted = False         # plays on (time passes in the source) but is not heard
        self.frames_played = 0
        self.loops = 0
        self.level = 127           # RFC 6464 level of the last frame (-dBov; 127 silence)
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.last_frame: np.ndarray | None = None  # this tick's frame (an SFU mixdown reads it)

    def frame(self, now_ms: float) -> np.ndarray | None:
        """This tick's 20 ms of audio (a view, valid until the next call), None once ended."""
        self.last_frame = None
        if self.state != PLAYING:
            return None
        if self.limit_frames is not None and self.frames_played >= self.limit_frames:
            self._end(FINISHED)
            return None
        try:
            frame = self.source.read()
            if frame is None and self.loop and self.frames_played:
                self.source.rewind()
                self.loops += 1
                frame = self.source.read()
        except (OSError, ValueError) as exc:  # the file went away or went bad under us
            log.warning("player %s: %s", self.id, exc)
            self._end(FAILED)
            return None
        if frame is None:
            self._end(FINISHED)
            return None
        self.frames_played += 1
        if self.muted:
            self.level = 127
            return None
        self.level = _mix.audio_level(frame)
        self.last_frame = frame
        return frame

    def stop(self) -> None:
        if self.state == PLAYING:
            self._end(STOPPED)

    def _end(self, state: str) -> None:
        self.state = state
        self.ended_at = time.time()
        self.source.close()

    def stats(self) -> dict:
        return {
            "id": self.id,
            "label": self.label,
            "state": self.state,
            "muted": self.muted,
            "source": self.source.describe(),
            "loop": self.loop,
            "loops": self.loops,
            "frames_played": self.frames_played,
            "seconds_played": round(self.frames_played * 0.02, 3),
            "level": self.level,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }
