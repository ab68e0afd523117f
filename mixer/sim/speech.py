"""Test speech for listening-quality measurements: two synthetic voices, 48 kHz mono int16.

Objective speech-quality measures (PESQ, ViSQOL) need real speech, not tones. Two synthesizers
from Debian speak Harvard sentences (IEEE 1969 phonetically balanced lists, public domain):
`espeak-ng` (formant synthesis, a buzzy male voice with energy up to 11 kHz) and `flite` with
its `slt` voice (a female unit-selection voice, 16 kHz). Two engines, two speakers: a path that
only works for one kind of voice shows. Each is resampled to 48 kHz and set to an active speech
level of -26 dBov (the level ITU-T P.862.3 asks for), so the scores do not depend on loudness.
The result is cached in a directory (synthesis takes a second; the tests call it often).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from math import gcd
from pathlib import Path

import numpy as np

RATE = 48000
ACTIVE_LEVEL_DBOV = -26.0
# Harvard sentences, list 1 and list 2 (IEEE Recommended Practice for Speech Quality
# Measurements, 1969): ~16 s each at the synthesizers' default speed.
SENTENCES = {
    "espeak": ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue "
               "background. It is easy to tell the depth of a well. These days a chicken leg is "
               "a rare dish. Rice is often served in round bowls. The juice of lemons makes fine "
               "punch. The box was thrown beside the parked truck."),
    "flite": ("The boy was there when the sun rose. A rod is used to catch pink salmon. The "
              "source of the huge river is the clear spring. Kick the ball straight and follow "
              "through. Help the woman get back to her feet. A pot of tea helps to pass the "
              "evening. Smoky fires lack flame and heat."),
}
VOICES = tuple(SENTENCES)


class SpeechError(RuntimeError):
    """A synthesizer is missing or failed."""


def _synthesize(voice: str, path: Path) -> None:
    text = SENTENCES[voice]
    if voice == "espeak":
        command = ["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(path), text]
    else:
        command = ["flite", "-voice", "slt", "-t", text, "-o", str(path)]
    if shutil.which(command[0]) is None:
        raise SpeechError(f"{command[0]} is not installed (apt-get install {command[0]})")
    done = subprocess.run(command, capture_output=True, timeout=60)
    if done.returncode != 0 or not path.exists():
        raise SpeechError(f"{command[0]} failed: {done.stderr.decode(errors='replace')[:200]}")


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as reader:
        if reader.getsampwidth() != 2:
            raise SpeechError(f"{path}: expected 16-bit samples")
        data = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
        channels = reader.getnchannels()
        if channels > 1:
            data = data.reshape(-1, channels)[:, 0]
        return data.astype(np.float64) / 32768.0, reader.getframerate()


def active_level_dbov(x: np.ndarray, rate: int = RATE) -> float:
    """Level of the speech's active part: RMS over the 20 ms frames within 25 dB of the loudest
    ones (a simple stand-in for ITU-T P.56's activity detection)."""
    frame = rate // 50
    frames = np.asarray(x, dtype=np.float64)[: len(x) // frame * frame].reshape(-1, frame)
    power = np.mean(frames ** 2, axis=1) + 1e-20
    active = power > np.percentile(power, 95) * 10 ** (-25 / 10)
    return float(10 * np.log10(np.mean(power[active])))


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling with scipy's anti-aliasing filter (float in, float out)."""
    from scipy.signal import resample_poly

    g = gcd(rate_in, rate_out)
    return resample_poly(np.asarray(x, dtype=np.float64), rate_out // g, rate_in // g)


def speech(voice: str = "espeak", cache_dir: Path | None = None) -> np.ndarray:
    """One voice's sentences as 48 kHz mono int16 at -26 dBov active level."""
    if voice not in SENTENCES:
        raise ValueError(f"voice must be one of {VOICES}")
    cache_dir = cache_dir or Path(tempfile.gettempdir()) / "voicemix-speech"
    cached = cache_dir / f"{voice}-48k.npy"
    if cached.exists():
        return np.load(cached)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        _synthesize(voice, raw)
        x, rate = _read_wav(raw)
    x = resample(x, rate, RATE)
    x *= 10 ** ((ACTIVE_LEVEL_DBOV - active_level_dbov(x)) / 20)
    # 300 ms of silence before and after: the first word is not lost to a filling jitter buffer
    pad = np.zeros(RATE * 3 // 10)
    pcm = (np.clip(np.concatenate([pad, x, pad]), -1.0, 1.0) * 32767).astype(np.int16)
    np.save(cached, pcm)
    return pcm
