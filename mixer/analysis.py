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


def tone_envelope(pcm: np.ndarray, freq_hz: float, rate: int = 48000,
                  window: int = 960) -> np.ndarray:
    """Amplitude envelope of one tone: complex demodulation, then a `window`-sample moving average
    (20 ms: its nulls at multiples of 50 Hz keep neighbouring test tones out)."""
    x = np.asarray(pcm, dtype=np.float64) / 32768.0
    n = np.arange(len(x))
    baseband = x * np.exp(-2j * np.pi * freq_hz * n / rate)
    kernel = np.ones(window) / window
    return 2 * np.abs(np.convolve(baseband, kernel, mode="same"))


def onsets(envelope: np.ndarray, threshold: float, min_gap: int = 4800,
           guard: int = 960) -> np.ndarray:
    """Sample positions where the envelope rises through `threshold` after a quiet stretch: below
    half the threshold for `min_gap` samples, ignoring the last `guard` samples (the rising edge)."""
    above = envelope >= threshold
    rising = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    quiet = np.concatenate(([0], np.cumsum(envelope < threshold / 2)))
    result = [i for i in rising if i >= min_gap
              and quiet[i - guard] - quiet[i - min_gap] == min_gap - guard]
    return np.array(result, dtype=np.int64)


def onset_latencies_ms(talker_pcm: np.ndarray, talker_frame_times: np.ndarray,
                       heard_pcm: np.ndarray, heard_sample_times: np.ndarray, freq_hz: float,
                       rate: int = 48000, frame: int = 960, max_latency_s: float = 0.5) -> list[float]:
    """For each talk-spurt onset of `freq_hz`: time from the talker sending it to the listener
    receiving it, in ms.

    A sample's send time is its frame's send time plus its offset in the frame; its receive time is
    the arrival of the packet that carried it plus the same offset. The envelope filter's delay is
    identical on both sides and cancels.
    """
    sent_env = tone_envelope(talker_pcm, freq_hz, rate)
    peak_sent = np.percentile(sent_env, 99) if len(sent_env) else 0.0
    heard_env = tone_envelope(heard_pcm, freq_hz, rate) if len(heard_pcm) else np.zeros(0)
    peak_heard = np.percentile(heard_env, 99) if len(heard_env) else 0.0
    if peak_sent <= 0 or peak_heard <= 1e-4:
        return []
    sent_onsets = onsets(sent_env, peak_sent / 2)
    heard_onsets = onsets(heard_env, peak_heard / 2)
    heard_times = []
    for q in heard_onsets:
        t = heard_sample_times[q]
        if not np.isnan(t):
            heard_times.append(t + (q % frame) / rate)
    heard_times = np.array(heard_times)
    latencies = []
    for p in sent_onsets:
        k = p // frame
        if k >= len(talker_frame_times):
            break
        sent_at = talker_frame_times[k] + (p % frame) / rate
        later = heard_times[(heard_times >= sent_at) & (heard_times <= sent_at + max_latency_s)]
        if len(later):
            latencies.append((later.min() - sent_at) * 1000.0)
    return latencies
