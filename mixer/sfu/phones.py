"""Phones in an SFU conference: G.711 legs, transcoded both ways where the SFU forwards Opus.

An SFU forwards packets untouched, so every receiver must play every sender's codec; a phone
(PCMU/PCMA at 8 kHz, one stream) cannot play N forwarded Opus streams, and Opus receivers cannot
play G.711. The bridge does for phones what an MCU does for everyone, and only for them:

- up (phone -> the others): each phone's packets go through its own jitter buffer; every tick
  the frame is decoded (and upsampled to 48 kHz), its level feeds the SFU's speaker selection
  like any sender's, and while the phone is among the forwarded speakers the frame is encoded
  with the phone's own Opus encoder and forwarded through the same `fan_out` as a browser's
  packet (its own sequence numbers and 48 kHz timestamps, its level in the extension);
- down (the others -> phones): while phones listen, the forwarded speakers' Opus packets also go
  through one jitter buffer and decoder per speaker (shared by all phones); every tick their
  frames and the forwarded phones' own are mixed: phones that are not forwarded hear the total,
  encoded once per G.711 codec; a forwarded phone hears the total minus itself, encoded by its
  own encoder.

The cost is therefore per phone (a G.711 decode, an Opus encode while forwarded) and per
forwarded speaker while any phone listens (an Opus decode), not per Opus subscriber: they keep
receiving forwarded packets.
"""
from __future__ import annotations

import secrets

import numpy as np

from mixer import _jitter, _mix, _rtp
from mixer._forward import fan_out
from mixer.codec import FRAME_MS, FRAME_SAMPLES, FrameDecoder, FrameEncoder, OpusSettings
from mixer.legs.leg import MediaLeg
from mixer.settings import EngineSettings

PHONE_CODECS = ("PCMU", "PCMA")


class Playout:
    """One stream played out on the tick: a jitter buffer and a decoder into 48 kHz frames."""

    def __init__(self, codec: str, clock_rate: int, ptime_ms: int, settings: EngineSettings) -> None:
        self.codec = codec
        self.ptime_ms = ptime_ms
        self.buffer = _jitter.JitterBuffer(clock_rate=clock_rate, frame_ms=float(ptime_ms),
                                           min_delay_ms=settings.jitter_min_ms,
                                           max_delay_ms=settings.jitter_max_ms,
                                           capacity=settings.jitter_capacity)
        self.decoder = FrameDecoder(codec)
        self._credit_ms = 0.0

    def put(self, packet: _rtp.RtpPacket, arrival_ms: float) -> None:
        self.buffer.put(packet, arrival_ms)

    def frame(self, now_ms: float) -> np.ndarray | None:
        """This tick's 20 ms frame (concealed on loss), or None when the stream is silent."""
        self._credit_ms += FRAME_MS
        while self._credit_ms >= self.ptime_ms:
            self._credit_ms -= self.ptime_ms
            status, packet = self.buffer.pop(now_ms)
            self.decoder.play(status, packet, self.buffer.peek())
        return self.decoder.take_frame()


class Phone:
    """The bridge's state for one G.711 leg."""

    def __init__(self, leg: MediaLeg, settings: EngineSettings, opus: OpusSettings) -> None:
        self.leg = leg
        self.settings = settings
        self.opus = opus
        self.playout = Playout(leg.codec, leg.clock_rate, leg.ptime_ms, settings)
        self.frame: np.ndarray | None = None      # this tick's decoded frame
        self.level = _rtp.AUDIO_LEVEL_SILENT
        self._up: FrameEncoder | None = None      # Opus, while forwarded
        self._down: FrameEncoder | None = None    # G.711, while it hears its own mix-minus
        self.seq = secrets.randbits(16)           # the Opus stream it is forwarded as
        self.ts = secrets.randbits(32)
        self.ssrc = secrets.randbits(32)
        self.frames_up = 0

    def reset_stream(self) -> None:
        self.playout = Playout(self.leg.codec, self.leg.clock_rate, self.leg.ptime_ms, self.settings)

    def up_encoder(self) -> FrameEncoder:
        if self._up is None:
            self._up = FrameEncoder("opus", self.opus)
        return self._up

    def down_encoder(self) -> FrameEncoder:
        if self._down is None:
            self._down = FrameEncoder(self.leg.codec, self.opus)
        return self._down


class PhoneBridge:
    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        # a phone's Opus stream goes to every subscriber: FEC only with a fixed loss hint set, as
        # for the engine's other shared streams (the MCU's mixes follow their receivers' reports)
        self.opus = OpusSettings.for_engine(settings)
        self.phones: dict[str, Phone] = {}
        self.sources: dict[str, Playout] = {}     # forwarded Opus speakers, decoded for phones
        self._shared: dict[str, FrameEncoder] = {}
        n = max(1, settings.sfu_last_n)
        self._stack = np.zeros((n, FRAME_SAMPLES), dtype=np.int16)
        self._minus = np.zeros((n, FRAME_SAMPLES), dtype=np.int16)
        self._total = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.frames_down = 0
        self.source_decodes = 0

    @staticmethod
    def takes(leg: MediaLeg) -> bool:
        return leg.codec in PHONE_CODECS

    def add(self, leg: MediaLeg) -> Phone:
        phone = self.phones[leg.id] = Phone(leg, self.settings, self.opus)
        return phone

    def remove(self, leg_id: str) -> None:
        self.phones.pop(leg_id, None)
        self.sources.pop(leg_id, None)

    @property
    def listening(self) -> bool:
        return bool(self.phones)

    def on_phone_rtp(self, leg: MediaLeg, packet: _rtp.RtpPacket, arrival_ms: float) -> None:
        phone = self.phones.get(leg.id)
        if phone is not None:
            phone.playout.put(packet, arrival_ms)

    def on_source_rtp(self, leg: MediaLeg, packet: _rtp.RtpPacket, arrival_ms: float) -> None:
        """A forwarded Opus speaker's packet, kept for the phones' mix."""
        playout = self.sources.get(leg.id)
        if playout is None:
            playout = self.sources[leg.id] = Playout(leg.codec, leg.clock_rate, leg.ptime_ms,
                                                     self.settings)
        playout.put(packet, arrival_ms)

    # -------------------------------------------------------------------------------- the tick
    def decode_phones(self, now_ms: float) -> dict[str, int]:
        """Decode every phone's frame for this tick; their levels (RFC 6464 scale) by leg id."""
        levels = {}
        for leg_id, phone in self.phones.items():
            phone.frame = None if phone.leg.muted else phone.playout.frame(now_ms)
            phone.level = _rtp.AUDIO_LEVEL_SILENT if phone.frame is None else _mix.audio_level(phone.frame)
            levels[leg_id] = phone.level
        return levels

    def forward_phone(self, phone: Phone, targets: list, source_key: int, now_ms: float,
                      wall_s: float) -> int:
        """Send a forwarded phone's frame, Opus-encoded, through the subscribers' slots."""
        if phone.frame is None or not targets:
            return 0
        payload = phone.up_encoder().encode(phone.frame)
        phone.seq = (phone.seq + 1) & 0xFFFF
        phone.ts = (phone.ts + FRAME_SAMPLES) & 0xFFFFFFFF
        phone.frames_up += 1
        return fan_out(targets, source_key | phone.ssrc, phone.seq, phone.ts, False, payload,
                       now_ms, wall_s, phone.level, phone.level < _rtp.AUDIO_LEVEL_SILENT)

    def mix_down(self, forwarded: list[str], now_ms: float, wall_s: float,
                 players: dict | None = None) -> None:
        """Mix the forwarded speakers for the phones and send it on their legs; `players` has
        this tick's frame of each forwarded engine player (by id; None when it has none)."""
        if not self.phones:
            return
        for leg_id in [k for k in self.sources if k not in forwarded]:
            del self.sources[leg_id]   # no longer forwarded: its playout starts afresh next time
        frames: list[tuple[str, np.ndarray]] = []
        for leg_id in forwarded[:len(self._stack)]:
            phone = self.phones.get(leg_id)
            if phone is not None:
                frame = phone.frame
            elif players and leg_id in players:
                frame = players[leg_id]
            else:
                playout = self.sources.get(leg_id)
                frame = playout.frame(now_ms) if playout is not None else None
                self.source_decodes += playout is not None
            if frame is not None:
                frames.append((leg_id, frame))
        count = len(frames)
        for index, (_, frame) in enumerate(frames):
            self._stack[index] = frame
        if count:
            _mix.mix_minus(self._stack[:count], self._total, self._minus[:count])
        else:
            self._total[:] = 0
        mixed = {leg_id: index for index, (leg_id, _) in enumerate(frames)}
        shared: dict[str, bytes] = {}
        for leg_id, phone in self.phones.items():
            if leg_id in mixed:
                payload = phone.down_encoder().encode(self._minus[mixed[leg_id]])
            else:
                codec = phone.leg.codec
                payload = shared.get(codec)
                if payload is None:
                    encoder = self._shared.get(codec)
                    if encoder is None:
                        encoder = self._shared[codec] = FrameEncoder(codec, self.opus)
                    payload = shared[codec] = encoder.encode(self._total)
            phone.leg.send_payload(payload, now_ms, wall_s)
            self.frames_down += 1

    def stats(self) -> dict:
        return {"phones": len(self.phones), "sources_decoded": len(self.sources),
                "frames_down": self.frames_down, "source_decodes": self.source_decodes,
                "frames_up": sum(p.frames_up for p in self.phones.values())}
