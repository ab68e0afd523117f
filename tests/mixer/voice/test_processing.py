"""Voice processing units on synthetic 48 kHz frames: RNNoise lowers noise, automatic gain levels a
quiet and a loud talker and holds its gain in pauses, a personal mix weights talkers."""
from __future__ import annotations

import numpy as np
import pytest

from mixer.voice.agc import AutoGain
from mixer.voice.denoise import NoiseSuppressor
from mixer.voice.personal_mix import PersonalMix

RATE = 48000
FRAME = 960


def frames_of(signal: np.ndarray) -> list[np.ndarray]:
    return [signal[i:i + FRAME].copy() for i in range(0, len(signal) - FRAME + 1, FRAME)]


def rms_dbfs(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return 10 * np.log10(np.mean(x * x) / 32768 ** 2 + 1e-15)


def voiced(seconds: float, amplitude: float, seed: int = 0) -> np.ndarray:
    """A speech-like signal: a 140 Hz pulse train's harmonics, syllables of 200 ms on/off."""
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    gate = (np.floor(t / 0.2) % 2 == 0).astype(float)
    x = x * gate
    return (x / np.abs(x).max() * amplitude * 32767).astype(np.int16)


def test_rnnoise_lowers_white_noise_by_far():
    noise = np.random.default_rng(3).normal(0, 32768 * 10 ** (-35 / 20), RATE * 2).astype(np.int16)
    suppressor = NoiseSuppressor()
    frames = frames_of(noise)
    for f in frames:
        suppressor.process(f)  # in place
    after = np.concatenate(frames[25:])  # after the first half second
    assert rms_dbfs(noise) - rms_dbfs(after) > 15, (rms_dbfs(noise), rms_dbfs(after))
    assert suppressor.stats()["frames"] == len(frames)


def test_rnnoise_reset_starts_without_stale_audio():
    suppressor = NoiseSuppressor()
    loud = voiced(0.2, 0.5)
    for f in frames_of(loud):
        suppressor.process(f)
    suppressor.reset()
    silence = np.zeros(FRAME, dtype=np.int16)
    suppressor.process(silence)
    assert np.abs(silence).max() == 0  # nothing of the loud audio before the reset comes out
    assert suppressor.stats()["resets"] == 1


def test_rnnoise_refuses_frames_that_are_not_whole_10ms_blocks():
    from mixer.voice import VoiceProcessingError
    with pytest.raises(VoiceProcessingError):
        NoiseSuppressor(500)


@pytest.mark.parametrize("amplitude", [0.05, 0.5, 0.9])
def test_auto_gain_brings_quiet_and_loud_talkers_to_the_target(amplitude):
    agc = AutoGain(target_dbfs=-22.0, max_gain_db=24.0)
    frames = frames_of(voiced(8.0, amplitude))
    for f in frames:
        agc.process(f)
    tail = [f for f in frames[-100:] if rms_dbfs(f) > -60]  # the last 2 s, speech frames only
    level = float(np.mean([rms_dbfs(f) for f in tail]))
    assert abs(level - (-22.0)) < 3.0, (amplitude, level, agc.stats())


def test_auto_gain_is_capped_and_holds_in_pauses():
    agc = AutoGain(target_dbfs=-22.0, max_gain_db=10.0)
    for f in frames_of(voiced(6.0, 0.01)):  # ~-44 dBFS: wants +22 dB, gets the cap
        agc.process(f)
    assert agc.stats()["gain_db"] == pytest.approx(10.0, abs=0.1)
    gain = agc.gain_db
    for f in frames_of(np.zeros(RATE, dtype=np.int16)):
        agc.process(f)
    assert agc.gain_db == gain  # a pause changes nothing


def test_auto_gain_never_clips_a_boosted_peak():
    agc = AutoGain(target_dbfs=-10.0, max_gain_db=30.0)
    frames = frames_of(voiced(4.0, 0.05))
    frames += frames_of(voiced(0.4, 0.9))   # then a shout, before the gain can fall
    for f in frames:
        agc.process(f)
    assert max(int(np.abs(f.astype(np.int32)).max()) for f in frames) <= 32767 * 10 ** (-1 / 20) + 1
    assert agc.stats()["limited_frames"] > 0


def test_personal_mix_weights_talkers_and_leaves_out_the_listener():
    stack = np.array([[8000] * FRAME, [2000] * FRAME, [400] * FRAME], dtype=np.int16)
    personal = PersonalMix()
    assert personal.weights(["a", "b", None], None) is None  # no gains: the shared mix
    personal.set("a", -6.0206)
    out = np.zeros(FRAME, dtype=np.int16)
    weights = personal.weights(["a", "b", None], None)
    assert personal.mix(stack, weights, out)[0] == 4000 + 2000 + 400
    weights = personal.weights(["a", "b", None], 1)     # the listener is talker b: mix-minus
    assert personal.mix(stack, weights, out)[0] == 4000 + 400
    personal.set("a", 20.0)
    weights = personal.weights(["a", "b", None], None)
    assert personal.mix(stack, weights, out)[0] == 32767  # saturates like the shared mix
    personal.forget("a")
    assert not personal and personal.weights(["a", "b"], None) is None
