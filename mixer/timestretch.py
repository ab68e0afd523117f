"""Time-scale modification of decoded speech: shorten it where nobody hears it.

A jitter buffer that lowers its delay must play audio faster for a moment. Dropping a whole 20 ms
frame is heard as a click or a hole in a word; WebRTC's NetEq instead *accelerates*: it removes
one pitch period where the signal is periodic, cross-fading the two periods so the waveform stays
continuous (a pitch-synchronous overlap-add, the WSOLA family). `accelerate` does that:

- in near-silence (below -50 dBov) any amount up to the caller's limit goes, cross-faded;
- in voiced speech (if the caller allows it) one pitch period: the lag is searched on a 4 kHz copy
  of the audio (2.5-15 ms: voices of 67-400 Hz), the shortest of the near-best lags, refined at
  full rate; the change is made only where the two periods correlate (normalised correlation at
  least CORRELATION_THRESHOLD, NetEq's 0.9); elsewhere (onsets, fricatives) the caller tries again
  on the next frame;
- `cut` removes a given amount whatever the audio holds: the last resort.

The opposite operation (pre-emptive expand, repeating a period) was built too and measured worse
than concealment after an underrun (see mixer/playout.py), so it is not here.

Only a few calls a second per stream while the delay changes, so numpy is fast enough here (about
30 us a call); the per-frame path does not call it at all.
"""
from __future__ import annotations

import numpy as np

RATE = 48000
DECIMATION = 12                       # 48 kHz -> 4 kHz for the lag search
MIN_LAG = RATE * 25 // 10000          # 2.5 ms
MAX_LAG = RATE * 15 // 1000           # 15 ms
CORRELATION_THRESHOLD = 0.9
SILENCE_RMS = 32768 * 10 ** (-50 / 20)  # below -50 dBov (speech is at -26) a change is inaudible


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.sqrt(np.dot(a, a) * np.dot(b, b)) + 1e-9))


def _best_lag(x: np.ndarray, max_lag: int) -> tuple[int, float]:
    """The lag in [MIN_LAG, max_lag] whose two periods x[0:L] and x[L:2L] correlate best, and that
    normalised correlation at full rate. The shortest of the near-best coarse lags wins (a lag of
    two pitch periods correlates as well as one, and changes the timing twice as much)."""
    full = x[: 2 * max_lag].astype(np.float64)
    kernel = np.ones(DECIMATION) / DECIMATION
    low = np.convolve(full, kernel, mode="valid")[::DECIMATION]
    lo, hi = max(1, MIN_LAG // DECIMATION), max_lag // DECIMATION
    scores = [(_correlation(low[:lag], low[lag:2 * lag]), lag) for lag in range(lo, hi + 1)
              if 2 * lag <= len(low)]
    if not scores:
        return MIN_LAG, -1.0
    top = max(corr for corr, _ in scores)
    coarse = min(lag for corr, lag in scores if corr >= top - 0.02) * DECIMATION
    best_lag, best_corr = coarse, -1.0
    for lag in range(max(MIN_LAG, coarse - DECIMATION), min(max_lag, coarse + DECIMATION) + 1):
        corr = _correlation(full[:lag], full[lag:2 * lag])
        if corr > best_corr:
            best_lag, best_corr = lag, corr
    return best_lag, best_corr


def is_silent(x: np.ndarray) -> bool:
    x = np.asarray(x, dtype=np.float64)
    return not len(x) or float(np.sqrt(np.mean(x ** 2))) < SILENCE_RMS


def _period(x: np.ndarray, max_lag: int, voiced: bool) -> int:
    """How many samples to remove or repeat at the start of `x`, or 0 where a change would be
    heard: up to `max_lag` (and half of `x`) where it is silent; one pitch period where it is
    voiced and `voiced` allows it."""
    max_lag = min(max_lag, len(x) // 2)
    if max_lag < MIN_LAG:
        return 0
    if is_silent(x[: 2 * max_lag]):
        return max_lag
    if not voiced:
        return 0
    lag, corr = _best_lag(x, min(MAX_LAG, max_lag))
    return lag if corr >= CORRELATION_THRESHOLD else 0


def _crossfade(fade_out: np.ndarray, fade_in: np.ndarray) -> np.ndarray:
    ramp = (np.arange(len(fade_out)) + 0.5) / len(fade_out)
    mixed = fade_out.astype(np.float64) * (1.0 - ramp) + fade_in.astype(np.float64) * ramp
    return np.clip(np.round(mixed), -32768, 32767).astype(np.int16)


def accelerate(x: np.ndarray, max_remove: int = MAX_LAG, voiced: bool = True) -> np.ndarray | None:
    """`x` shorter by one pitch period (or by up to `max_remove` samples of silence), or None
    when nothing can go unheard. The first sample stays the first (continuous with what already
    played): x[:L] fades into x[L:2L], and x[2L:] follows unchanged."""
    lag = _period(x, max_remove, voiced)
    if not lag:
        return None
    return np.concatenate([_crossfade(x[:lag], x[lag:2 * lag]), x[2 * lag:]])


def cut(x: np.ndarray, count: int) -> np.ndarray | None:
    """`x` shorter by `count` samples whatever it holds: x[:count] fades into x[count:2*count]
    (the last resort for audio that is neither silent nor periodic)."""
    count = min(count, len(x) // 2)
    if count <= 0:
        return None
    return np.concatenate([_crossfade(x[:count], x[count:2 * count]), x[2 * count:]])
