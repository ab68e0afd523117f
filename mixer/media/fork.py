"""Media forks: a conference's audio sent as RTP (or SDES-SRTP) to a destination given by API, for
transcription and analytics services.

A fork is a send-only leg (`MediaLeg`: its own port pair, SSRC, SRTP key and RTCP sender reports)
attached to the conference as a media service:

- a fork of a **participant** forwards that leg's packets as they arrive, payload untouched (no
  decoding or transcoding: the participant's codec), renumbered into the fork's own stream by a
  `StreamRewriter` (the SFU's): the sender's gaps and timing are kept, and an SSRC change of the
  participant continues the fork's stream after the time that passed;
- a fork of the **mix** encodes the conference's mix (an MCU's total; an SFU's forwarded senders
  decoded and summed) once per tick in the fork's codec, stamped by the tick's time: after a stall
  its timestamps have advanced by the time that passed.

A participant that leaves ends its forks (`state` "source_left"); the mix fork lives as long as
the conference. Nothing is received on a fork's port but the destination's RTCP reports.
"""
from __future__ import annotations

import secrets
import time

import numpy as np

from mixer import _rtp
from mixer._forward import StreamRewriter, fan_out
from mixer.codec import FrameEncoder, OpusSettings
from mixer.legs.leg import MediaLeg

MIX = "mix"
ACTIVE, SOURCE_LEFT, STOPPED, FAILED = "active", "source_left", "stopped", "failed"


class DestinationError(ValueError):
    """A destination that is not `host:port`."""


def parse_destination(text: str) -> tuple[str, int]:
    """`host:port` or `[v6 address]:port` -> (host, port). The port is 1..65534: RTCP goes to the
    port above it (RFC 3550 11)."""
    if not isinstance(text, str) or len(text) > 300:
        raise DestinationError("a destination is 'host:port'")
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdigit() or not host:
        raise DestinationError(f"{text!r}: a destination is 'host:port'")
    if host.startswith("["):
        if not host.endswith("]"):
            raise DestinationError(f"{text!r}: an IPv6 address goes in brackets")
        host = host[1:-1]
    elif ":" in host:
        raise DestinationError(f"{text!r}: an IPv6 address goes in brackets, [addr]:port")
    number = int(port)
    if not 1 <= number <= 65534:
        raise DestinationError(f"{text!r}: the port is 1..65534 (RTCP goes to the next one)")
    if not host or any(c.isspace() for c in host):
        raise DestinationError(f"{text!r}: no host")
    return host, number


class Fork:
    """One fork: `source` is "mix" or a leg id; `leg` is its send-only leg to the destination."""

    def __init__(self, fork_id: str, source: str, leg: MediaLeg, destination: str, sdp: str,
                 opus: OpusSettings, label: str | None = None) -> None:
        self.id = fork_id
        self.source = source
        self.leg = leg
        self.destination = destination
        self.sdp = sdp
        self.label = label or fork_id
        self.srtp = leg.srtp is not None
        self.state = ACTIVE
        self.created_at = time.time()
        self.needs_mix = source == MIX
        self.encoder: FrameEncoder | None = None
        self.slot = None
        if self.needs_mix:
            self.encoder = FrameEncoder(leg.codec, opus)
        else:
            rewriter = StreamRewriter(secrets.randbits(32), secrets.randbits(16), secrets.randbits(32),
                                      leg.clock_rate, leg.samples_per_frame)
            self.slot = leg.slot_sender(rewriter)
        self.packets_forwarded = 0
        self.frames_encoded = 0

    # ------------------------------------------------------------------------------- hooks
    def on_packet(self, leg, packet: _rtp.RtpPacket, arrival_ms: float) -> None:
        if self.slot is None or self.state != ACTIVE or leg.id != self.source:
            return
        self.packets_forwarded += fan_out([self.slot], packet.ssrc, packet.sequence_number,
                                          packet.timestamp, packet.marker, packet.payload,
                                          arrival_ms, time.time())

    def on_mix(self, now_ms: float, total: np.ndarray | None, players=None) -> None:
        if self.encoder is None or self.state != ACTIVE or total is None:
            return
        self.leg.send_payload(self.encoder.encode(total), now_ms, time.time())
        self.frames_encoded += 1

    def leg_added(self, leg, now_ms: float) -> None:
        """A fork follows one leg, chosen at its creation: a newcomer changes nothing."""

    def leg_removed(self, leg, now_ms: float) -> None:
        if leg.id == self.source and self.state == ACTIVE:
            self.state = SOURCE_LEFT
            self.leg.close()

    # --------------------------------------------------------------------------------- end
    def stop(self) -> None:
        if self.state == ACTIVE:
            self.state = STOPPED
        self.leg.close()  # an RTCP BYE to the destination, the sockets closed

    def fail(self, reason: str) -> None:
        self.state = FAILED
        self.leg.close()

    def stats(self) -> dict:
        leg = self.leg.stats()
        return {
            "id": self.id,
            "label": self.label,
            "source": self.source,
            "destination": self.destination,
            "state": self.state,
            "codec": self.leg.codec,
            "srtp": self.srtp,
            "local_port": self.leg.local_port,
            "packets_out": self.leg.packets_out,
            "bytes_out": leg["bytes_out"],
            "packets_forwarded": self.packets_forwarded,
            "frames_encoded": self.frames_encoded,
            "rtcp": leg["rtcp"],
            "created_at": self.created_at,
        }
