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
