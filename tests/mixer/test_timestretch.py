"""Time-scale modification: one pitch period removed where speech is periodic, silence where it is
silent, nothing where a change would be heard."""
from __future__ import annotations

import numpy as np

from mixer.timestretch import MAX_LAG, MIN_LAG, accelerate, cut, is_silent

RATE = 48000


def voiced(f0: float = 150.0, seconds: float = 0.04, amplitude: float = 8000.0) -> np.ndarray:
    """A periodic, speech-like signal: a fundamental and a few harmonics."""
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3, 4))
    return (x / np.max(np.abs(x)) * amplitude).astype(np.int16)


def test_accelerate_removes_one_pitch_period_of_a_voiced_signal():
    x = voiced(150.0)
    y = accelerate(x, MAX_LAG)
    assert y is not None
    removed = len(x) - len(y)
    assert abs(removed - RATE / 150.0) <= 2, removed  # 320 samples: one period, not two
    assert abs(int(y[0]) - int(x[0])) < 50  # continuous with what already played
    assert np.array_equal(y[-100:], x[-100:])  # the rest follows unchanged


def test_the_result_stays_continuous_at_both_seams():
    x = voiced(120.0, 0.05)
    y = accelerate(x, MAX_LAG)
    steps = np.abs(np.diff(y.astype(np.int32)))
    assert steps.max() <= np.abs(np.diff(x.astype(np.int32))).max() * 1.5


def test_noise_is_not_touched_unless_silent():
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(1920) * 3000).astype(np.int16)
    assert accelerate(noise, MAX_LAG) is None
    assert accelerate(noise, MAX_LAG, voiced=False) is None


def test_silence_goes_by_the_requested_amount_even_without_pitch():
    quiet = (np.random.default_rng(2).standard_normal(1920) * 20).astype(np.int16)  # ~ -64 dBov
    assert is_silent(quiet)
    y = accelerate(quiet, 960, voiced=False)
    assert y is not None and len(y) == 960


def test_voiced_speech_is_left_alone_when_only_pauses_may_change():
    assert accelerate(voiced(), MAX_LAG, voiced=False) is None


def test_short_buffers_and_tiny_limits_decline():
    assert accelerate(voiced(seconds=0.004), MAX_LAG) is None
    assert accelerate(voiced(), MIN_LAG - 1) is None


def test_cut_removes_exactly_what_it_is_asked_with_a_crossfade():
    x = voiced(200.0)
    y = cut(x, 500)
    assert len(y) == len(x) - 500 and abs(int(y[0]) - int(x[0])) < 50
    assert cut(x, 0) is None
