"""Objective listening-quality scores of what a path delivered against the speech that went in.

- PESQ (ITU-T P.862) through the `pesq` package: wide-band (P.862.2, 16 kHz) for Opus paths,
  narrow-band (P.862.1 mapping, 8 kHz) for telephone (G.711) paths. MOS-LQO, 1..4.64 (WB) / 4.55.
- ViSQOL v3 (`visqol-python`, audio mode, 48 kHz): a full-band score, so what Opus keeps above
  8 kHz counts too. MOS-LQO 1..~4.75. It takes a few seconds per file; optional.

Both are full-reference: the degraded signal is first aligned to the reference by
cross-correlation (the path's delay is not a quality defect) and cut to the reference's length.
PESQ re-aligns per utterance itself, so delay changes within a call cost only what they do to the
audio. The scorers are imported on use: they are benchmark and test dependencies, not the
engine's.
"""
from __future__ import annotations

import numpy as np

from mixer.sim.speech import RATE, resample

MAX_DELAY_S = 2.0


def delay_samples(reference: np.ndarray, degraded: np.ndarray, rate: int = RATE,
                  max_delay_s: float = MAX_DELAY_S) -> int:
    """How many samples later the reference appears in `degraded` (cross-correlation of 4 kHz
    envelopes, refined at full rate)."""
    ref = np.asarray(reference, dtype=np.float64)
    deg = np.asarray(degraded, dtype=np.float64)
    step = max(1, rate // 8000)
    r, d = ref[::step], deg[::step]
    n = 1 << int(np.ceil(np.log2(len(r) + len(d))))
    corr = np.fft.irfft(np.fft.rfft(d, n) * np.conj(np.fft.rfft(r, n)), n)
    limit = int(max_delay_s * rate / step)
    coarse = int(np.argmax(corr[:limit])) * step
    # refine within +-step at full rate on a 2 s window around the loudest part
    best, best_value = coarse, -np.inf
    centre = int(np.argmax(np.abs(ref)))
    lo, hi = max(0, centre - rate), min(len(ref), centre + rate)
    for lag in range(max(0, coarse - step), coarse + step + 1):
        if lag + hi > len(deg):
            break
        value = float(np.dot(ref[lo:hi], deg[lo + lag:hi + lag]))
        if value > best_value:
            best, best_value = lag, value
    return best


def aligned(reference: np.ndarray, degraded: np.ndarray, rate: int = RATE) -> np.ndarray:
    """`degraded` shifted by its delay and cut (or zero-padded) to the reference's length."""
    lag = delay_samples(reference, degraded, rate)
    out = np.zeros(len(reference), dtype=np.float64)
    part = np.asarray(degraded[lag:lag + len(reference)], dtype=np.float64)
    out[:len(part)] = part
    return out


def _floats(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(np.float64) / 32768.0 if x.dtype == np.int16 else x.astype(np.float64)


def pesq_score(reference: np.ndarray, degraded: np.ndarray, band: str = "wb",
               rate: int = RATE) -> float:
    """PESQ MOS-LQO of `degraded` (any delay) against `reference`, both at `rate`."""
    from pesq import pesq

    ref = _floats(reference)
    deg = aligned(ref, _floats(degraded), rate)
    target = 16000 if band == "wb" else 8000
    return float(pesq(target, resample(ref, rate, target), resample(deg, rate, target), band))


_visqol = None


def visqol_score(reference: np.ndarray, degraded: np.ndarray, rate: int = RATE) -> float | None:
    """ViSQOL v3 audio-mode MOS-LQO at 48 kHz, or None when visqol-python is not installed."""
    global _visqol
    try:
        from visqol import VisqolApi
    except ImportError:
        return None
    if _visqol is None:
        _visqol = VisqolApi()
        _visqol.create(mode="audio")
    ref = _floats(reference)
    deg = aligned(ref, _floats(degraded), rate)
    if rate != 48000:
        ref, deg = resample(ref, rate, 48000), resample(deg, rate, 48000)
    return float(_visqol.measure_from_arrays(ref, deg, 48000).moslqo)
