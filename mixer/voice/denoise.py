"""Per-talker noise suppression with RNNoise (Valin, "A Hybrid DSP/Deep Learning Approach to
Real-Time Full-Band Speech Enhancement", 2018), through the library the `pyrnnoise` wheel ships.

Why RNNoise: measured against WebRTC's suppressor (`webrtc-noise-gain`, 16 kHz only) and
libspeexdsp's preprocessor on espeak-ng speech with white and pink noise (docs/performance.md,
"Voice processing"), it is the only one that runs natively at the mix rate (48 kHz, full band),
lowers a stationary noise floor by ~28-32 dB and keeps the speech band within 1 dB. It is also the
most expensive (~0.9 ms of CPU per 20 ms frame), which is why it is off by default and runs only
on talkers that are mixed.

The library is loaded with ctypes straight from the wheel's folder: importing the `pyrnnoise`
package itself would pull in its file-conversion helpers (audiolab, matplotlib) that the engine
never needs.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os

import numpy as np

from mixer.voice import VoiceProcessingError

# RNNoise works on 10 ms frames at 48 kHz (rnnoise_get_frame_size() == 480).
RNNOISE_RATE = 48000
RNNOISE_FRAME = 480

_lib: ctypes.CDLL | None = None


def _library() -> ctypes.CDLL:
    """librnnoise from the installed pyrnnoise wheel, loaded once."""
    global _lib
    if _lib is not None:
        return _lib
    spec = importlib.util.find_spec("pyrnnoise")
    if spec is None or not spec.submodule_search_locations:
        raise VoiceProcessingError("noise suppression needs the pyrnnoise package (pip install pyrnnoise)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "librnnoise.so")
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        raise VoiceProcessingError(f"cannot load RNNoise from {path}: {exc}") from exc
    lib.rnnoise_create.argtypes = [ctypes.c_void_p]
    lib.rnnoise_create.restype = ctypes.c_void_p
    lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
    lib.rnnoise_destroy.restype = None
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.rnnoise_process_frame.restype = ctypes.c_float
    lib.rnnoise_get_frame_size.restype = ctypes.c_int
    if lib.rnnoise_get_frame_size() != RNNOISE_FRAME:
        raise VoiceProcessingError("this RNNoise build does not use 10 ms frames at 48 kHz")
    _lib = lib
    return lib


def available() -> bool:
    """Whether RNNoise can be loaded here (settings validation and the version command ask)."""
    try:
        _library()
    except VoiceProcessingError:
        return False
    return True


class NoiseSuppressor:
    """One talker's RNNoise state. `process()` denoises a 20 ms int16 frame in place.

    RNNoise delays its output by 20 ms (its analysis window and lookahead); the talker is heard that
    much later while suppression is on. `reset()` clears the state when the talker's stream starts
    over (new SSRC, or back in the mix after a gap), so no stale audio from before plays out."""

    def __init__(self, frame_samples: int = 960) -> None:
        if frame_samples % RNNOISE_FRAME:
            raise VoiceProcessingError(f"frames of {frame_samples} samples are not whole 10 ms blocks")
        self._lib = _library()
        self._state = self._lib.rnnoise_create(None)
        if not self._state:
            raise VoiceProcessingError("rnnoise_create failed")
        self._buffer = np.zeros(frame_samples, dtype=np.float32)
        base = self._buffer.ctypes.data
        self._blocks = [base + 4 * offset for offset in range(0, frame_samples, RNNOISE_FRAME)]
        self.frames = 0
        self.speech_probability = 0.0   # RNNoise's voice activity estimate for the last frame
        self.resets = 0

    def process(self, frame: np.ndarray) -> float:
        """Denoise `frame` (int16, in place); returns the voice probability (0..1, the larger of
        the frame's two 10 ms blocks)."""
        buffer = self._buffer
        np.copyto(buffer, frame, casting="unsafe")
        run, state = self._lib.rnnoise_process_frame, self._state
        probability = max(run(state, block, block) for block in self._blocks)
        np.clip(buffer, -32768.0, 32767.0, out=buffer)
        np.copyto(frame, buffer, casting="unsafe")
        self.frames += 1
        self.speech_probability = probability
        return probability

    def reset(self) -> None:
        self._lib.rnnoise_destroy(self._state)
        self._state = self._lib.rnnoise_create(None)
        self.resets += 1

    def stats(self) -> dict:
        return {"frames": self.frames, "resets": self.resets,
                "speech_probability": round(self.speech_probability, 3)}

    def close(self) -> None:
        if self._state:
            self._lib.rnnoise_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is not None and getattr(self, "_state", None):
            lib.rnnoise_destroy(self._state)
            self._state = None
