"""The classic MCU as a baseline: decode everyone, mix-minus for everyone, encode for everyone.

`NaiveMcuConference` reuses every piece of the real MCU (MediaLeg, the per-leg Voice with its jitter
buffer and decoder, the compiled `mix_minus` kernel, FrameEncoder with the same Opus settings) and
only changes the tick: no RFC 6464 shortcut, no talker selection, no shared encode. Every tick it

1. pulls every leg's playout decision and DECODES it (PLC/FEC on loss), silent or not;
2. mixes all N frames and computes all N mix-minus signals (one int32 pass + one pass per output);
3. ENCODES each participant's own mix-minus with that participant's own encoder and sends it.

Register it in an engine with ``register(engine_or_class)`` (mode ``"naive"``); the benchmarks do this
inside the engine process only, never in the shipped engine.
"""
from __future__ import annotations

import time

import numpy as np

from mixer import _mix
from mixer.codec import FRAME_SAMPLES
from mixer.mcu.conference import McuConference

MODE = "naive"


class NaiveMcuConference(McuConference):
    """Decode all, mix-minus all, encode all: the O(N) codec work that McuConference avoids."""

    mode = MODE

    def __init__(self, conference_id, settings) -> None:
        super().__init__(conference_id, settings)
        self._all_stack = np.zeros((0, FRAME_SAMPLES), dtype=np.int16)
        self._all_minus = np.zeros((0, FRAME_SAMPLES), dtype=np.int16)

    def _ensure_capacity(self, n: int) -> None:
        if self._all_stack.shape[0] < n:
            size = max(n, 2 * self._all_stack.shape[0], 8)
            self._all_stack = np.zeros((size, FRAME_SAMPLES), dtype=np.int16)
            self._all_minus = np.zeros((size, FRAME_SAMPLES), dtype=np.int16)

    def tick(self, now_ms: float) -> None:
        began = time.perf_counter()
        self.ticks += 1
        voices = list(self.voices.values())
        n = len(voices)
        self._ensure_capacity(n)
        stack = self._all_stack
        # 1: every participant's frame, decoded whether it carries speech or not
        for index, voice in enumerate(voices):
            frame = None
            if voice.leg.recv_enabled:
                voice.pull(now_ms)
                if voice.leg.muted:
                    voice.discard()
                else:
                    frame = voice.decode()
                    self.decodes += 1
            if frame is None:
                stack[index] = 0
            else:
                stack[index] = frame
        # 2: everyone's mix-minus
        if n:
            _mix.mix_minus(stack[:n], self._total, self._all_minus[:n])
        # 3: one encode per participant, each with its own encoder
        now_s, wall_s = time.monotonic(), time.time()
        for index, voice in enumerate(voices):
            leg = voice.leg
            payload = voice.own_encoder(self.opus).encode(self._all_minus[index])
            self.own_encodes += 1
            leg.send_payload(payload, now_ms, wall_s)
            leg.maybe_send_rtcp(now_s)
        self.busy_ms += (time.perf_counter() - began) * 1000.0


def register(engine_type) -> None:
    """Add mode "naive" to an Engine (instance or class) `conference_types` map, without touching
    the class-level map when given an instance."""
    types = dict(engine_type.conference_types)
    types[MODE] = NaiveMcuConference
    engine_type.conference_types = types
