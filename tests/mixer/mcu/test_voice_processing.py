"""Voice processing in a real MCU conference: noise suppression on a noisy ffmpeg talker, automatic
gain on a quiet and a loud talker, per-listener gains. Real UDP, real Opus; every check is a
measurement of what a listener decoded.

The noisy talker is espeak-ng speech with white noise added, sent by ffmpeg as Opus RTP into two
conferences of one engine at once: one leg with noise suppression on, one with it off; a listener
in each decodes the mix.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import wave

import numpy as np
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings, strategies as st

from mixer.analysis import tone_levels_db
from mixer.engine.engine import Engine, EngineError
from mixer.settings import EngineSettings
from mixer.sim.call import join
from mixer.sim.participant import SimulatedParticipant, talk_signal
from tests.mixer.mcu.test_ffmpeg_interop import (
    _ffmpeg_problem, gateway_offer, read_answer, release, reserve_port_pair, run_ffmpeg,
)

RATE = 48000
FRAME = 960
SENTENCE = ("The quick brown fox jumps over the lazy dog. Noise suppression keeps every word of "
            "this sentence while the hiss around it fades.")
SPEECH_PEAK_DBFS = -6.0
NOISE_DBFS = -35.0          # white noise RMS: SNR about 15 dB against the speech's active level
LEAD_S, TAIL_S = 1.5, 1.0   # noise alone before and after the speech
# What suppression must do, measured on the listener's decoded mix (RNNoise measures ~25-30 dB;
# docs/performance.md): the floor falls by at least this, and the loud speech frames' 300-3400 Hz
# energy stays within SPEECH_KEPT_DB of the unsuppressed mix.
FLOOR_DROP_DB = 15.0
SPEECH_KEPT_DB = 3.0


@pytest.fixture
def ffmpeg() -> str:
    problem = _ffmpeg_problem()
    if problem is not None:
        pytest.skip(problem)
    return shutil.which("ffmpeg")


@pytest.fixture
def espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng; scripts/setup.sh installs it)")
    return found


def read_wav(path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)


def write_wav(path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm.astype("<i2").tobytes())


def noisy_speech(espeak: str, ffmpeg: str, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """espeak-ng speech at 48 kHz with white noise added: (noisy int16, clean float)."""
    raw, speech48 = tmp_path / "speech.wav", tmp_path / "speech48.wav"
    subprocess.run([espeak, "-s", "160", "-w", str(raw), SENTENCE], check=True, timeout=30)
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(raw), "-ar",
                    str(RATE), "-ac", "1", str(speech48)], check=True, timeout=30)
    speech = read_wav(speech48)
    speech *= 32767 * 10 ** (SPEECH_PEAK_DBFS / 20) / np.abs(speech).max()
    clean = np.concatenate([np.zeros(int(LEAD_S * RATE)), speech, np.zeros(int(TAIL_S * RATE))])
    noise = np.random.default_rng(13).normal(0, 32768 * 10 ** (NOISE_DBFS / 20), len(clean))
    return np.clip(clean + noise, -32768, 32767).astype(np.int16), clean


def frame_levels(pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per 20 ms frame: power (dBFS) and the power in 300-3400 Hz (dBFS, Hann-windowed FFT)."""
    frames = pcm[:len(pcm) // FRAME * FRAME].astype(np.float64).reshape(-1, FRAME) / 32768
    power = np.mean(frames ** 2, axis=1)
    window = np.hanning(FRAME)
    spectrum = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2 * 2 / (FRAME * np.sum(window ** 2))
    freqs = np.fft.rfftfreq(FRAME, 1 / RATE)
    band = np.sum(spectrum[:, (freqs >= 300) & (freqs <= 3400)], axis=1)
    return power, band


def db(power: float) -> float:
    return float(10 * np.log10(power + 1e-15))


def floor_and_speech(pcm: np.ndarray) -> tuple[float, float]:
    """The noise floor (mean power of the quietest 20 % of frames: the pauses, where the leading
    and trailing noise alone is 15 % of the signal) and the speech-band power of the loudest 20 %
    (the vowels), in dBFS."""
    power, band = frame_levels(pcm[int(0.5 * RATE):])  # after the start-up
    order = np.argsort(power)
    quiet, loud = order[:len(order) // 5], order[-len(order) // 5:]
    return db(np.mean(power[quiet])), db(np.mean(band[loud]))


def test_noise_suppression_lowers_the_floor_of_a_noisy_ffmpeg_talker_and_keeps_the_speech(
        ffmpeg, espeak, tmp_path):
    noisy, _ = noisy_speech(espeak, ffmpeg, tmp_path)
    wav_path = tmp_path / "noisy.wav"
    write_wav(wav_path, noisy)
    seconds = len(noisy) / RATE

    async def scenario():
        engine = Engine(EngineSettings(media_ports="44500-44599", jitter_min_ms=40))
        engine.start()
        held: list = []
        listeners: list[SimulatedParticipant] = []
        talker_legs = []
        try:
            commands = []
            for suppress in (True, False):
                conference = engine.create_conference("mcu")["id"]
                listener = SimulatedParticipant(f"listener-{suppress}", 350.0,
                                                np.zeros(int((seconds + 1.5) * RATE), dtype=np.int16))
                await join(engine, conference, listener)
                listeners.append(listener)
                port, sockets = reserve_port_pair()
                held += sockets
                leg = await engine.add_leg(conference, gateway_offer(port, 97, "sendonly"),
                                           label="noisy", noise_suppression=suppress)
                talker_legs.append((conference, leg["id"]))
                answer = read_answer(leg["sdp"])
                commands.append([
                    ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i", str(wav_path),
                    "-c:a", "libopus", "-b:a", "64k", "-application", "voip", "-frame_duration", "20",
                    "-payload_type", str(answer["payload_type"]), "-f", "rtp",
                    f"rtp://{answer['address']}:{answer['port']}?localrtpport={port}"
                    f"&localrtcpport={port + 1}&rtcpport={answer['rtcp_port']}&pkt_size=1200"])
            start = asyncio.get_running_loop().time() + 0.05
            for listener in listeners:
                listener.start(start)
            release(held)
            held = []
            results = await asyncio.gather(*(run_ffmpeg(c, timeout_s=seconds + 20) for c in commands))
            await asyncio.sleep(0.3)
            legs = [engine.get_conference(c)["legs"] for c, _ in talker_legs]
            return results, legs, listeners
        finally:
            release(held)
            engine.stop()
            await asyncio.sleep(0.05)
            for listener in listeners:
                listener.close()

    results, legs, (with_ns, without_ns) = uvloop.run(scenario())
    for rc, stderr in results:
        assert rc == 0, f"ffmpeg failed: {stderr}"
    processed = next(leg for leg in legs[0] if leg["label"] == "noisy")["voice_processing"]
    assert processed["noise_suppression"]["frames"] > 0.5 * (seconds * 50)
    assert next(leg for leg in legs[1] if leg["label"] == "noisy")["voice_processing"]["noise_suppression"] is None
    floor_on, speech_on = floor_and_speech(with_ns.heard_audio()[0])
    floor_off, speech_off = floor_and_speech(without_ns.heard_audio()[0])
    report = (f"floor {floor_off:.1f} -> {floor_on:.1f} dBFS, speech band {speech_off:.1f} -> "
              f"{speech_on:.1f} dB, SNR {speech_off - floor_off:.1f} -> {speech_on - floor_on:.1f} dB")
    print(report)
    assert floor_off > NOISE_DBFS - 6, f"the unsuppressed mix lost the noise: {report}"
    assert floor_off - floor_on >= FLOOR_DROP_DB, report
    assert abs(speech_on - speech_off) <= SPEECH_KEPT_DB, report


# ------------------------------------------------------------------ automatic gain, personal gains
def syllables(freq: float, seconds: float, amplitude: float) -> np.ndarray:
    """Tone bursts, 500 ms on and 250 ms off: a talker with pauses the gain must hold through."""
    pattern = np.array([i % 3 != 2 for i in range(int(seconds * 4))], dtype=bool)
    return talk_signal(freq, pattern, amplitude=amplitude)


async def conference_of(engine: Engine, people: list[SimulatedParticipant]) -> tuple[str, list[str]]:
    conference = engine.create_conference("mcu")["id"]
    return conference, [await join(engine, conference, p) for p in people]


async def run_people(people: list[SimulatedParticipant], seconds: float) -> None:
    start = asyncio.get_running_loop().time() + 0.05
    for p in people:
        p.start(start)
    await asyncio.wait_for(asyncio.gather(*(p.finished.wait() for p in people)), seconds + 20)
    await asyncio.sleep(0.3)


def heard_db(listener: SimulatedParticipant, freqs: list[float], from_s: float) -> dict[float, float]:
    pcm, _ = listener.heard_audio()
    return tone_levels_db(pcm[int(from_s * RATE):], freqs)


LOUD_HZ, QUIET_HZ = 350.0, 930.0


def test_auto_gain_mixes_a_quiet_and_a_loud_talker_at_similar_loudness():
    """A talker at 0 dB (peaks at full scale) and one 20 dB quieter talk at once; a listener hears
    them 20 dB apart without automatic gain, and within a few dB with it (per-leg option on one
    conference, none on the other, in one engine)."""
    seconds = 7.0

    def people(tag: str) -> list[SimulatedParticipant]:
        return [SimulatedParticipant(f"loud-{tag}", LOUD_HZ, syllables(LOUD_HZ, seconds, 0.9)),
                SimulatedParticipant(f"quiet-{tag}", QUIET_HZ, syllables(QUIET_HZ, seconds, 0.09)),
                SimulatedParticipant(f"listener-{tag}", 520.0, np.zeros(int(seconds * RATE), np.int16))]

    async def scenario():
        engine = Engine(EngineSettings(media_ports="44600-44699", jitter_min_ms=40,
                                       opus_fec=False, opus_packet_loss_percent=0))
        engine.start()
        levelled, plain = people("agc"), people("plain")
        try:
            conference, legs = await conference_of(engine, levelled)
            for leg in legs[:2]:
                engine.update_leg(conference, leg, auto_gain=True)
            await conference_of(engine, plain)
            await run_people(levelled + plain, seconds)
            stats = {leg["label"]: leg["voice_processing"] for leg in engine.get_conference(conference)["legs"]}
            return levelled, plain, stats
        finally:
            engine.stop()
            await asyncio.sleep(0.05)
            for p in levelled + plain:
                p.close()

    levelled, plain, stats = uvloop.run(scenario())
    with_agc = heard_db(levelled[2], [LOUD_HZ, QUIET_HZ], seconds - 2.5)
    without = heard_db(plain[2], [LOUD_HZ, QUIET_HZ], seconds - 2.5)
    report = f"with {with_agc}, without {without}, gains {stats}"
    print(report)
    assert without[LOUD_HZ] - without[QUIET_HZ] > 15, report
    assert abs(with_agc[LOUD_HZ] - with_agc[QUIET_HZ]) < 4, report
    assert stats["loud-agc"]["auto_gain"]["gain_db"] < -10 < 0 < stats["quiet-agc"]["auto_gain"]["gain_db"] + 1
    assert stats["listener-agc"]["auto_gain"] is None  # silence is never decoded nor processed


def test_a_listener_hears_a_talker_at_the_gain_they_set_and_others_keep_the_shared_mix():
    seconds = 4.0
    alice = SimulatedParticipant("alice", LOUD_HZ, syllables(LOUD_HZ, seconds, 0.1))
    bob = SimulatedParticipant("bob", QUIET_HZ, syllables(QUIET_HZ, seconds, 0.1))
    carol = SimulatedParticipant("carol", 520.0, np.zeros(int(seconds * RATE), np.int16))
    dave = SimulatedParticipant("dave", 710.0, np.zeros(int(seconds * RATE), np.int16))
    everyone = [alice, bob, carol, dave]

    async def scenario():
        engine = Engine(EngineSettings(media_ports="44700-44799", jitter_min_ms=40,
                                       opus_fec=False, opus_packet_loss_percent=0))
        engine.start()
        try:
            conference, (a, b, c, _) = await conference_of(engine, everyone)
            engine.update_leg(conference, c, gains={a: -12.0})   # carol: "alice is too loud"
            engine.update_leg(conference, b, gains={a: 6.0})     # bob, a talker, raises alice
            await run_people(everyone, seconds)
            return engine.get_conference(conference)["stats"]
        finally:
            engine.stop()
            await asyncio.sleep(0.05)
            for p in everyone:
                p.close()

    stats = uvloop.run(scenario())
    freqs = [LOUD_HZ, QUIET_HZ]
    shared = heard_db(dave, freqs, 1.0)   # dave set nothing: the shared mix
    at_carol = heard_db(carol, freqs, 1.0)
    at_bob = heard_db(bob, freqs, 1.0)
    report = f"dave {shared}, carol {at_carol}, bob {at_bob}"
    print(report)
    assert at_carol[LOUD_HZ] - shared[LOUD_HZ] == pytest.approx(-12.0, abs=2.0), report
    assert at_carol[QUIET_HZ] - shared[QUIET_HZ] == pytest.approx(0.0, abs=1.5), report
    assert at_bob[LOUD_HZ] - shared[LOUD_HZ] == pytest.approx(6.0, abs=2.0), report
    assert at_bob[QUIET_HZ] < shared[QUIET_HZ] - 20, f"bob heard himself: {report}"
    assert stats["personal_encodes"] > 0 and stats["shared_encodes"] > 0


def test_voice_options_are_checked_with_clear_errors():
    offer = gateway_offer(30000, 111, "sendrecv")

    async def scenario():
        engine = Engine(EngineSettings(media_ports="44800-44849"))
        engine.start()
        try:
            mcu = engine.create_conference("mcu")["id"]
            one = (await engine.add_leg(mcu, offer))["id"]
            two = (await engine.add_leg(mcu, offer, noise_suppression=True, auto_gain=False))["id"]
            errors = []
            for call in (lambda: engine.update_leg(mcu, one, gains={"nobody": -3.0}),
                         lambda: engine.update_leg(mcu, one, gains={one: -3.0}),
                         lambda: engine.update_leg(mcu, one, gains={two: 40.0}),
                         lambda: engine.update_leg(mcu, "nobody", gains={two: 0.0})):
                with pytest.raises(EngineError) as caught:
                    call()
                errors.append((caught.value.status, caught.value.code))
            sfu = engine.create_conference("sfu")["id"]
            with pytest.raises(EngineError) as caught:
                await engine.add_leg(sfu, offer, noise_suppression=True)
            errors.append((caught.value.status, caught.value.code))
            set_ = engine.update_leg(mcu, one, gains={two: -6.0})["voice_processing"]["gains_db"]
            cleared = engine.update_leg(mcu, one, gains={two: None})["voice_processing"]["gains_db"]
            engine.update_leg(mcu, one, gains={two: -6.0})
            engine.remove_leg(mcu, two)   # a talker who leaves is forgotten by its listeners
            after_leave = engine.get_conference(mcu)["legs"][0]["voice_processing"]["gains_db"]
            return errors, set_, cleared, after_leave, len(engine.get_conference(sfu)["legs"])
        finally:
            engine.stop()

    errors, set_, cleared, after_leave, sfu_legs = uvloop.run(scenario())
    assert errors == [(404, "no_such_leg"), (422, "bad_field"), (422, "bad_field"),
                      (404, "no_such_leg"), (409, "not_mixed")]
    assert sfu_legs == 0  # refused before any port was taken
    assert list(set_.values()) == [-6.0] and cleared == {} and after_leave == {}


# ---------------------------------------------------------------------------- hostile PATCH bodies
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


def test_any_leg_patch_body_is_applied_or_refused_with_a_4xx_and_never_breaks_the_mix():
    """Fuzz the PATCH body's voice fields (`_gains`, the bool fields, the engine's checks) with
    hypothesis: every body either applies or answers a 4xx EngineError; the conference then still
    ticks and mixes."""
    from mixer.engine.control import _field, _gains

    outcomes = {"applied": 0, "refused": 0}

    async def scenario():
        engine = Engine(EngineSettings(media_ports="44850-44899"))
        engine.start()
        try:
            conference = engine.create_conference("mcu")["id"]
            legs = [(await engine.add_leg(conference, gateway_offer(30000 + 2 * i, 111, "sendrecv")))["id"]
                    for i in range(2)]
            names = st.sampled_from(legs + ["nobody", ""])
            bodies = st.fixed_dictionaries({}, optional={
                "gains": st.dictionaries(names, json_values, max_size=3) | json_values,
                "noise_suppression": json_values, "auto_gain": json_values, "muted": json_values})
            valid = st.fixed_dictionaries({}, optional={
                "gains": st.dictionaries(st.just(legs[1]), st.none() | st.floats(-60, 20), max_size=1),
                "noise_suppression": st.booleans(), "auto_gain": st.booleans()})
            bodies = valid | bodies

            @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(body=bodies)
            def apply(body):
                try:
                    engine.update_leg(conference, legs[0], _field(body, "muted", bool),
                                      noise_suppression=_field(body, "noise_suppression", bool),
                                      auto_gain=_field(body, "auto_gain", bool), gains=_gains(body))
                    outcomes["applied"] += 1
                except EngineError as exc:
                    assert 400 <= exc.status < 500 and exc.code != "no_such_conference", exc
                    outcomes["refused"] += 1

            apply()   # synchronous, on the engine's loop
            mcu = engine.conferences[conference]
            ticks = mcu.ticks
            await asyncio.sleep(0.5)   # the engine's clock keeps ticking with whatever was set
            return mcu.ticks - ticks
        finally:
            engine.stop()

    ticked = uvloop.run(scenario())
    assert ticked >= 2
    assert outcomes["applied"] > 10 and outcomes["refused"] > 10, outcomes
