"""Automatic gain per talker, so quiet and loud talkers mix at similar loudness.

Slow and speech-gated, in the manner of WebRTC's AGC2 adaptive digital gain: the talker's speech
level is estimated only from frames that carry speech (above a level gate, and judged speech by
RNNoise when suppression runs on the same talker), and the applied gain moves towards
`target - level` by at most a few dB per second, capped at `max_gain_db`. Pauses keep the gain they
had (no pumping of the noise floor between words). A per-frame peak limit keeps a boosted frame
below full scale, and the gain ramps across each frame so a change makes no click.
"""
from __future__ import annotations

import math

import numpy as np

FULL_SCALE = 32768.0
# A frame counts as speech when its RMS is at least this (dBFS) ...
SPEECH_GATE_DBFS = -50.0
# ... and, where a noise suppressor gives a voice probability, at least this likely speech.
SPEECH_PROBABILITY = 0.5
# The level estimate follows speech with this time constant (frames of 20 ms): 0.6 s.
LEVEL_FRAMES = 30
# Gain moves at most this fast (dB per second): slower up than down, so a shout is tamed sooner
# than a whisper is raised.
RISE_DB_PER_S = 6.0
FALL_DB_PER_S = 12.0
# Applied peaks stay under this (dBFS) whatever the gain.
PEAK_LIMIT_DBFS = -1.0


class AutoGain:
    """One talker's automatic gain. `process()` scales a 20 ms int16 frame in place."""

    def __init__(self, target_dbfs: float = -22.0, max_gain_db: float = 20.0,
                 frame_ms: int = 20, frame_samples: int = 960) -> None:
        self.target_dbfs = target_dbfs
        self.max_gain_db = max_gain_db
        self.min_gain_db = -max_gain_db
        self._rise = RISE_DB_PER_S * frame_ms / 1000.0
        self._fall = FALL_DB_PER_S * frame_ms / 1000.0
        self._ramp = (np.arange(1, frame_samples + 1, dtype=np.float32) / frame_samples)
        self._work = np.zeros(frame_samples, dtype=np.float32)
        self._peak_limit = FULL_SCALE * 10 ** (PEAK_LIMIT_DBFS / 20)
        self.level_dbfs: float | None = None   # the talker's estimated speech level
        self.gain_db = 0.0                     # the gain the estimate asks for (slewed)
        self._applied = 1.0                    # linear gain at the end of the last frame
        self.speech_frames = 0
        self.frames = 0
        self.limited_frames = 0

    def process(self, frame: np.ndarray, speech_probability: float | None = None) -> None:
        work = self._work
        np.copyto(work, frame, casting="unsafe")
        power = float(np.dot(work, work)) / len(work)
        rms_dbfs = 10 * math.log10(power / FULL_SCALE ** 2) if power > 0 else -150.0
        self.frames += 1
        if rms_dbfs >= SPEECH_GATE_DBFS and (speech_probability is None
                                             or speech_probability >= SPEECH_PROBABILITY):
            self._observe_speech(rms_dbfs)
        gain = 10 ** (self.gain_db / 20)
        peak = float(np.max(np.abs(work)))
        start = self._applied
        if peak * gain > self._peak_limit:
            gain = self._peak_limit / peak
            start = min(start, gain)  # the limit holds from the frame's first sample: no ramp
            self.limited_frames += 1
        if gain == start == 1.0:
            return
        # ramp from the last frame's gain to this one's across the frame
        work *= start + (gain - start) * self._ramp
        np.clip(work, -FULL_SCALE, FULL_SCALE - 1, out=work)
        np.copyto(frame, work, casting="unsafe")
        self._applied = gain

    def _observe_speech(self, rms_dbfs: float) -> None:
        self.speech_frames += 1
        if self.level_dbfs is None:
            self.level_dbfs = rms_dbfs
        else:
            # a running mean over the first LEVEL_FRAMES speech frames (a talker is levelled
            # within their first sentence), then an exponential average with that time constant
            self.level_dbfs += (rms_dbfs - self.level_dbfs) / min(self.speech_frames, LEVEL_FRAMES)
        wanted = min(self.max_gain_db, max(self.min_gain_db, self.target_dbfs - self.level_dbfs))
        step = wanted - self.gain_db
        self.gain_db += min(step, self._rise) if step > 0 else max(step, -self._fall)

    def stats(self) -> dict:
        return {"gain_db": round(20 * math.log10(self._applied), 1) if self._applied > 0 else None,
                "speech_level_dbfs": None if self.level_dbfs is None else round(self.level_dbfs, 1),
                "speech_frames": self.speech_frames, "limited_frames": self.limited_frames}
