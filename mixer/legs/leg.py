"""One participant's media leg: its UDP port(s), SRTP, RTP in and out, and RTCP.

The leg is the same in MCU and SFU conferences: it authenticates and parses what arrives, drops and
counts what is bad, and hands valid RTP to its conference; it stamps what the conference sends with
the leg's own SSRC, sequence numbers and timestamps (each listener sees one continuous stream) and
protects it with the leg's own SRTP key. It also terminates RTCP (RFC 3550 section 6): it sends SR/RR
on schedule and learns RTT and the far end's view of loss from what comes back.

A plain leg sends only where media has come from (`mixer.legs.symmetric.SymmetricRtp`: the
offered address once its host has sent, else the source of the first media, RFC 4961): an offer
naming a third party's address makes the engine send that party nothing. A fork's leg (media
services) sends to its checked destination, and a WebRTC leg where ICE nominated with consent.
"""
from __future__ import annotations

import random
from functools import partial
import secrets
import socket
import time
from collections.abc import Callable

from mixer import _g711, _rtp
from mixer._dtmf_detect import DtmfDetector
from mixer._forward import SlotSender, StreamRewriter
from mixer.codec import CODECS, FRAME_MS
from mixer.rtp.rtcp import (
    RtcpBye, RtcpError, RtcpNack, RtcpReceiverReport, RtcpSdes, SdesChunk, SDES_CNAME,
    is_rtcp, parse_compound, serialize_compound,
)
from mixer.rtp.dtmf import Digit, DtmfError, DtmfReceiver, DtmfSender, InbandDtmfSender
from mixer.rtp.srtp import SrtpContext
from mixer.rtp.stats import (
    ReceiveStatistics, RoundTrip, SendStatistics, learn_from_reports, sender_report,
)
from mixer.sdp import AudioAnswer
from mixer.legs.symmetric import SymmetricRtp
from mixer.legs.transport import SendFlusher, UdpEndpoint, pack
from mixer.ratelimit import TokenBucket
from mixer.settings import EngineSettings

# Reasons a packet is dropped; each is a counter in stats()
DROP_REASONS = ("rate_limited", "srtp", "malformed", "payload_type", "not_receiving", "rtcp_malformed",
                "rtcp_srtp", "stranger", "oversized")

# Plain RTP from another port of the participant's host is refused while the current stream has
# sent within this long (another host is refused for good once the leg has its source).
STREAM_HOLD_MS = 2000.0
# SRTP state kept for this many of the peer's most recent SSRCs.
INBOUND_SSRCS_KEPT = 4


class MediaLeg:
    """A participant's audio leg in a conference, as negotiated by one SDP offer/answer.

    This class is the plain kind (RTP, or SRTP keyed by SDES); `mixer.legs.webrtc.WebRtcLeg` is
    the WebRTC kind (ICE-lite, DTLS-SRTP) on the same interface."""

    kind = "plain"

    def __init__(self, leg_id: str, answer: AudioAnswer, rtp_socket: socket.socket,
                 rtcp_socket: socket.socket | None, settings: EngineSettings,
                 label: str | None = None, flusher: SendFlusher | None = None,
                 retransmits: bool = False, media_consent: bool = True) -> None:
        """`media_consent`: send only where media has come from (`SymmetricRtp`); False for a
        leg whose destination is not the far end's offer (a fork's, checked by the peer
        filter). A leg kind other than plain (WebRTC) has its own consent and never uses it."""
        self.id = leg_id
        self.label = label or leg_id
        self.settings = settings
        self.answer = answer
        self.codec = answer.codec
        self.payload_type = answer.payload_type
        self.clock_rate = CODECS[answer.codec].clock_rate
        self.samples_per_frame = self.clock_rate * FRAME_MS // 1000
        self.ptime_ms = answer.ptime_ms            # what the peer sends
        self.send_ptime_ms = answer.send_ptime_ms  # what we send
        self.telephone_event_pt = answer.telephone_event_pt
        self.audio_level_ext_id = answer.audio_level_ext_id
        # further streams this leg sends, by SSRC (an SFU subscriber's slots); each gets its own SR
        self.extra_streams: dict[int, SendStatistics | SlotSender] = {}
        # where media may go (None: anywhere the answer says, for forks and WebRTC legs)
        self.symmetric: SymmetricRtp | None = None
        self._consented = True          # may send now; False while a plain leg waits for media
        self._media_from: tuple | None = None  # the last address SymmetricRtp was told about
        self.withheld = 0               # packets not sent: no address had consented yet
        self._set_remote(answer.remote_rtp, answer.remote_rtp if answer.rtcp_mux else answer.remote_rtcp)
        if media_consent and getattr(self, "kind", "plain") == "plain":
            start_s = settings.unconfirmed_send_s
            self.symmetric = SymmetricRtp(self.remote_rtp, self.remote_rtcp, answer.rtcp_mux,
                                          time.monotonic() + start_s if start_s > 0 else 0.0)
            self._consented = start_s > 0
        self.rtcp_mux = answer.rtcp_mux
        self.send_enabled = answer.direction in ("sendrecv", "sendonly")
        self.recv_enabled = answer.direction in ("sendrecv", "recvonly")
        self.muted = False
        self.local_port = rtp_socket.getsockname()[1]
        self._flusher = flusher or SendFlusher()
        self._rtp = UdpEndpoint(rtp_socket, self._on_rtp_port, self._flusher,
                                on_oversized=self._on_oversized)
        self._rtcp = (UdpEndpoint(rtcp_socket, self._on_rtcp_port, self._flusher,
                                  on_oversized=self._on_oversized)
                      if rtcp_socket is not None else None)
        self.srtp: SrtpContext | None = None
        self.retransmits = retransmits
        # follow authenticated media to a new address (symmetric RTP); a WebRTC leg never does:
        # it sends only where ICE nominated and consent holds
        if answer.local_crypto is not None and answer.remote_crypto is not None:
            # an SFU resends cached packets on NACK: the same sequence number protected twice
            self.srtp = SrtpContext(answer.local_crypto.suite, answer.local_crypto.key,
                                    answer.remote_crypto.key, allow_repeat_tx=retransmits)
        # our outgoing stream (RFC 3550 section 5.1: random initial values)
        self.ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts_base = secrets.randbits(32)
        self._ts = self._ts_base
        self._ts_origin_ms: float | None = None   # the tick time that _ts_base stands for
        self._last_sent_ms: float | None = None   # tick time of our last packet
        self.send_gaps = 0                        # resumptions after skipped ticks (stalls)
        self.cname = f"voicemix-{self.ssrc:08x}"
        self.sent = SendStatistics()
        # the far end's stream
        self.remote_ssrc: int | None = None
        self.receive: ReceiveStatistics | None = None
        self.round_trip = RoundTrip()
        self.ssrc_changes = 0
        self.dtmf_packets = 0
        self.dtmf = DtmfReceiver(self.clock_rate)  # RFC 4733 digits, for the controller to poll
        # keys heard in the audio of a G.711 leg that negotiated no telephone-event
        self.inband_detector: DtmfDetector | None = None
        self._dtmf_out: DtmfSender | InbandDtmfSender | None = None
        self._pack = bytearray()   # G.711 samples waiting for a ptime other than 20 ms
        self._pack_ts = 0
        self._last_tick_ms: float | None = None
        self._configure_dtmf()
        self.nacks_in = 0
        self.nacks_out = 0
        self.remote_bye = False
        self.drops = dict.fromkeys(DROP_REASONS, 0)
        self.packets_in = 0
        self.bytes_in = 0
        self.last_packet_ms: float | None = None
        self._stream_source: tuple | None = None   # where the current stream's packets come from
        self._inbound_ssrcs: dict[int, bool] = {}  # peer SSRCs with SRTP state, oldest first
        # Separate budgets for the negotiated peer and for everyone else, so a flood from a
        # stranger cannot starve the real participant's packets.
        self._peer_budget = TokenBucket(settings.max_packet_rate)
        self._stranger_budget = TokenBucket(settings.max_packet_rate)
        self._next_rtcp_s = time.monotonic() + settings.rtcp_interval_s * random.uniform(0.5, 1.5)
        # set by the conference
        self.on_rtp: Callable[[MediaLeg, _rtp.RtpPacket, float], None] | None = None
        self.on_ssrc_change: Callable[[MediaLeg], None] | None = None
        self.on_nack: Callable[[MediaLeg, RtcpNack], None] | None = None
        self.on_dtmf: Callable[[MediaLeg, Digit], None] | None = None

    def _configure_dtmf(self) -> None:
        g711 = self.codec in ("PCMU", "PCMA")
        mode = self.settings.inband_dtmf
        wanted = g711 and (mode == "always" or (mode == "auto" and self.telephone_event_pt is None))
        if wanted and self.inband_detector is None:
            self.inband_detector = DtmfDetector()
        elif not wanted:
            self.inband_detector = None

    def send_dtmf(self, keys: str) -> str:
        """Queue keys to send: RFC 4733 events when telephone-event was negotiated, else Q.23
        tones in the audio of a G.711 leg. Returns "rfc4733" or "inband"; DtmfError if neither
        is possible (an Opus leg without telephone-event) or a key is not a DTMF key."""
        if self.telephone_event_pt is not None:
            if not isinstance(self._dtmf_out, DtmfSender):
                self._dtmf_out = DtmfSender(self.samples_per_frame, self.clock_rate)
            self._dtmf_out.add(keys)
            return "rfc4733"
        if self.codec in ("PCMU", "PCMA"):
            if not isinstance(self._dtmf_out, InbandDtmfSender):
                self._dtmf_out = InbandDtmfSender(self.samples_per_frame)
            self._dtmf_out.add(keys)
            return "inband"
        raise DtmfError(f"leg {self.id} ({self.codec}) negotiated no telephone-event")

    # ----------------------------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        self._rtp.open()
        if self._rtcp is not None:
            self._rtcp.open()

    def close(self, send_bye: bool = True) -> None:
        if send_bye and self._rtp.is_open and self.send_enabled:
            self._send_rtcp([*self._reports(time.time()), self._sdes(),
                             RtcpBye(sources=[self.ssrc], reason=b"leaving")])
        self._rtp.close()
        if self._rtcp is not None:
            self._rtcp.close()
        for slot in self.extra_streams.values():
            if isinstance(slot, SlotSender):
                slot.enabled = False
        self.srtp = None

    def _set_remote(self, rtp: tuple, rtcp: tuple) -> None:
        self.remote_rtp = rtp
        self.remote_rtcp = rtcp
        self._remote_rtp_packed = pack(rtp)
        self._remote_rtcp_packed = pack(rtcp)
        for slot in self.extra_streams.values():
            if isinstance(slot, SlotSender):
                slot.address = self._remote_rtp_packed

    def slot_sender(self, rewriter: StreamRewriter) -> SlotSender:
        """A further outgoing stream on this leg (an SFU slot), numbered by `rewriter`: packets go
        out in this leg's payload type and audio-level id, under its SRTP key, through its socket,
        and get their own RTCP sender reports."""
        slot = SlotSender(rewriter, self.payload_type, self.audio_level_ext_id or 0,
                          self.srtp.outbound_calls if self.srtp is not None else None,
                          self._rtp._out_data, self._rtp._out_addresses, self._remote_rtp_packed,
                          partial(self._flusher.schedule, self._rtp))
        slot.enabled = self.send_enabled and self._consented
        self.extra_streams[rewriter.ssrc] = slot
        return slot

    def apply_answer(self, answer: AudioAnswer) -> None:
        """Take the answer to a re-offer (a re-INVITE: hold with sendonly/inactive, resume, a new
        address; same codec and rtcp-mux, checked by the engine): the far end's new address,
        direction, ptime and telephone-event, and the peer's new SDES key if it changed (ours is
        kept; the inbound SRTP state starts over). Consent to send carries over only for the host
        media already came from (docs/security.md)."""
        if (self.srtp is not None and answer.remote_crypto is not None
                and answer.remote_crypto.key != self.answer.remote_crypto.key):
            self.srtp = SrtpContext(answer.local_crypto.suite, answer.local_crypto.key,
                                    answer.remote_crypto.key, allow_repeat_tx=self.retransmits)
            self._inbound_ssrcs.clear()
            for slot in self.extra_streams.values():
                if isinstance(slot, SlotSender):
                    slot.srtp = self.srtp.outbound_calls
        ptime_changed = answer.ptime_ms != self.ptime_ms
        self.answer = answer
        self.ptime_ms = answer.ptime_ms
        self.send_ptime_ms = answer.send_ptime_ms
        self.telephone_event_pt = answer.telephone_event_pt
        self.send_enabled = answer.direction in ("sendrecv", "sendonly")
        self.recv_enabled = answer.direction in ("sendrecv", "recvonly")
        remote_rtcp = answer.remote_rtp if answer.rtcp_mux else answer.remote_rtcp
        if (answer.remote_rtp, remote_rtcp) != (self.remote_rtp, self.remote_rtcp):
            self._set_remote(answer.remote_rtp, remote_rtcp)
            self._stream_source = None   # the new address is the participant's now
        if self.symmetric is not None:
            # the re-offer's address is the offered one now; consent carries over only for the
            # host media already came from
            self.symmetric.reoffer(self.remote_rtp, self.remote_rtcp)
            if self.symmetric.consented:
                self._set_remote(self.symmetric.rtp, self.symmetric.rtcp)
            self._consented = self.symmetric.consented or time.monotonic() < self.symmetric.start_until
        self._enable_slots()
        self._pack.clear()
        self._configure_dtmf()
        if self._dtmf_out is not None and not self._dtmf_out.active:
            self._dtmf_out = None
        if ptime_changed and self.on_ssrc_change is not None:
            self.on_ssrc_change(self)   # the playout of a new packet size starts afresh

    def new_slot_ssrc(self) -> int:
        """The SSRC of the next further stream (SFU slot) made for this leg: random here; a
        WebRTC leg hands out the ones its answer announced."""
        return secrets.randbits(32)

    def slot_capacity(self, wanted: int) -> int:
        """How many further streams (SFU slots) this leg can carry of the `wanted` ones: all of
        them here (they share the one RTP stream's port); a WebRTC leg as many as its answer has
        slot m-lines."""
        return wanted

    # ------------------------------------------------------------------------------ media consent
    def _media_arrived(self, addr: tuple, rtcp: bool) -> None:
        """Accepted media from `addr`: tell SymmetricRtp (once per new source address), follow
        the destination it chooses, and start sending once an address has consented."""
        symmetric = self.symmetric
        if rtcp:
            if not symmetric.on_media(addr, True, self.srtp is not None):
                return
        else:
            self._media_from = addr
            if not symmetric.on_media(addr, False, self.srtp is not None):
                return
        self._set_remote(symmetric.rtp, symmetric.rtcp)
        if not self._consented or not all(getattr(s, "enabled", True) == self.send_enabled
                                          for s in self.extra_streams.values()):
            self._consented = True
            self._enable_slots()

    @property
    def media_consented(self) -> bool:
        """Whether media has come from an address this leg now sends to (always, for a leg
        without the plain leg's rule: a fork's, a WebRTC one's)."""
        return self.symmetric is None or self.symmetric.consented

    def _enable_slots(self) -> None:
        for slot in self.extra_streams.values():
            if isinstance(slot, SlotSender):
                slot.enabled = self.send_enabled and self._consented

    def _check_unconfirmed_start(self, now_s: float) -> None:
        """The unconfirmed start (`unconfirmed_send_s`) ends without consent: stop sending."""
        symmetric = self.symmetric
        if symmetric is not None and self._consented and not symmetric.consented \
                and now_s >= symmetric.start_until:
            self._consented = False
            self._enable_slots()

    # ------------------------------------------------------------------------------------- receive
    def _on_oversized(self, count: int) -> None:
        # larger than any RTP/RTCP/STUN datagram on a media port (2 KB): the socket layer
        # truncated and dropped it before it got here
        self.drops["oversized"] += count

    def _on_rtp_port(self, data: bytes, addr: tuple, arrival_s: float) -> None:
        self._on_datagram(data, addr, False, arrival_s)

    def _on_rtcp_port(self, data: bytes, addr: tuple, arrival_s: float) -> None:
        self._on_datagram(data, addr, True, arrival_s)

    def _on_datagram(self, data: bytes, addr: tuple, rtcp_port: bool, arrival_s: float | None = None) -> None:
        """One datagram from the socket; `arrival_s` is the kernel's receive time (monotonic
        seconds): after a stall of this process it is earlier than now, and the jitter buffer and
        staleness checks need the real time."""
        now = time.monotonic() if arrival_s is None else arrival_s
        # the participant's budget is for where we send; a separate sender process on another
        # port of its host shares the strangers' (docs/security.md)
        known = addr == self.remote_rtp or addr == self.remote_rtcp
        if not (self._peer_budget if known else self._stranger_budget).take(now):
            self.drops["rate_limited"] += 1
            return
        if rtcp_port or (self.rtcp_mux and is_rtcp(data)):
            self._on_rtcp(data, addr)
        else:
            self._on_rtp(data, addr, now)

    def _on_rtp(self, data: bytes, addr: tuple, now: float) -> None:
        if self.srtp is not None:
            data = self.srtp.unprotect(data)
            if data is None:
                self.drops["srtp"] += 1
                return
        try:
            packet = _rtp.RtpPacket.parse(data)
        except _rtp.RtpError:
            self.drops["malformed"] += 1
            return
        arrival_ms = now * 1000.0
        if self.srtp is None and addr != self._stream_source and self._is_stranger(addr, arrival_ms):
            self.drops["stranger"] += 1
            return
        if self.symmetric is not None and addr != self._media_from:
            # consent even from a client we do not take audio from (recvonly): it wants ours
            self._media_arrived(addr, False)
        if not self.recv_enabled:
            self.drops["not_receiving"] += 1
            return
        if packet.payload_type == self.telephone_event_pt:
            self.dtmf_packets += 1
            self._report_digits(self.dtmf.on_packet(packet.payload, packet.timestamp, now))
            return
        if packet.payload_type != self.payload_type:
            self.drops["payload_type"] += 1
            return
        if self.inband_detector is not None:
            keys = self.inband_detector.feed_g711(packet.payload, self.codec == "PCMA")
            if keys:
                self._report_digits([self.dtmf.add_inband(key, round(self.inband_detector.min_tone_ms),
                                                          packet.timestamp) for key in keys])
        if packet.ssrc != self.remote_ssrc:
            first = self.remote_ssrc is None
            self._remember_inbound_ssrc(packet.ssrc)
            self.remote_ssrc = packet.ssrc
            self.receive = ReceiveStatistics(packet.ssrc, self.clock_rate, packet.sequence_number)
            if not first:
                self.ssrc_changes += 1
                if self.on_ssrc_change is not None:
                    self.on_ssrc_change(self)
        self.packets_in += 1
        self.bytes_in += len(data)
        self.last_packet_ms = arrival_ms
        self._stream_source = addr
        # interarrival jitter needs only a steady clock: the monotonic one already read
        self.receive.on_rtp(packet.sequence_number, packet.timestamp, len(packet.payload), now)
        if self.on_rtp is not None:
            self.on_rtp(self, packet, arrival_ms)

    def _is_stranger(self, addr: tuple, arrival_ms: float) -> bool:
        """Plain RTP from `addr`, not the current stream's source: a stranger injecting or taking
        the leg over (RTP has no authentication; SRTP legs are protected by their key)?

        Another host than the participant's, once the leg knows it (`SymmetricRtp.accepts`): yes,
        for good. Another port of the participant's host (or anyone, before the leg knows who
        the participant is): while the current stream is alive (a packet within STREAM_HOLD_MS);
        a participant whose port really changed is followed once its old stream has been quiet
        that long. The offered host is always the participant's: its media takes over from a
        stream latched to another host."""
        symmetric = self.symmetric
        if symmetric is not None:
            if not symmetric.accepts(addr[0]):
                return True
            source = self._stream_source
            if addr[0] == symmetric.offered_rtp[0] and source is not None \
                    and source[0] != addr[0]:
                return False
        return self._stream_alive(arrival_ms)

    def _stream_alive(self, arrival_ms: float) -> bool:
        return self.last_packet_ms is not None and arrival_ms - self.last_packet_ms < STREAM_HOLD_MS

    def _remember_inbound_ssrc(self, ssrc: int) -> None:
        """Keep SRTP state for the last few peer SSRCs only (see SrtpContext.forget_inbound); a few,
        not one, so that replayed packets of a recent SSRC still meet their replay window."""
        if self.srtp is None:
            return
        self._inbound_ssrcs.pop(ssrc, None)
        self._inbound_ssrcs[ssrc] = True
        while len(self._inbound_ssrcs) > INBOUND_SSRCS_KEPT:
            oldest = next(iter(self._inbound_ssrcs))
            del self._inbound_ssrcs[oldest]
            self.srtp.forget_inbound(oldest)

    def _on_rtcp(self, data: bytes, addr: tuple) -> None:
        if self.srtp is not None:
            data = self.srtp.unprotect_rtcp(data)
            if data is None:
                self.drops["rtcp_srtp"] += 1
                return
        try:
            packets = parse_compound(data)
        except RtcpError:
            self.drops["rtcp_malformed"] += 1
            return
        if self.symmetric is not None:
            if self.srtp is None and not self.symmetric.accepts(addr[0]):
                self.drops["stranger"] += 1  # plain RTCP from another host: a fake BYE, fake RTT
                return
            self._media_arrived(addr, True)
        sender = getattr(packets[0], "ssrc", None) if packets else None
        if sender is not None:
            self._remember_inbound_ssrc(sender)  # SRTCP keeps per-SSRC state too
        learn_from_reports(packets, self.ssrc, self.receive, self.round_trip, time.time())
        for packet in packets:
            if isinstance(packet, RtcpBye) and self.remote_ssrc in packet.sources:
                self.remote_bye = True
            elif isinstance(packet, RtcpNack):
                self.nacks_in += 1
                if self.on_nack is not None:
                    self.on_nack(self, packet)

    # ---------------------------------------------------------------------------------------- send
    def send_payload(self, payload: bytes, tick_ms: float, wall_s: float, marker: bool = False) -> None:
        """Send one 20 ms frame's payload as the next packet of this leg's stream.

        `tick_ms` is the tick's time on the engine clock; the RTP timestamp is derived from it, not
        counted per call (RFC 3550 5.1: the timestamp is the sampling instant). Ticks the clock
        skipped after a stall are then a gap in timestamps, and the first packet after such a gap
        carries the marker bit, while sequence numbers stay continuous (nothing was lost in the
        network). `wall_s` is the tick's time.time(), read once per tick (it dates the stream for
        RTCP sender reports).

        While keys are being sent, this tick's audio is replaced: by the telephone-event packet
        (RFC 4733 2.5.1: the event, not audio, represents the tone) or by the tone itself. A
        G.711 leg whose peer asked for another ptime gets packets of that many ms."""
        if self._ts_origin_ms is None:
            self._ts_origin_ms = tick_ms
        self._ts = (self._ts_base + round((tick_ms - self._ts_origin_ms) * self.clock_rate / 1000.0)) \
            & 0xFFFFFFFF
        if self._last_tick_ms is not None and tick_ms - self._last_tick_ms > 1.5 * FRAME_MS:
            self._pack.clear()   # ticks were skipped: a half-filled packet would span the gap
        self._last_tick_ms = tick_ms
        if self._dtmf_out is not None:
            event = self._dtmf_out.next(self._ts) if isinstance(self._dtmf_out, DtmfSender) \
                else self._dtmf_out.next()
            if event is None:
                if not self._dtmf_out.active:
                    self._dtmf_out = None
            elif isinstance(event, tuple):
                event_payload, event_ts, first = event
                self._pack.clear()
                self._send(self.telephone_event_pt, event_ts, event_payload, first, tick_ms, wall_s)
                return
            else:
                payload = (_g711.ulaw_encode(event) if self.codec == "PCMU"
                           else _g711.alaw_encode(event))
        if self.send_ptime_ms != FRAME_MS:
            self._send_packed(payload, tick_ms, wall_s, marker)
        else:
            self._send(self.payload_type, self._ts, payload, marker, tick_ms, wall_s)

    def _send(self, payload_type: int, timestamp: int, payload: bytes, marker: bool,
              tick_ms: float, wall_s: float) -> None:
        if self.send_enabled and self._rtp.is_open:
            if not self._consented:
                self.withheld += 1      # nobody has shown it wants this stream yet
                self._last_sent_ms = None
                return
            # a gap longer than this leg's packet interval (skipped ticks, or the end of a hold)
            if self._last_sent_ms is not None and \
                    tick_ms - self._last_sent_ms > 1.5 * max(FRAME_MS, self.send_ptime_ms):
                marker = True
                self.send_gaps += 1
            self._last_sent_ms = tick_ms
            packet = _rtp.build_rtp(payload_type, self._seq, timestamp, self.ssrc, payload, marker)
            if self.srtp is not None:
                packet = self.srtp.protect(packet)
            self._rtp.send(packet, self._remote_rtp_packed)
            self.sent.on_sent(len(payload), timestamp, wall_s)
            self._seq = (self._seq + 1) & 0xFFFF

    def _send_packed(self, payload: bytes, tick_ms: float, wall_s: float, marker: bool) -> None:
        """G.711 carries one octet per sample: gather ticks into packets of send_ptime_ms (30 ms
        is one packet on two ticks of three, 10 ms two packets a tick)."""
        if not self._pack:
            self._pack_ts = self._ts
        self._pack += payload
        size = self.clock_rate * self.send_ptime_ms // 1000
        while len(self._pack) >= size:
            self._send(self.payload_type, self._pack_ts, bytes(self._pack[:size]), marker,
                       tick_ms, wall_s)
            marker = False
            del self._pack[:size]
            self._pack_ts = (self._pack_ts + size) & 0xFFFFFFFF

    def stream_position(self) -> tuple[int, int, float] | None:
        """Where our own stream stands: (next sequence number, timestamp of the last packet sent,
        its tick time), or None before the first packet. A relay hands the stream to its
        forwarding path from here, so the receiver sees one continuous stream (`continue_stream`
        hands it back)."""
        if self._last_sent_ms is None:
            return None
        return self._seq, self._ts, self._last_sent_ms

    def continue_stream(self, next_seq: int, timestamp: int, at_ms: float) -> None:
        """Another sender numbered our own stream (same SSRC) up to here: `send_payload` goes on
        with `next_seq`, and with timestamps counted from `timestamp` at engine time `at_ms`, so
        the stream stays continuous across a relay's switch from forwarding to mixing."""
        self._seq = next_seq & 0xFFFF
        self._ts_base = self._ts = timestamp & 0xFFFFFFFF
        self._ts_origin_ms = at_ms
        self._last_sent_ms = None

    def send_nack(self, media_ssrc: int, lost: list[int]) -> None:
        """Ask the far end to resend `lost` packets of its stream (RFC 4585 generic NACK)."""
        self.nacks_out += 1
        self._send_rtcp([*self._reports(time.time()), self._sdes(),
                         RtcpNack(sender_ssrc=self.ssrc, media_ssrc=media_ssrc, lost=lost)])

    def _report_digits(self, digits: list) -> None:
        if self.on_dtmf is not None:
            for digit in digits:
                self.on_dtmf(self, digit)

    def maybe_send_rtcp(self, now_s: float) -> None:
        """RFC 3550 6.2: reports at the configured interval, randomised by 0.5..1.5 (6.3.1).
        (Called every half second: also where a key press whose end packets were lost is closed.)"""
        self._report_digits(self.dtmf.flush(now_s))
        self._check_unconfirmed_start(now_s)
        if now_s < self._next_rtcp_s or not self._rtp.is_open:
            return
        self._next_rtcp_s = now_s + self.settings.rtcp_interval_s * random.uniform(0.5, 1.5)
        self._send_rtcp([*self._reports(time.time()), self._sdes()])

    def _reports(self, wall_s: float) -> list:
        """Our SR (or RR) with the report block on the far end's stream, then one SR per extra
        stream we send (an SFU subscriber's forwarded slots), RFC 3550 section 6.1."""
        blocks = [self.receive.report_block(wall_s)] if self.receive is not None else []
        if self.sent.packets:
            reports = [self.sent.sender_report(self.ssrc, self.clock_rate, wall_s, blocks)]
        else:
            reports = [RtcpReceiverReport(ssrc=self.ssrc, reports=blocks)]
        for ssrc, sent in self.extra_streams.items():
            if sent.packets:
                reports.append(sender_report(sent, ssrc, self.clock_rate, wall_s, []))
        return reports

    def _sdes(self) -> RtcpSdes:
        cname = [(SDES_CNAME, self.cname.encode())]
        return RtcpSdes(chunks=[SdesChunk(ssrc, cname) for ssrc in (self.ssrc, *self.extra_streams)
                                if ssrc == self.ssrc or self.extra_streams[ssrc].packets][:31])

    def _send_rtcp(self, packets: list) -> None:
        if not self._consented:
            return
        data = serialize_compound(packets)
        if self.srtp is not None:
            data = self.srtp.protect_rtcp(data)
        endpoint = self._rtcp if (self._rtcp is not None and not self.rtcp_mux) else self._rtp
        endpoint.send(data, self._remote_rtcp_packed)

    # --------------------------------------------------------------------------------------- stats
    @property
    def transport(self) -> str:
        """The metrics' `transport` label: rtp, sdes (SRTP keyed by SDES), or the leg's kind."""
        kind = getattr(self, "kind", "plain")
        if kind != "plain":
            return kind
        return "sdes" if self.answer.local_crypto is not None else "rtp"

    # Monotonic counters for the engine's metrics: (family, labels) names, and `counter_values()`
    # in the same order. Read at scrape time only (nothing is counted twice per packet); a tuple
    # per leg, so summing 500 legs stays well under a millisecond. A leg kind adds families by
    # extending both.
    COUNTERS: tuple[tuple[str, tuple], ...] = (
        ("packets_received", ()), ("received_bytes", ()), ("packets_sent", ()), ("sent_bytes", ()),
        ("rtcp_nacks_received", ()), ("rtcp_nacks_sent", ()), ("ssrc_changes", ()),
        ("dtmf_packets", ()), ("send_gaps", ()), ("send_dropped", ()),
        ("packets_withheld", ()), ("media_latches", ()),
        *(("packets_dropped", (("reason", reason),)) for reason in DROP_REASONS))

    def counter_values(self) -> tuple[int, ...]:
        extra = self.extra_streams.values()
        return (self.packets_in, self.bytes_in,
                self.sent.packets + sum(s.packets for s in extra) if extra else self.sent.packets,
                self.sent.octets + sum(s.octets for s in extra) if extra else self.sent.octets,
                self.nacks_in, self.nacks_out, self.ssrc_changes, self.dtmf_packets, self.send_gaps,
                self._rtp.send_dropped, self.withheld,
                self.symmetric.latches if self.symmetric is not None else 0, *self.drops.values())

    def counters(self) -> list[tuple[str, tuple, int]]:
        """`COUNTERS` with their values, as (family, labels, value)."""
        return [(family, labels, value)
                for (family, labels), value in zip(self.COUNTERS, self.counter_values())]

    @property
    def packets_out(self) -> int:
        """RTP packets sent: our own stream and any further ones (an SFU subscriber's slots)."""
        return self.sent.packets + sum(s.packets for s in self.extra_streams.values())

    def stats(self) -> dict:
        result = {
            "id": self.id,
            "label": self.label,
            "kind": self.kind,
            "codec": self.codec,
            "payload_type": self.payload_type,
            "local_port": self.local_port,
            "remote_rtp": f"{self.remote_rtp[0]}:{self.remote_rtp[1]}",
            "srtp": self.srtp is not None,
            "muted": self.muted,
            "ssrc": self.ssrc,
            "remote_ssrc": self.remote_ssrc,
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "packets_out": self.packets_out,
            "bytes_out": self.sent.octets + sum(s.octets for s in self.extra_streams.values()),
            "ssrc_changes": self.ssrc_changes,
            "send_gaps": self.send_gaps,
            "dtmf_packets": self.dtmf_packets,
            "dtmf": self.dtmf.stats(),
            "dtmf_inband": self.inband_detector.stats() if self.inband_detector is not None else None,
            "dtmf_sending": self._dtmf_out is not None and self._dtmf_out.active,
            "ptime_ms": self.ptime_ms,
            "send_ptime_ms": self.send_ptime_ms,
            "direction": self.answer.direction,
            "nacks_in": self.nacks_in,
            "nacks_out": self.nacks_out,
            "remote_bye": self.remote_bye,
            "drops": dict(self.drops),
            "media_consent": ({**self.symmetric.stats(), "withheld": self.withheld}
                              if self.symmetric is not None else None),
            "receive": self.receive.stats() if self.receive is not None else None,
            "rtcp": self.round_trip.stats(),
        }
        if self.srtp is not None:
            result["srtp_stats"] = self.srtp.stats()
        result["transport"] = self._rtp.stats()
        return result
