"""CPU cost of the MCU's voice processing, per talker (or per listener) per 20 ms frame, and the
quality of the noise suppressors that were candidates.

    python bench/voice_processing.py [--frames 1500] [--compare]

Costs are CPU time (time.process_time) per 20 ms frame over `--frames` frames of espeak-ng speech
with white noise at 48 kHz, next to an Opus encode of the same frames as a yardstick (every mixed
talker already costs one decode and one encode; a listener with own gains one encode more). What is measured:

- noise suppression (RNNoise, `mixer.voice.denoise`), per mixed talker;
- automatic gain (`mixer.voice.agc`), per mixed talker;
- both, through `Voice.process` as the tick calls it;
- a personal mix (`mixer.voice.personal_mix`) for a listener with their own gains, with N talkers
  mixed, plus the Opus encode that listener then needs of their own.

`--compare` also runs the candidates on the same noisy speech (white and pink noise): RNNoise,
libspeexdsp's preprocessor (libspeexdsp.so.1 through ctypes, if installed) and WebRTC's suppressor
(`webrtc-noise-gain`, 16 kHz only, with scipy's polyphase resampler around it, if installed), and
prints the noise floor drop in the speech pauses, the speech band (300-3400 Hz) energy kept in the
speech frames, and each one's CPU per 20 ms frame and delay.
"""
from __future__ import annotations

import argparse
import ctypes
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixer.codec import FRAME_SAMPLES, FrameEncoder, OpusSettings  # noqa: E402
from mixer.voice.agc import AutoGain  # noqa: E402
from mixer.voice.denoise import NoiseSuppressor  # noqa: E402
from mixer.voice.personal_mix import PersonalMix  # noqa: E402

RATE = 48000
FRAME = FRAME_SAMPLES
SENTENCE = ("The quick brown fox jumps over the lazy dog. Noise suppression should keep every word "
            "of this sentence clear, while the hiss and hum around it fade away. One, two, three.")


def speech() -> np.ndarray:
    """espeak-ng speech at 48 kHz, 1 s of silence either side, peaks at -6 dBFS (float)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, wav48 = Path(tmp) / "s.wav", Path(tmp) / "s48.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), SENTENCE], check=True)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(raw), "-ar", str(RATE),
                        "-ac", "1", str(wav48)], check=True)
        with wave.open(str(wav48)) as w:
            x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    x *= 32767 * 0.5 / np.abs(x).max()
    x = np.concatenate([np.zeros(RATE), x, np.zeros(RATE)])
    return x[:len(x) // FRAME * FRAME]


def noise(kind: str, n: int, dbfs: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "white":
        x = rng.normal(0, 1, n)
    else:  # pink: 1/f power
        spectrum = np.fft.rfft(rng.normal(0, 1, n))
        f = np.fft.rfftfreq(n, 1 / RATE)
        spectrum[1:] /= np.sqrt(f[1:] / 100)
        spectrum[0] = 0
        x = np.fft.irfft(spectrum, n)
    return x / np.sqrt(np.mean(x ** 2)) * 32768 * 10 ** (dbfs / 20)


def per_frame_us(frames: list[np.ndarray], work) -> float:
    copies = [f.copy() for f in frames]
    began = time.process_time()
    for f in copies:
        work(f)
    return (time.process_time() - began) / len(copies) * 1e6


def costs(frames: list[np.ndarray]) -> list[tuple[str, float]]:
    rows = []
    rows.append(("Opus encode, complexity 5 (yardstick)",
                 per_frame_us(frames, FrameEncoder("opus", OpusSettings()).encode)))
    suppressor = NoiseSuppressor()
    rows.append(("noise suppression (RNNoise), per mixed talker", per_frame_us(frames, suppressor.process)))
    agc = AutoGain()
    rows.append(("automatic gain, per mixed talker", per_frame_us(frames, agc.process)))
    both_ns, both_agc = NoiseSuppressor(), AutoGain()
    rows.append(("both (suppression, then gain)",
                 per_frame_us(frames, lambda f: both_agc.process(f, both_ns.process(f)))))
    for talkers in (3, 8):
        stack = np.stack([frames[(i * 37) % len(frames)] for i in range(talkers)])
        ids = [f"t{i}" for i in range(talkers)]
        personal = PersonalMix()
        personal.set("t0", -12.0)
        out = np.zeros(FRAME, dtype=np.int16)
        rows.append((f"personal mix, {talkers} talkers mixed, per listener with own gains",
                     per_frame_us(frames, lambda f: personal.mix(stack, personal.weights(ids, None), out))))
    return rows


def compare(clean: np.ndarray) -> None:
    candidates = {"rnnoise": rnnoise_run}
    try:
        ctypes.CDLL("libspeexdsp.so.1")
        candidates["speexdsp -45 dB"] = speex_run
    except OSError:
        print("(libspeexdsp.so.1 not installed: speexdsp skipped)")
    try:
        import scipy.signal  # noqa: F401
        import webrtc_noise_gain  # noqa: F401
        candidates["webrtc level 3"] = lambda x: webrtc_run(x, 3)
        candidates["webrtc level 4"] = lambda x: webrtc_run(x, 4)
    except ImportError:
        print("(webrtc-noise-gain or scipy not installed: WebRTC's suppressor skipped)")
    power = np.mean(clean.reshape(-1, FRAME) ** 2, axis=1)
    speech_frames = power > power.max() * 1e-3
    pauses = power < 1e-6
    for kind in ("white", "pink"):
        for level in (-40.0, -30.0):
            x = np.clip(clean + noise(kind, len(clean), level), -32768, 32767).astype(np.int16)
            print(f"-- {kind} noise at {level:g} dBFS")
            for name, run in candidates.items():
                out, us = run(x)
                delay = int(np.argmax([np.dot(clean[:len(clean) - d], out[d:].astype(np.float64))
                                       for d in range(0, 1200, 4)])) * 4
                out = np.concatenate([out[delay:], np.zeros(delay, np.int16)]).astype(np.float64)
                floor_in = 10 * np.log10(np.mean(x.reshape(-1, FRAME)[pauses].astype(float) ** 2))
                floor_out = 10 * np.log10(np.mean(out.reshape(-1, FRAME)[pauses] ** 2) + 1e-9)
                kept = band_db(out, speech_frames) - band_db(clean, speech_frames)
                print(f"   {name:16s} floor -{floor_in - floor_out:5.1f} dB   speech band {kept:+5.1f} dB"
                      f"   {us:7.1f} us/frame   delay {delay / 48:4.1f} ms")


def band_db(x: np.ndarray, frames: np.ndarray) -> float:
    blocks = x.reshape(-1, FRAME)[frames] * np.hanning(FRAME)
    spectrum = np.abs(np.fft.rfft(blocks, axis=1)) ** 2
    f = np.fft.rfftfreq(FRAME, 1 / RATE)
    return float(10 * np.log10(np.sum(spectrum[:, (f >= 300) & (f <= 3400)])))


def rnnoise_run(x: np.ndarray) -> tuple[np.ndarray, float]:
    out = x.copy()
    frames = [out[i:i + FRAME] for i in range(0, len(out), FRAME)]
    suppressor = NoiseSuppressor()
    began = time.process_time()
    for f in frames:
        suppressor.process(f)
    return out, (time.process_time() - began) / len(frames) * 1e6


def speex_run(x: np.ndarray, suppress_db: int = -45) -> tuple[np.ndarray, float]:
    lib = ctypes.CDLL("libspeexdsp.so.1")
    lib.speex_preprocess_state_init.restype = ctypes.c_void_p
    lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_preprocess_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_preprocess_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    state = lib.speex_preprocess_state_init(480, RATE)   # 10 ms blocks: its best setting here
    on, suppress = ctypes.c_int(1), ctypes.c_int(suppress_db)
    lib.speex_preprocess_ctl(state, 0, ctypes.byref(on))           # SPEEX_PREPROCESS_SET_DENOISE
    lib.speex_preprocess_ctl(state, 18, ctypes.byref(suppress))    # ..._SET_NOISE_SUPPRESS
    out = x.copy()
    began = time.process_time()
    for i in range(0, len(out), 480):
        lib.speex_preprocess_run(state, out[i:i + 480].ctypes.data)
    lib.speex_preprocess_state_destroy.argtypes = [ctypes.c_void_p]
    lib.speex_preprocess_state_destroy(state)
    return out, (time.process_time() - began) / (len(out) / FRAME) * 1e6


def webrtc_run(x: np.ndarray, level: int) -> tuple[np.ndarray, float]:
    """16 kHz only: resampled down and up around it (the resampling is counted)."""
    from scipy.signal import resample_poly
    from webrtc_noise_gain import AudioProcessor
    processor = AudioProcessor(0, level)
    began = time.process_time()
    low = resample_poly(x.astype(np.float64), 1, 3).astype(np.int16)
    cleaned = b"".join(processor.Process10ms(low[i:i + 160].tobytes()).audio
                       for i in range(0, len(low) - 159, 160))
    up = resample_poly(np.frombuffer(cleaned, np.int16).astype(np.float64), 3, 1)
    out = np.zeros(len(x), np.int16)
    out[:len(up)] = np.clip(up[:len(x)], -32768, 32767)
    return out, (time.process_time() - began) / (len(x) / FRAME) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--compare", action="store_true", help="also compare the candidate suppressors")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is needed (apt-get install espeak-ng)")
    clean = speech()
    noisy = np.clip(clean + noise("white", len(clean), -35.0), -32768, 32767).astype(np.int16)
    frames = [noisy[i:i + FRAME] for i in range(0, len(noisy), FRAME)]
    frames = (frames * (args.frames // len(frames) + 1))[:args.frames]
    print(f"CPU per 20 ms frame ({args.frames} frames of noisy speech)")
    for name, us in costs(frames):
        print(f"  {name:64s} {us:8.1f} us")
    if args.compare:
        compare(clean)


if __name__ == "__main__":
    main()
