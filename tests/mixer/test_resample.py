"""Streaming integer-ratio resampling (8 kHz telephony <-> 48 kHz mix rate)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer._resample import Resampler


def tone(freq: float, rate: int, n: int, amp: float = 10000.0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(n) / rate
    return np.round(amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.int16)


def in_chunks(r: Resampler, x: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([r.process(np.ascontiguousarray(x[i:i + size]))
                           for i in range(0, len(x), size)])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def peak_frequency(x: np.ndarray, rate: int) -> float:
    x = x.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def tone_amplitude(x: np.ndarray, rate: int, freq: float) -> float:
    """Amplitude of the `freq` component (x spans a whole number of its periods)."""
    x = x.astype(np.float64)
    t = np.arange(len(x)) / rate
    return float(2 * abs(np.dot(x, np.exp(-2j * np.pi * freq * t))) / len(x))


# --------------------------------------------------------------------------------------------------
# Construction and buffer contracts
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rates,factor", [((8000, 48000), 6), ((48000, 8000), 6),
                                          ((16000, 48000), 3), ((48000, 16000), 3),
                                          ((8000, 16000), 2)])
def test_factor_and_output_length(rates, factor):
    r = Resampler(*rates)
    assert (r.in_rate, r.out_rate, r.factor) == (*rates, factor)
    up = rates[1] > rates[0]
    n_in = rates[0] // 50  # 20 ms
    assert r.output_length(n_in) == rates[1] // 50
    n_out = n_in * factor if up else n_in // factor
    assert len(r.process(np.zeros(n_in, dtype=np.int16))) == n_out


def test_rates_must_have_an_integer_ratio():
    for rates in ((8000, 44100), (0, 48000), (48000, 0), (-8000, 48000)):
        with pytest.raises(ValueError):
            Resampler(*rates)


def test_downsampling_input_must_be_a_multiple_of_the_factor():
    with pytest.raises(ValueError):
        Resampler(48000, 8000).process(np.zeros(961, dtype=np.int16))


def test_process_into_checks_the_output_size_and_writes_only_n_out():
    r = Resampler(8000, 48000)
    with pytest.raises(ValueError):
        r.process_into(np.zeros(160, dtype=np.int16), np.zeros(959, dtype=np.int16))
    backing = np.full(1000, 777, dtype=np.int16)
    assert r.process_into(tone(1000, 8000, 160), backing) == 960
    assert np.all(backing[960:] == 777)


def test_empty_input():
    assert len(Resampler(8000, 48000).process(np.zeros(0, dtype=np.int16))) == 0
    assert len(Resampler(48000, 8000).process(np.zeros(0, dtype=np.int16))) == 0


@pytest.mark.parametrize("rates", [(8000, 48000), (48000, 8000)])
def test_dc_passes_at_unity_gain(rates):
    r = Resampler(*rates)
    out = r.process(np.full(rates[0] // 10, 10000, dtype=np.int16))
    assert np.all(out[len(out) // 2:] == 10000)
    out = r.process(np.full(rates[0] // 10, -32768, dtype=np.int16))
    # full scale: within one LSB (float32 polyphase sums), and never wrapped
    assert np.all(out[len(out) // 2:] <= -32767)


def test_silence_stays_silent():
    r = Resampler(8000, 48000)
    assert not in_chunks(r, np.zeros(1600, dtype=np.int16), 160).any()


# --------------------------------------------------------------------------------------------------
# Signal quality
# --------------------------------------------------------------------------------------------------

def test_1khz_round_trip_keeps_amplitude_and_frequency():
    x = tone(1000, 8000, 8000)  # 1 s, streamed as 50 frames of 20 ms each way
    up, down = Resampler(8000, 48000), Resampler(48000, 8000)
    y48 = in_chunks(up, x, 160)
    y8 = in_chunks(down, y48, 960)
    assert len(y48) == 48000 and len(y8) == 8000
    # skip the filters' start-up (well under 10 ms) and compare a whole number of periods
    assert tone_amplitude(y48[4800:], 48000, 1000) == pytest.approx(10000, rel=0.01)
    assert tone_amplitude(y8[800:], 8000, 1000) == pytest.approx(10000, rel=0.01)
    assert rms(y8[800:]) == pytest.approx(10000 / np.sqrt(2), rel=0.01)
    assert peak_frequency(y48[4800:], 48000) == pytest.approx(1000, abs=5)
    assert peak_frequency(y8[800:], 8000) == pytest.approx(1000, abs=5)
    # the round trip is a pure delay: re-align and compare sample by sample
    ref = x[800:7200].astype(np.float64)
    lags = range(0, 60)
    errors = [np.max(np.abs(y8[800 + lag:7200 + lag] - ref)) for lag in lags]
    best = int(np.argmin(errors))
    assert errors[best] < 0.01 * 10000


def test_upsampled_tone_is_clean():
    y = in_chunks(Resampler(8000, 48000), tone(1000, 8000, 8000), 160)[4800:].astype(np.float64)
    t = np.arange(len(y)) / 48000
    basis = np.stack([np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)], axis=1)
    fit, *_ = np.linalg.lstsq(basis, y, rcond=None)
    residual = y - basis @ fit
    # images of 1 kHz at 7, 9, 15, 17 kHz... and everything else: > 40 dB below the tone
    assert rms(residual) < 0.01 * rms(y)


def test_no_clicks_at_frame_boundaries():
    amp, freq = 12000, 1000
    y = in_chunks(Resampler(8000, 48000), tone(freq, 8000, 8000, amp=amp), 160)[960:]
    steps = np.abs(np.diff(y.astype(np.int64)))
    # the largest sample-to-sample step of the continuous tone at 48 kHz, plus rounding
    continuous = amp * 2 * np.pi * freq / 48000
    assert steps.max() <= continuous * 1.01 + 2
    boundaries = steps[959::960]  # from the last sample of a frame to the first of the next
    assert boundaries.max() <= continuous * 1.01 + 2
    y8 = in_chunks(Resampler(48000, 8000), tone(freq, 48000, 48000, amp=amp), 960)[160:]
    continuous8 = amp * 2 * np.sin(np.pi * freq / 8000)
    assert np.abs(np.diff(y8.astype(np.int64))).max() <= continuous8 * 1.01 + 2


@pytest.mark.parametrize("freq", [4000, 4400, 5000, 6000, 10000, 20000])
def test_downsampling_rejects_what_would_alias(freq):
    # Everything above 4 kHz folds back into the telephone band when decimated to 8 kHz.
    x = tone(freq, 48000, 48000, amp=20000)
    y = in_chunks(Resampler(48000, 8000), x, 960)[400:]
    attenuation_db = 20 * np.log10(max(rms(y), 1e-9) / (20000 / np.sqrt(2)))
    assert attenuation_db < -55  # -59 dB at 4 kHz, more above


@pytest.mark.parametrize("freq", [300, 1000, 2000, 2800, 3400])
def test_pass_band_is_flat(freq):
    # the whole telephone band (300..3400 Hz) passes within 0.1 dB in each direction
    x8 = tone(freq, 8000, 8000)
    y48 = Resampler(8000, 48000).process(x8)[4800:]
    x48 = tone(freq, 48000, 48000)
    y8 = Resampler(48000, 8000).process(x48)[800:]
    for y, rate in ((y48, 48000), (y8, 8000)):
        gain_db = 20 * np.log10(tone_amplitude(y, rate, freq) / 10000)
        assert abs(gain_db) < 0.1


def test_full_scale_square_saturates_without_wrapping():
    # Gibbs overshoot of a full-scale square must clip at the rails, not wrap to the other sign.
    blocks = 40
    polarity = np.where(np.arange(blocks) % 2 == 0, 1, -1)
    square8 = np.repeat(np.where(polarity > 0, 32767, -32768), 8).astype(np.int16)
    up = Resampler(8000, 48000)
    y = up.process(square8)
    # the middle of each 48-sample block, after the filter's linear-phase delay
    centres = np.arange(blocks - 4) * 48 + 24 + round(up.group_delay)
    assert np.all(np.sign(y[centres]) == polarity[:blocks - 4])
    assert y.max() == 32767 and y.min() == -32768
    square48 = np.repeat(np.where(polarity > 0, 32767, -32768), 48).astype(np.int16)
    down = Resampler(48000, 8000)
    z = down.process(square48)
    centres8 = np.arange(blocks - 4) * 8 + 4 + round(down.group_delay)
    assert np.all(np.sign(z[centres8]) == polarity[:blocks - 4])
    assert z.max() == 32767 and z.min() == -32768


# --------------------------------------------------------------------------------------------------
# State across calls
# --------------------------------------------------------------------------------------------------

SIGNAL8 = (tone(440, 8000, 4800, amp=8000) + tone(2500, 8000, 4800, amp=5000, phase=1.0)
           + np.random.default_rng(7).integers(-2000, 2000, 4800).astype(np.int16))
SIGNAL48 = (tone(440, 48000, 28800, amp=8000) + tone(7000, 48000, 28800, amp=5000, phase=1.0)
            + np.random.default_rng(8).integers(-2000, 2000, 28800).astype(np.int16))


@pytest.mark.parametrize("size", [1, 7, 80, 160, 480, 4800])
def test_upsampling_in_any_chunks_equals_one_call(size):
    whole = Resampler(8000, 48000).process(SIGNAL8)
    np.testing.assert_array_equal(in_chunks(Resampler(8000, 48000), SIGNAL8, size), whole)


@pytest.mark.parametrize("size", [6, 96, 480, 960, 1920, 28800])
def test_downsampling_in_any_chunks_of_the_factor_equals_one_call(size):
    whole = Resampler(48000, 8000).process(SIGNAL48)
    np.testing.assert_array_equal(in_chunks(Resampler(48000, 8000), SIGNAL48, size), whole)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=30))
def test_arbitrary_chunking_is_seamless(sizes):
    cuts = np.cumsum(sizes)
    cuts = cuts[cuts < len(SIGNAL8)]
    up = Resampler(8000, 48000)
    pieces8 = np.split(SIGNAL8, cuts)
    np.testing.assert_array_equal(
        np.concatenate([up.process(np.ascontiguousarray(p)) for p in pieces8]),
        Resampler(8000, 48000).process(SIGNAL8))
    down = Resampler(48000, 8000)
    pieces48 = np.split(SIGNAL48, cuts * 6)
    np.testing.assert_array_equal(
        np.concatenate([down.process(np.ascontiguousarray(p)) for p in pieces48]),
        Resampler(48000, 8000).process(SIGNAL48))


@pytest.mark.parametrize("rates", [(8000, 48000), (48000, 8000)])
def test_reset_forgets_history(rates):
    signal = SIGNAL8 if rates[0] == 8000 else SIGNAL48
    r = Resampler(*rates)
    r.process(signal)
    r.reset()
    np.testing.assert_array_equal(r.process(signal[:960]), Resampler(*rates).process(signal[:960]))
