"""The in-band DTMF detector against ITU-T Q.24's reception checks: every key, frequency
tolerance, twist, level, minimum tone duration and pause (at every alignment to the detector's
blocks), interruptions, and talk-off (noise, chords, single tones)."""
from __future__ import annotations

import numpy as np
import pytest

from mixer import _g711
from mixer._dtmf_detect import KEYS, DtmfDetector, dtmf_tone

RATE = 8000
LOW = (697, 770, 852, 941)
HIGH = (1209, 1336, 1477, 1633)


def silence(ms: float) -> np.ndarray:
    return np.zeros(int(ms * RATE / 1000), dtype=np.int16)


def tone(key: str, ms: float, **kw) -> np.ndarray:
    return dtmf_tone(key, int(ms * RATE / 1000), **kw)


def detect(*parts: np.ndarray, **kw) -> str:
    detector = DtmfDetector(**kw)
    return detector.feed(np.ascontiguousarray(np.concatenate(parts)))


def test_every_key_through_mu_law_and_a_law():
    signal = np.concatenate([np.concatenate([tone(k, 50), silence(50)]) for k in KEYS])
    assert DtmfDetector().feed_g711(_g711.ulaw_encode(signal)) == KEYS
    assert DtmfDetector().feed_g711(_g711.alaw_encode(signal), True) == KEYS


@pytest.mark.parametrize("key", list(KEYS))
def test_frequency_tolerance(key):
    """Q.24: operate within +/-(1.5 % + 2 Hz); do not operate beyond +/-3.5 %."""
    index = KEYS.index(key)
    low, high = LOW[index // 4], HIGH[index % 4]
    for sign_low in (-1, 1):
        for sign_high in (-1, 1):
            ok = dict(low_hz=low * (1 + sign_low * 0.015) + sign_low * 2,
                      high_hz=high * (1 + sign_high * 0.015) + sign_high * 2)
            assert detect(silence(20), tone(key, 60, **ok), silence(60)) == key, ok
            off_low = dict(low_hz=low * (1 + sign_low * 0.035), high_hz=high)
            off_high = dict(low_hz=low, high_hz=high * (1 + sign_high * 0.035))
            assert detect(tone(key, 60, **off_low), silence(60)) == "", off_low
            assert detect(tone(key, 60, **off_high), silence(60)) == "", off_high


def test_twist():
    """High group up to 8 dB above the low group and up to 4 dB below it."""
    assert detect(tone("5", 60, twist_db=6), silence(40)) == "5"
    assert detect(tone("5", 60, twist_db=10), silence(40)) == ""
    assert detect(tone("5", 60, twist_db=-2), silence(40)) == "5"
    assert detect(tone("5", 60, twist_db=-7), silence(40)) == ""


def test_level():
    assert detect(tone("8", 60, level_dbm0=-25, twist_db=0), silence(40)) == "8"
    assert detect(tone("8", 60, level_dbm0=-36, twist_db=0), silence(40)) == ""
    assert detect(tone("8", 60, level_dbm0=-2, twist_db=0), silence(40)) == "8"   # near overload


@pytest.mark.parametrize("offset", range(0, 102, 7))
def test_duration_40ms_operates_and_20ms_does_not(offset):
    assert detect(silence(offset / 8), tone("7", 40), silence(60)) == "7"
    assert detect(silence(offset / 8), tone("7", 20), silence(60)) == ""


@pytest.mark.parametrize("offset", range(0, 102, 7))
def test_pause_of_40ms_separates_and_interruption_of_10ms_does_not(offset):
    assert detect(silence(offset / 8), tone("3", 50), silence(40), tone("3", 50), silence(60)) == "33"
    assert detect(silence(offset / 8), tone("3", 50), silence(10), tone("3", 50), silence(60)) == "3"


def test_a_held_key_is_one_digit_and_a_new_key_after_a_pause_is_another():
    assert detect(tone("9", 1500), silence(50), tone("0", 60), silence(50)) == "90"


def test_talk_off_noise_chords_and_single_tones():
    rng = np.random.default_rng(7)
    noise = (rng.normal(0, 6000, RATE * 2)).astype(np.int16)
    assert detect(noise) == ""
    t = np.arange(RATE) / RATE
    single = (8000 * np.sin(2 * np.pi * 770 * t)).astype(np.int16)
    assert detect(single) == ""
    chord = (5000 * (np.sin(2 * np.pi * 697 * t) + np.sin(2 * np.pi * 1209 * t)
                     + np.sin(2 * np.pi * 1336 * t))).astype(np.int16)
    assert detect(chord) == ""
    # a voiced sound: harmonics of 120 Hz, some near DTMF frequencies
    voiced = sum((3000 / k) * np.sin(2 * np.pi * 120 * k * t) for k in range(1, 30)).astype(np.int16)
    assert detect(voiced) == ""


def test_detected_through_moderate_noise():
    rng = np.random.default_rng(3)
    signal = np.concatenate([silence(30), tone("#", 60, level_dbm0=-10), silence(60)])
    noisy = (signal + rng.normal(0, 300, len(signal))).clip(-32768, 32767).astype(np.int16)
    assert detect(noisy) == "#"


def test_stats_count_rejections():
    detector = DtmfDetector()
    detector.feed(tone("1", 60, twist_db=12))
    stats = detector.stats()
    assert stats["rejected"]["twist"] > 0 and stats["digits"] == 0
