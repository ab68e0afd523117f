"""Players: audio the engine itself plays into an MCU conference (phone-tree prompts, tones).

A minimal player for the IVR (issue 12) until the engine-side media services of issue 13 (WAV and
Ogg Opus players for MCU and SFU, recorders) land: the same control operations and names
(`add_player`, `get_player`, `update_player`, `remove_player`), sources a tone or a 16-bit PCM WAV
file. Each tick the conference takes the player's next 20 ms frame (48 kHz mono) and mixes it
for everyone, like a talker that no one hears minus itself.
"""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from mixer import _resample
from mixer.codec import FRAME_SAMPLES, MIX_RATE

TONE_AMPLITUDE = 0.2                 # -14 dBFS: clear, with headroom in the mix
MAX_WAV_SECONDS = 600                # a prompt, not an album: read whole into memory
PLAYING, FINISHED, STOPPED = "playing", "finished", "stopped"


class PlayerError(ValueError):
    """A source that cannot be played; `code` is the control API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit PCM WAV as 48 kHz mono int16 (stereo averaged; 8/12/16/24/48 kHz resampled)."""
    try:
        with wave.open(str(path), "rb") as reader:
            rate, channels, width = reader.getframerate(), reader.getnchannels(), reader.getsampwidth()
            if width != 2 or channels not in (1, 2):
                raise PlayerError("bad_file", f"{path.name}: only 16-bit mono or stereo WAV")
            if MIX_RATE % rate:
                raise PlayerError("bad_file", f"{path.name}: {rate} Hz does not divide 48 kHz")
            if reader.getnframes() > rate * MAX_WAV_SECONDS:
                raise PlayerError("bad_file", f"{path.name}: longer than {MAX_WAV_SECONDS} s")
            data = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").astype(np.int16)
    except (OSError, EOFError, wave.Error) as exc:
        raise PlayerError("bad_file", f"{path.name}: {exc}") from None
    if channels == 2:
        data = ((data[0::2].astype(np.int32) + data[1::2]) // 2).astype(np.int16)
    if rate != MIX_RATE:
        step = rate // 50   # whole 20 ms frames only
        data = data[: len(data) // step * step]
        out = np.zeros(len(data) * (MIX_RATE // rate), dtype=np.int16)
        _resample.Resampler(rate, MIX_RATE).process_into(np.ascontiguousarray(data), out)
        data = out
    return data


class Player:
    """Plays a tone or samples frame by frame; `state` becomes "finished" at the end."""

    def __init__(self, player_id: str, *, tone: float | None = None, samples: np.ndarray | None = None,
                 seconds: float | None = None, loop: bool = False, label: str | None = None,
                 kind: str = "tone") -> None:
        self.id = player_id
        self.label = label or player_id
        self.kind = kind
        self.tone = tone
        self.samples = samples
        self.loop = loop
        self.total = None if seconds is None else int(seconds * MIX_RATE)
        self.position = 0
        self.state = PLAYING
        self.muted = False
        self._frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def next_frame(self) -> np.ndarray | None:
        if self.state != PLAYING:
            return None
        n = FRAME_SAMPLES
        if self.total is not None and self.position >= self.total:
            self.state = FINISHED
            return None
        if self.tone is not None:
            t = np.arange(self.position, self.position + n)
            self._frame[:] = np.sin(2 * np.pi * self.tone * t / MIX_RATE) * TONE_AMPLITUDE * 32767
        else:
            length = len(self.samples)
            if length == 0 or (self.position >= length and not self.loop):
                self.state = FINISHED
                return None
            start = self.position % length if self.loop else self.position
            chunk = self.samples[start:start + n]
            self._frame[:len(chunk)] = chunk
            self._frame[len(chunk):] = 0
        self.position += n
        return None if self.muted else self._frame

    def stats(self) -> dict:
        return {"id": self.id, "label": self.label, "kind": self.kind, "state": self.state,
                "muted": self.muted, "position_s": round(self.position / MIX_RATE, 3)}
