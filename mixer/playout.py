"""The playout of one incoming stream: jitter buffer, decoder, and delay changes nobody hears.

`JitterBuffer` decides per packet slot (FRAME / LOSS / UNDERRUN / BUFFERING); `FrameDecoder` turns
those decisions into 48 kHz audio (PLC, in-band FEC). Between them sits the question of how the
delay changes, which is where listeners hear a jitter buffer:

- **shrinking** (the buffer holds more than it needs): the buffer used to drop a whole frame, a
  20 ms hole in a word. Here it says by how many frames instead (`take_shrink`), the playout
  decodes that many packets more than the ticks need and keeps them, and *accelerates* them away
  where nobody hears it (`mixer.timestretch`, NetEq's Accelerate): silence inside a pause between
  sentences first, one pitch period at a time of voiced speech after SHRINK_SILENCE_TICKS without
  such a pause, a cross-faded cut after SHRINK_PATIENCE;
- **growing after an underrun** (a packet came later than the delay allowed): the buffer
  re-buffers for a few ticks. Those ticks used to be silence; here they are concealed by the
  decoder (Opus PLC, NetEq's Expand) while packets are waiting (at most MAX_STALL_CONCEAL frames
  while none has come), and the late packet then follows the concealment.

While packets get lost, an Opus stream's buffer holds one frame more (`loss_headroom`): with a
one-frame buffer the packet after a lost one is never there in time, and in-band FEC, which the
sender pays for, would never be used.

Pre-emptive expand (NetEq repeats a pitch period when the buffer runs low) was built and measured
here: even confined to pauses it cost PESQ (flite voice, 80 ms steady jitter: 4.10 against 4.27
without it), because the buffer's level dips often under jitter and each expansion moves the rest
of an utterance; growth by concealment after an underrun cost less, so it is the only way up.

How many packets a tick pops follows the samples held (`_held`): normally one 20 ms packet per
20 ms tick (two of 10 ms, one every other tick of 40 ms), plus what a shrink keeps decoded until
it is removed. A stream that is not decoded this tick (the MCU decodes only talkers) pops the same
way and its packets are dropped undecoded; a shrink then just drops the extra packets, unheard.
"""
from __future__ import annotations

import numpy as np

from mixer import _jitter, _rtp
from mixer.codec import CODECS, FRAME_SAMPLES, MIX_RATE, FrameDecoder
from mixer.timestretch import MIN_LAG, accelerate, cut, is_silent

# Ticks of a post-underrun re-buffering that are concealed, while no packet has come yet, before
# the rest is silence: beyond ~100 ms PLC turns into a hum, and the talker has probably stopped.
MAX_STALL_CONCEAL = 5
# A shrink waits this many ticks for a pause in the speech, where removing audio is inaudible and
# costs nothing (PESQ re-aligns per utterance too); only then does it remove pitch periods of
# voiced speech. After SHRINK_PATIENCE ticks (audio that is neither silent nor periodic, such as
# music or noise) it cuts the extra samples with a cross-fade.
SHRINK_SILENCE_TICKS = 150
# At most this many frames are taken out of the jitter buffer to be removed at once (the decoder's
# FIFO holds 240 ms).
MAX_SHRINK_FRAMES = 8
# Silence is stretched or shortened only inside a pause that has lasted this many frames: a pause
# between sentences, not the gap between two words. Listeners do not hear the delay change there,
# and PESQ, which re-aligns per utterance, does not either; inside an utterance every change of
# delay costs both.
PAUSE_FRAMES = 5
SHRINK_PATIENCE = 300


class Playout:
    """One stream's playout: `put()` packets as they arrive; once per 20 ms tick `pull(now_ms)`,
    then either `decode()` (the tick's 48 kHz frame, or None for silence) or `discard()`."""

    def __init__(self, codec: str, ptime_ms: int = 20, *, min_delay_ms: float = 20.0,
                 max_delay_ms: float = 200.0, capacity: int = 128, time_stretch: bool = True) -> None:
        self.codec = codec
        self.clock_rate = CODECS[codec].clock_rate
        self.ptime_ms = ptime_ms
        self.time_stretch = time_stretch
        self.jitter_buffer = _jitter.JitterBuffer(
            clock_rate=self.clock_rate, frame_ms=float(ptime_ms), min_delay_ms=min_delay_ms,
            max_delay_ms=max_delay_ms, capacity=capacity, drop_to_shrink=not time_stretch,
            loss_headroom=codec == "opus")
        self._decoder: FrameDecoder | None = None
        self.packets: list[tuple[int, _rtp.RtpPacket | None]] = []   # this tick's decisions
        self._packet_samples = MIX_RATE * ptime_ms // 1000
        self._held = 0             # samples decoded (or owed, when undecoded) beyond frames taken
        self._shrink_left = 0      # samples still to remove by accelerating
        self._shrink_ticks = 0
        self._stall_concealed = 0
        self._quiet_frames = 0     # silent frames played in a row
        # stats
        self.accelerated_ms = 0.0
        self.stall_concealed = 0

    @property
    def decoder(self) -> FrameDecoder:
        if self._decoder is None:
            self._decoder = FrameDecoder(self.codec)
        return self._decoder

    @property
    def has_decoder(self) -> bool:
        return self._decoder is not None

    def put(self, packet: _rtp.RtpPacket, arrival_ms: float) -> int:
        return self.jitter_buffer.put(packet, arrival_ms)

    def pull(self, now_ms: float) -> list[tuple[int, _rtp.RtpPacket | None]]:
        """Take this tick's playout decisions (kept in `packets` until decode/discard)."""
        self.packets.clear()
        jb = self.jitter_buffer
        excess = jb.take_shrink() if self.time_stretch else 0
        if excess and self._shrink_left == 0:
            # the excess stays decoded in the FIFO until a pause lets it go unheard
            self._shrink_left = min(excess, MAX_SHRINK_FRAMES) * self._packet_samples
            self._shrink_ticks = 0
        while self._held < FRAME_SAMPLES + self._shrink_left:
            self.packets.append(jb.pop(now_ms))
            self._held += self._packet_samples
        self._held -= FRAME_SAMPLES
        return self.packets

    @property
    def has_audio(self) -> bool:
        """Something to decode this tick: new decisions, or a whole frame already held."""
        return bool(self.packets) or (self._decoder is not None and self._decoder.has_frame)

    def decode(self) -> np.ndarray | None:
        """Decode this tick's decisions (concealing losses, stretching time) into one frame."""
        decoder, jb = self.decoder, self.jitter_buffer
        for status, packet in self.packets:
            if status == _jitter.BUFFERING and self.time_stretch and jb.stalled:
                # packets waiting: the talk goes on, conceal until it is rebuilt; none: the talker
                # may have stopped, conceal a little and then let it be silent
                if jb.waiting > 0 or self._stall_concealed < MAX_STALL_CONCEAL:
                    self._stall_concealed += 1
                    self.stall_concealed += 1
                    decoder.conceal()
                continue
            if status != _jitter.BUFFERING:
                self._stall_concealed = 0
            decoder.play(status, packet, jb.peek())
        self.packets.clear()
        if self.time_stretch and self._shrink_left > 0:
            self._shrink(decoder)
        frame = decoder.take_frame()
        self._held = decoder.pending
        self._quiet_frames = self._quiet_frames + 1 if frame is None or is_silent(frame) else 0
        return frame

    def _shrink(self, decoder: FrameDecoder) -> None:
        """Remove the extra packet's worth of audio: silence in a pause first, then pitch periods,
        and as a last resort a cross-faded cut."""
        self._shrink_ticks += 1
        spare = decoder.pending - FRAME_SAMPLES
        voiced = self._shrink_ticks > SHRINK_SILENCE_TICKS
        if spare < MIN_LAG or (not voiced and self._quiet_frames < PAUSE_FRAMES):
            return
        limit = min(spare, self._shrink_left)
        if self._shrink_ticks >= SHRINK_PATIENCE:
            removed = -decoder.stretch(lambda x: cut(x, limit))
        else:
            removed = -decoder.stretch(lambda x: accelerate(x, limit, voiced))
        if removed:
            self._shrink_left = max(0, self._shrink_left - removed)
            self.accelerated_ms += removed * 1000.0 / MIX_RATE

    def discard(self) -> None:
        """Not decoded this tick: drop the decisions' packets unheard, and any decoded audio."""
        self.packets.clear()
        self._held = max(0, self._held - self._shrink_left)  # the extra packet is dropped unheard
        self._shrink_left = 0
        if self._decoder is not None:
            self._decoder.reset()

    def reset(self) -> None:
        """A new stream (the sender changed SSRC): buffer, decoder and timing start over."""
        self.__init__(self.codec, self.ptime_ms, min_delay_ms=self.jitter_buffer.min_delay_ms,
                      max_delay_ms=self.jitter_buffer.max_delay_ms,
                      capacity=self.jitter_buffer.capacity, time_stretch=self.time_stretch)

    def decoder_stats(self) -> dict:
        return self._decoder.stats() if self._decoder is not None else FrameDecoder.idle_stats()

    def stats(self) -> dict:
        result = self.jitter_buffer.stats()
        result.update(accelerated_ms=round(self.accelerated_ms, 1),
                      stall_concealed=self.stall_concealed)
        return result
