"""Measuring received audio: which test tones are present and how loud.

Simulated participants speak distinct sine tones; what a listener heard is judged by the level of
each tone in the received signal (an FFT with a Hann window), so "hears the others, not itself" is
a measurement, not an assumption.
"""
from __future__ import annotations

import numpy as np

# Distinct, non-harmonic test tones inside the telephone band (300..3400 Hz), so G.711 legs carry
# them too and no tone sits on another's harmonic.
TEST_TONES_HZ = (350.0, 520.0, 710.0, 930.0, 1170.0, 1430.0, 1710.0, 2010.0, 2330.0, 2670.0,
                 3030.0, 3310.0)


def tone(freq_hz: float, seconds: float, rate: int = 48000, amplitude: float = 0.25,
         phase: float = 0.0) -> np.ndarray:
    """A sine tone as int16 with peak `amplitude` of full scale."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq_hz * t + phase) * amplitude * 32767).astype(np.int16)


def tone_levels_db(pcm: np.ndarray, freqs: tuple[float, ...] | list[float],
                   rate: int = 48000) -> dict[float, float]:
    """Level of each tone in dBFS (a full-scale sine reads 0), from a Hann-windowed FFT.

    Looks at the strongest bin within +-15 Hz of each tone, so small resampling offsets still count.
    """
    x = np.asarray(pcm, dtype=np.float64) / 32768.0
    if len(x) < 256:
        return {f: -120.0 for f in freqs}
    window = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x * window)) * 2 / window.sum()
    bin_hz = rate / len(x)
    levels = {}
    for f in freqs:
        lo = max(int((f - 15) / bin_hz), 0)
        hi = min(int((f + 15) / bin_hz) + 1, len(spectrum))
        peak = spectrum[lo:hi].max() if hi > lo else 0.0
        levels[f] = 20 * np.log10(max(peak, 1e-9))
    return levels


def rms_dbfs(pcm: np.ndarray) -> float:
    """RMS level in dBFS (full-scale sine = -3.01)."""
    x = np.asarray(pcm, dtype=np.float64) / 32768.0
    if len(x) == 0:
        return -120.0
    return float(20 * np.log10(max(np.sqrt(np.mean(x * x)), 1e-9)))


def heard_tones(pcm: np.ndarray, freqs, rate: int = 48000, threshold_db: float = -40.0) -> list:
    """The tones whose level is above `threshold_db` dBFS."""
    return [f for f, level in tone_levels_db(pcm, freqs, rate).items() if level > threshold_db]
