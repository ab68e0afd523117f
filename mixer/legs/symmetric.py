"""Where a plain RTP/SDES leg may send: only to an address that has shown it wants the media.

An offer can name any address, so an engine that streamed to whatever the offer says would be a
reflector (50 packets/s at a third party for one API call). A plain leg therefore sends nothing
until media has arrived, and then sends according to where it came from, after symmetric RTP
(RFC 4961), with the offered address preferred:

- **waiting**: no media yet. Nothing is sent, or for `unconfirmed_send_s` (0 by default) the
  offered address gets the leg's stream, one packet per tick per stream at most.
- **offered**: media came from the host the offer names (any port of it: ffmpeg's separate sender
  and receiver processes send from one port and listen on another). The offered address gets
  RTP and RTCP, as the offer asked. The offered host's media always wins over a latched source.
- **latched**: media came first from another host (a client behind NAT offers its private
  address). RTP goes to where that media came from, RTCP to where the far end's RTCP comes from
  (the RTP source with rtcp-mux, its port + 1 until RTCP arrives). Later RTP from another port of
  the same host moves the latch along (a NAT rebinding); another host moves it only with
  SRTP-authenticated media (only the key holder can), never with plain RTP (RTP Bleed: a stranger
  spraying the port must not pull the stream to itself).

"Media" is what the leg accepted: SRTP- and SRTCP-authenticated packets on an SDES leg, parsed
RTP or RTCP on a plain one. Only RTP latches to a new host; RTCP from the offered host is
consent for the offered address (a receive-only client sends receiver reports).
"""
from __future__ import annotations

WAITING, OFFERED, LATCHED = "waiting", "offered", "latched"


class SymmetricRtp:
    """The send-destination state of one plain leg (see the module docstring)."""

    __slots__ = ("offered_rtp", "offered_rtcp", "rtcp_mux", "state", "rtp", "rtcp",
                 "start_until", "latches", "_rtcp_learned")

    def __init__(self, offered_rtp: tuple, offered_rtcp: tuple, rtcp_mux: bool,
                 start_until: float = 0.0) -> None:
        self.offered_rtp = offered_rtp
        self.offered_rtcp = offered_rtcp
        self.rtcp_mux = rtcp_mux
        self.state = WAITING
        self.rtp: tuple | None = None    # where RTP goes now (None: nowhere yet)
        self.rtcp: tuple | None = None
        self.start_until = start_until   # monotonic time the unconfirmed start ends
        self.latches = 0                 # moves to a source other than the offered address
        self._rtcp_learned = False

    @property
    def consented(self) -> bool:
        return self.state != WAITING

    @property
    def source_host(self) -> str | None:
        """The host media is accepted from as the participant (None while waiting)."""
        if self.state == OFFERED:
            return self.offered_rtp[0]
        if self.state == LATCHED:
            return self.rtp[0]
        return None

    def accepts(self, host: str) -> bool:
        """Whether plain media from `host` may count as the participant's: anything while
        waiting; afterwards the consented host or the offered one."""
        return self.state == WAITING or host == self.offered_rtp[0] or host == self.source_host

    def on_media(self, addr: tuple, rtcp: bool, authenticated: bool) -> bool:
        """Accepted media from `addr`; True when the destinations changed."""
        host = addr[0]
        if host == self.offered_rtp[0]:
            if self.state == OFFERED:
                return False
            self.state = OFFERED
            self.rtp, self.rtcp = self.offered_rtp, self.offered_rtcp
            return True
        if rtcp:
            # RTCP never latches a new host; from the latched one it says where RTCP goes
            if self.state == LATCHED and host == self.rtp[0] and not self.rtcp_mux \
                    and self.rtcp != addr:
                self.rtcp, self._rtcp_learned = addr, True
                return True
            return False
        if self.state == WAITING or (self.state == LATCHED and host == self.rtp[0]) or authenticated:
            if self.state == LATCHED and self.rtp == addr:
                return False
            if self.state != LATCHED or host != self.rtp[0]:
                self._rtcp_learned = False
            self.state = LATCHED
            self.latches += 1
            self.rtp = addr
            if self.rtcp_mux:
                self.rtcp = addr
            elif not self._rtcp_learned:
                self.rtcp = (host, addr[1] + 1) if addr[1] < 65535 else addr
            return True
        return False

    def reoffer(self, offered_rtp: tuple, offered_rtcp: tuple) -> None:
        """A re-offer names new addresses. Consent given by the offered host holds for the new
        address only if it is on that host; a latched source stays latched (a client behind NAT
        re-offers its private address again)."""
        old_host = self.offered_rtp[0]
        self.offered_rtp, self.offered_rtcp = offered_rtp, offered_rtcp
        if self.state == OFFERED:
            if offered_rtp[0] == old_host:
                self.rtp, self.rtcp = offered_rtp, offered_rtcp
            else:
                self.state, self.rtp, self.rtcp = WAITING, None, None

    def stats(self) -> dict:
        return {"state": self.state, "latches": self.latches,
                "destination": None if self.rtp is None else f"{self.rtp[0]}:{self.rtp[1]}"}
