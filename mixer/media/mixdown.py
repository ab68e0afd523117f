"""The mix of a conference that does not mix: an SFU's forwarded senders decoded and summed in the
engine, for its recording's mix and its mix forks.

Each leg's packets go into a jitter buffer of its own (as in an MCU: playout follows sequence
numbers, losses are concealed, FEC is used when the next packet is there); each tick, the senders
the SFU forwards are decoded and summed, the others are drained undecoded. So the mix is what an
SFU listener hears, at most `sfu_last_n` decodes per tick, and is made only while some service
asks for it.
"""
from __future__ import annotations

import numpy as np

from mixer import _jitter, _rtp
from mixer.codec import FRAME_MS, FRAME_SAMPLES, FrameDecoder
from mixer.settings import EngineSettings


class MixdownInput:
    """One leg as heard by the mixdown: jitter buffer and decoder."""

    def __init__(self, leg, settings: EngineSettings) -> None:
        self.leg = leg
        self.settings = settings
        self.jitter_buffer = self._jitter_buffer()
        self.decoder = FrameDecoder(leg.codec)
        self.ssrc: int | None = None
        self._credit_ms = 0.0
        self._decisions: list = []

    def _jitter_buffer(self) -> _jitter.JitterBuffer:
        return _jitter.JitterBuffer(
            clock_rate=self.leg.clock_rate, frame_ms=float(self.leg.ptime_ms),
            min_delay_ms=self.settings.jitter_min_ms, max_delay_ms=self.settings.jitter_max_ms,
            capacity=self.settings.jitter_capacity)

    def put(self, packet: _rtp.RtpPacket, arrival_ms: float) -> None:
        if packet.ssrc != self.ssrc:
            if self.ssrc is not None:  # a new stream starts from scratch
                self.jitter_buffer = self._jitter_buffer()
                self.decoder = FrameDecoder(self.leg.codec)
            self.ssrc = packet.ssrc
        self.jitter_buffer.put(packet, arrival_ms)

    def pull(self, now_ms: float, decode: bool) -> np.ndarray | None:
        """This tick's playout: decoded into a 20 ms frame when `decode`, else dropped."""
        self._credit_ms += FRAME_MS
        while self._credit_ms >= self.leg.ptime_ms:
            self._credit_ms -= self.leg.ptime_ms
            status, packet = self.jitter_buffer.pop(now_ms)
            if decode:
                self.decoder.play(status, packet, self.jitter_buffer.peek())
        if not decode:
            self.decoder.reset()
            return None
        return self.decoder.take_frame()


class Mixdown:
    """The sum of the forwarded senders, tick by tick."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.inputs: dict[str, MixdownInput] = {}
        self._sum = np.zeros(FRAME_SAMPLES, dtype=np.int32)
        self.total = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.decodes = 0
        self.stale_frames = 0
        self._last_ms: float | None = None

    def leg_added(self, leg) -> None:
        self.inputs.setdefault(leg.id, MixdownInput(leg, self.settings))

    def leg_removed(self, leg) -> None:
        self.inputs.pop(leg.id, None)

    def on_packet(self, leg, packet: _rtp.RtpPacket, arrival_ms: float) -> None:
        source = self.inputs.get(leg.id)
        if source is None:
            source = self.inputs[leg.id] = MixdownInput(leg, self.settings)
        source.put(packet, arrival_ms)

    def mix(self, now_ms: float, forwarded: list) -> np.ndarray:
        """The tick's mix of `forwarded` (legs, and players' senders whose frame is ready)."""
        if self._last_ms is not None and now_ms - self._last_ms > 1.5 * FRAME_MS:
            # after a stall (skipped ticks) playout resumes at each buffer's target delay, as
            # in an MCU: what is now too old to play is dropped, not played late
            for source in self.inputs.values():
                self.stale_frames += source.jitter_buffer.catch_up(now_ms)
        self._last_ms = now_ms
        self._sum[:] = 0
        chosen = {sender.id for sender in forwarded}
        for leg_id, source in self.inputs.items():
            frame = source.pull(now_ms, leg_id in chosen)
            if frame is not None:
                self._sum += frame
                self.decodes += 1
        for sender in forwarded:
            player = getattr(sender, "player", None)
            if player is not None and player.last_frame is not None:
                self._sum += player.last_frame
        np.clip(self._sum, -32768, 32767, out=self._sum)
        self.total[:] = self._sum
        return self.total
