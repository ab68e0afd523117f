"""Engine-side senders of an SFU conference: a player's audio as a stream forwarded like a talker's.

An SFU forwards packets; a player makes PCM. `PlayerSender` encodes the player's frame to Opus once
per tick (one encode whatever the number of subscribers) and stamps it as a stream of its own:
sequence numbers one apart, timestamps from the tick's time, so after a stall (ticks skipped) the
next packet's timestamp has advanced by the time that passed and receivers play it in real time.
The conference treats it as a sender that subscribes to nothing: it competes for the last-N slots
by its level (known without decoding) and is forwarded, cached for NACKs and pre-rolled like any
participant. It offers the few leg attributes the SFU reads from a sender.
"""
from __future__ import annotations

import secrets

from mixer import _rtp
from mixer.codec import FRAME_MS, FrameEncoder, OpusSettings
from mixer.media.player import Player

OPUS_PAYLOAD_TYPE = 111  # only inside the engine: subscribers get their own payload type


class PlayerSender:
    """A Player as an SFU sender (Opus, 48 kHz)."""

    codec = "opus"
    clock_rate = 48000
    samples_per_frame = 960
    audio_level_ext_id = None   # its level is known: never parsed or decoded for it
    remote_ssrc = None          # nobody to ask for a retransmission
    muted = False
    recv_enabled = True

    def __init__(self, player: Player, opus: OpusSettings) -> None:
        self.player = player
        self.id = player.id
        self.label = player.label
        self.encoder = FrameEncoder("opus", opus)
        self.ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts0 = secrets.randbits(32)
        self._start_ms: float | None = None
        self.packets = 0

    def next_packet(self, now_ms: float) -> tuple[_rtp.RtpPacket, int] | None:
        """This tick's packet and its RFC 6464 level, or None when the player has nothing."""
        frame = self.player.frame(now_ms)
        if frame is None:
            return None
        if self._start_ms is None:
            self._start_ms = now_ms
        ticks = round((now_ms - self._start_ms) / FRAME_MS)
        timestamp = (self._ts0 + ticks * self.samples_per_frame) & 0xFFFFFFFF
        payload = self.encoder.encode(frame)
        packet = _rtp.RtpPacket.parse(_rtp.build_rtp(OPUS_PAYLOAD_TYPE, self._seq, timestamp,
                                                     self.ssrc, payload, self.packets == 0))
        self._seq = (self._seq + 1) & 0xFFFF
        self.packets += 1
        return packet, self.player.level

    def send_nack(self, media_ssrc: int, lost: list[int]) -> None:
        """Nothing to ask: a player's packets are all in the cache or gone."""

    def maybe_send_rtcp(self, now_s: float) -> None:
        """No RTCP: it has no peer."""
