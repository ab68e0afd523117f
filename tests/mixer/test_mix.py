"""The mix-minus kernel and RFC 6464 audio levels, against naive numpy references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mixer._rtp import AUDIO_LEVEL_SILENT
from mixer._mix import audio_level, mix_minus, mix_total

SAMPLES = 960


def saturate(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -32768, 32767).astype(np.int16)


def reference(frames: np.ndarray):
    acc = frames.astype(np.int32).sum(axis=0, dtype=np.int32)
    return saturate(acc), saturate(acc[None, :] - frames.astype(np.int32))


samples = st.one_of(st.integers(-32768, 32767), st.sampled_from([-32768, -32767, 32767, 0]))


@st.composite
def frame_sets(draw):
    n = draw(st.integers(0, 12))
    s = draw(st.integers(1, 48))
    if draw(st.booleans()):
        frames = draw(hnp.arrays(np.int16, (n, s), elements=samples))
    else:  # loud talkers: every sample at or near the rails, so sums saturate both ways
        frames = draw(hnp.arrays(np.int16, (n, s),
                                 elements=st.sampled_from([-32768, -32767, -20000, 20000, 32767])))
    return np.ascontiguousarray(frames)


@settings(max_examples=400, deadline=None)
@given(frame_sets())
def test_mix_minus_equals_the_naive_saturated_sums(frames):
    n, s = frames.shape
    total = np.full(s, 1234, dtype=np.int16)
    minus = np.full((n, s), 1234, dtype=np.int16)
    mix_minus(frames, total, minus)
    want_total, want_minus = reference(frames)
    np.testing.assert_array_equal(total, want_total)
    np.testing.assert_array_equal(minus, want_minus)


@settings(max_examples=300, deadline=None)
@given(frame_sets())
def test_mix_total_equals_the_naive_saturated_sum(frames):
    total = np.full(frames.shape[1], 1234, dtype=np.int16)
    mix_total(frames, total)
    np.testing.assert_array_equal(total, reference(frames)[0])


def test_mix_minus_of_one_talker_is_silence_for_them():
    rng = np.random.default_rng(1)
    frames = rng.integers(-32768, 32768, (1, SAMPLES)).astype(np.int16)
    total = np.empty(SAMPLES, dtype=np.int16)
    minus = np.empty((1, SAMPLES), dtype=np.int16)
    mix_minus(frames, total, minus)
    np.testing.assert_array_equal(total, frames[0])
    assert not minus.any()


def test_mix_of_nobody_is_silence():
    frames = np.zeros((0, SAMPLES), dtype=np.int16)
    total = np.full(SAMPLES, 99, dtype=np.int16)
    mix_minus(frames, total, np.zeros((0, SAMPLES), dtype=np.int16))
    assert not total.any()
    total[:] = 99
    mix_total(frames, total)
    assert not total.any()


def test_saturation_at_both_rails_with_twelve_talkers():
    frames = np.full((12, SAMPLES), 32767, dtype=np.int16)
    frames[:, ::2] = -32768
    total = np.empty(SAMPLES, dtype=np.int16)
    minus = np.empty((12, SAMPLES), dtype=np.int16)
    mix_minus(frames, total, minus)
    assert np.all(total[::2] == -32768) and np.all(total[1::2] == 32767)
    assert np.all(minus[:, ::2] == -32768) and np.all(minus[:, 1::2] == 32767)


def test_cancellation_is_exact_before_saturation():
    # the mix-minus is computed from the int32 sum, not from the already-clipped total
    frames = np.array([[30000], [30000], [-30000]], dtype=np.int16)
    total = np.empty(1, dtype=np.int16)
    minus = np.empty((3, 1), dtype=np.int16)
    mix_minus(frames, total, minus)
    assert total[0] == 30000
    assert minus[:, 0].tolist() == [0, 0, 32767]


def test_output_buffers_must_be_big_enough():
    frames = np.zeros((3, 10), dtype=np.int16)
    with pytest.raises(ValueError):
        mix_minus(frames, np.zeros(9, dtype=np.int16), np.zeros((3, 10), dtype=np.int16))
    with pytest.raises(ValueError):
        mix_minus(frames, np.zeros(10, dtype=np.int16), np.zeros((2, 10), dtype=np.int16))
    with pytest.raises(ValueError):
        mix_minus(frames, np.zeros(10, dtype=np.int16), np.zeros((3, 9), dtype=np.int16))
    with pytest.raises(ValueError):
        mix_total(frames, np.zeros(9, dtype=np.int16))


def test_larger_output_buffers_are_written_only_up_to_the_frame_length():
    frames = np.ones((2, 10), dtype=np.int16)
    total = np.full(12, -5, dtype=np.int16)
    minus = np.full((3, 12), -5, dtype=np.int16)
    mix_minus(frames, total, minus)
    assert total.tolist() == [2] * 10 + [-5, -5]
    assert minus[:2].tolist() == [[1] * 10 + [-5, -5]] * 2
    assert np.all(minus[2] == -5)


# --------------------------------------------------------------------------------------------------
# RFC 6464 audio level: -dBov of the RMS, 0 loudest .. 127 silent
# --------------------------------------------------------------------------------------------------

def sine(amplitude: float, n: int = SAMPLES, freq: float = 1000.0) -> np.ndarray:
    return np.round(amplitude * np.sin(2 * np.pi * freq * np.arange(n) / 48000)).astype(np.int16)


def test_silence_is_127():
    assert AUDIO_LEVEL_SILENT == 127
    assert audio_level(np.zeros(SAMPLES, dtype=np.int16)) == 127
    assert audio_level(np.zeros(0, dtype=np.int16)) == 127


def test_full_scale_square_is_0():
    square = np.full(SAMPLES, 32767, dtype=np.int16)
    square[::2] = -32768
    assert audio_level(square) == 0
    assert audio_level(np.full(SAMPLES, -32768, dtype=np.int16)) == 0


def test_full_scale_sine_is_3():
    assert audio_level(sine(32767)) == 3  # a sine's RMS is 3.01 dB below its peak


def test_minus_20_dbfs_sine_is_23():
    assert audio_level(sine(32768 * 10 ** (-20 / 20))) == 23


def test_quietest_levels():
    one = np.zeros(SAMPLES, dtype=np.int16)
    one[0] = 1
    # RMS sqrt(1/960): 20*log10(32768 / 0.0323) = 120.1 dBov
    assert audio_level(one) == 120
    assert audio_level(np.ones(SAMPLES, dtype=np.int16)) == 90  # 20*log10(32768) = 90.3


def test_level_is_monotonic_in_amplitude():
    amplitudes = np.unique(np.round(np.geomspace(1, 32767, 300)))
    levels = [audio_level(sine(a)) for a in amplitudes]
    assert levels == sorted(levels, reverse=True)
    assert levels[0] > 90 and levels[-1] == 3
    # every 10x of amplitude is 20 levels
    assert audio_level(sine(32767 / 10)) == 23
    assert audio_level(sine(32767 / 100)) == 43


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.int16, st.integers(1, 200), elements=samples))
def test_level_matches_the_formula(pcm):
    rms = np.sqrt(np.mean(pcm.astype(np.float64) ** 2))
    want = 127 if rms == 0 else int(min(127, max(0, round(-20 * np.log10(rms / 32768)))))
    got = audio_level(pcm)
    # allow the half-level rounding boundary to go either way
    on_boundary = rms and abs(-20 * np.log10(rms / 32768) % 1 - 0.5) < 1e-9
    assert abs(got - want) <= (1 if on_boundary else 0)
    assert 0 <= got <= 127
