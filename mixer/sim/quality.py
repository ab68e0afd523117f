"""How good what a listener heard was: dropouts and tone SNR of test-tone calls.

The simulated talk pattern (`mixer.sim.participant.talk_pattern`) keeps at least one other voice
audible to every listener of a call of four or more, so any 20 ms frame much quieter than the
typical frame is a dropout: loss the jitter buffer and concealment did not hide. The tone SNR is the
power at the voices' tones against everything else in the spectrum, which concealment artefacts,
codec noise and clicks all raise.
"""
from __future__ import annotations

import numpy as np

FRAME = 960                 # 20 ms at 48 kHz
DROPOUT_BELOW_DB = 12.0     # a frame this far under the median frame level is a dropout
TONE_HALF_WIDTH_HZ = 15.0


def frame_levels_db(pcm: np.ndarray, frame: int = FRAME) -> np.ndarray:
    """RMS level of each whole frame in dBFS."""
    x = np.asarray(pcm, dtype=np.float64)[: len(pcm) // frame * frame] / 32768.0
    if not len(x):
        return np.zeros(0)
    rms = np.sqrt(np.mean(x.reshape(-1, frame) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-9))


def dropout_percent(pcm: np.ndarray, frame: int = FRAME) -> float:
    """Share of frames more than DROPOUT_BELOW_DB under the median frame, in percent."""
    levels = frame_levels_db(pcm, frame)
    if not len(levels):
        return 100.0
    return float(100.0 * np.mean(levels < np.median(levels) - DROPOUT_BELOW_DB))


def tone_snr_db(pcm: np.ndarray, tones_hz: list[float], rate: int = 48000) -> float:
    """Power within +-15 Hz of the expected tones over the power everywhere else, in dB."""
    x = np.asarray(pcm, dtype=np.float64) / 32768.0
    if len(x) < rate // 10:
        return float("nan")
    power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    in_tone = np.zeros(len(power), dtype=bool)
    for tone in tones_hz:
        in_tone |= np.abs(freqs - tone) <= TONE_HALF_WIDTH_HZ
    signal, rest = power[in_tone].sum(), power[~in_tone].sum()
    return float(10 * np.log10(max(signal, 1e-20) / max(rest, 1e-20)))
