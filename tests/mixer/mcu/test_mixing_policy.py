"""The MCU's mixing policy: every talker is mixed while no more than `max_speakers` talk at once,
and a mixed voice keeps its level whoever else joins. Measured in what each participant decoded
(real UDP, real Opus, real SRTP), never from internal flags."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import uvloop

from mixer.analysis import TEST_TONES_HZ, tone, tone_levels_db
from mixer.codec import MIX_RATE
from mixer.engine.engine import Engine
from mixer.settings import EngineSettings
from mixer.sim.call import join
from mixer.sim.participant import SimulatedParticipant

AMPLITUDE = 0.08  # about -22 dBFS each: six at once still sum below full scale
WINDOW_S = 0.1
# A voice that is dropped from the mix, or flaps in and out of it, moves by 25-60 dB. What a loaded
# machine adds (a frame concealed after a late tick) dips a 100 ms window by a few dB.
# The mixes are encoded with the engine's default encoder policy: FEC only for receivers that report
# loss (with the old fixed 10 % loss hint at 32 kb/s the encoder itself dipped steady tones by 3 dB).
CODEC: dict = {}
PRESENT_DB = 10.0   # no window of a mixed voice lower than this below its expected level
STEADY_DB = 1.5     # most windows (STEADY_SHARE) within this of the voice's median level
STEADY_SHARE = 0.8


def assert_steady(levels: np.ndarray, expected_db: float, what: str) -> None:
    median = float(np.median(levels))
    steady = np.mean(np.abs(levels - median) <= STEADY_DB)
    assert abs(median - expected_db) < 3.0, f"{what}: heard at {median:.1f} dBFS, sent at {expected_db:.1f}"
    assert levels.min() > expected_db - PRESENT_DB, f"{what} dropped out: {np.round(levels, 1)}"
    assert steady >= STEADY_SHARE, f"{what} not steady: {np.round(levels, 1)}"


def staggered(freq: float, start_s: float, seconds: float) -> np.ndarray:
    """Silence until `start_s`, then a steady tone until `seconds`."""
    signal = tone(freq, seconds, amplitude=AMPLITUDE)
    signal[:int(start_s * MIX_RATE)] = 0
    return signal


async def call(signals: list[np.ndarray], settings: EngineSettings, srtp: bool) -> tuple[list, dict]:
    engine = Engine(settings)
    engine.start()
    conference = engine.create_conference("mcu")["id"]
    people = [SimulatedParticipant(f"p{i + 1}", TEST_TONES_HZ[i], signal, srtp=srtp)
              for i, signal in enumerate(signals)]
    for person in people:
        await join(engine, conference, person)
    start = asyncio.get_running_loop().time() + 0.05
    for person in people:
        person.start(start)
    await asyncio.wait_for(asyncio.gather(*(p.finished.wait() for p in people)), 30)
    await asyncio.sleep(0.2)
    stats = engine.get_conference(conference)["stats"]
    engine.stop()
    for person in people:
        person.close()
    return people, stats


def levels_db(listener: SimulatedParticipant, freq: float, from_s: float, to_s: float) -> np.ndarray:
    """The tone's level (dBFS, Hann-windowed FFT) in every WINDOW_S window of what `listener`
    decoded, between two points of its received stream."""
    pcm, _ = listener.heard_audio()
    step = int(WINDOW_S * MIX_RATE)
    return np.array([tone_levels_db(pcm[a:a + step], [freq])[freq]
                     for a in range(int(from_s * MIX_RATE), min(int(to_s * MIX_RATE), len(pcm)) - step, step)])


@pytest.mark.parametrize("srtp", [False, True], ids=["rtp", "srtp"])
def test_five_people_talking_at_once_are_all_heard_by_everyone_at_a_steady_level(srtp):
    seconds = 4.0
    signals = [tone(TEST_TONES_HZ[i], seconds, amplitude=AMPLITUDE) for i in range(5)]
    people, stats = uvloop.run(call(signals, EngineSettings(media_ports="43000-43499", jitter_min_ms=60, **CODEC), srtp))
    expected_db = 20 * np.log10(AMPLITUDE)
    for listener in people:
        for talker in people:
            levels = levels_db(listener, talker.freq_hz, 0.8, seconds - 0.3)
            if talker is listener:
                assert levels.max() < expected_db - 20, f"{listener.name} heard itself"
                continue
            assert_steady(levels, expected_db, f"{talker.name} at {listener.name}")
    assert len(stats["speakers"]) == 5


def test_a_mixed_voice_keeps_its_level_as_others_join_up_to_max_speakers():
    """Talkers join one by one, 0.5 s apart, up to the default cap: the first talker's level at
    every listener does not move as the others come in."""
    settings = EngineSettings(media_ports="43500-43999", jitter_min_ms=60, **CODEC)
    count, seconds = settings.max_speakers, 1.0 + 0.5 * settings.max_speakers
    signals = [staggered(TEST_TONES_HZ[i], 0.5 * i, seconds) for i in range(count)]
    people, _ = uvloop.run(call(signals, settings, srtp=False))
    first = people[0]
    for listener in people[1:]:
        levels = levels_db(listener, first.freq_hz, 0.6, seconds - 0.3)
        assert_steady(levels, 20 * np.log10(AMPLITUDE), f"{first.name} at {listener.name} as others joined")


def test_above_max_speakers_the_loudest_are_kept_without_flapping():
    """More talkers than the cap: the loudest `max_speakers` are mixed and stay mixed (the quiet
    ones do not come and go), as in a large conference."""
    settings = EngineSettings(media_ports="43500-43999", max_speakers=3, jitter_min_ms=60, **CODEC)
    seconds = 3.0
    amplitudes = [0.1, 0.09, 0.08, 0.02, 0.015]
    signals = [tone(TEST_TONES_HZ[i], seconds, amplitude=a) for i, a in enumerate(amplitudes)]
    people, stats = uvloop.run(call(signals, settings, srtp=False))
    listener = people[4]
    for talker, amplitude in zip(people[:3], amplitudes):
        levels = levels_db(listener, talker.freq_hz, 0.8, seconds - 0.3)
        assert_steady(levels, 20 * np.log10(amplitude), f"{talker.name} at {listener.name}")
    quiet = levels_db(listener, people[3].freq_hz, 0.6, seconds - 0.3)
    assert quiet.max() < 20 * np.log10(amplitudes[3]) - 20  # not mixed at all, not flapping in
    assert len(stats["speakers"]) == 3
