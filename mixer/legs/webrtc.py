"""The WebRTC kind of leg: ICE-lite + DTLS-SRTP on one port, then the plain leg's media path.

A `WebRtcLeg` is a `MediaLeg` whose socket also carries STUN and DTLS (RFC 7983 demultiplexing on
the first byte, `mixer.legs.demux`). STUN goes to the leg's `IceLiteAgent` (checks answered,
nominations taken, consent kept), DTLS to its `DtlsSrtpTransport` (accepted only from an address a
valid check came from), and SRTP/SRTCP, once DTLS has keyed the leg, to the very same receive path
as an SDES leg (`MediaLeg._on_rtp` / `_on_rtcp`, the same `SrtpContext` and libsrtp calls), so the
per-packet cost is the same as an SDES leg's. Media is sent to the newest nominated address while
consent holds (RFC 7675), through the same send path and batched flushes.

States: new (nothing yet) -> connecting (a valid check came) -> connected (nominated, keyed,
consent) <-> disconnected (consent lost); failed (DTLS failed, or nothing connected within
`webrtc_connect_timeout_s`) and closed (the peer sent close_notify) are final: the leg sends nothing
more and its state and reason are in `stats()`; `on_state(leg)` tells the engine, which counts them.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from mixer._forward import SlotSender, StreamRewriter
from mixer.legs.demux import DTLS, RTP, STUN, KIND_BY_FIRST_BYTE
from mixer.legs.dtls import DtlsCertificate, DtlsSrtpTransport
from mixer.legs.ice import CHECK_ERRORS, IceCredentials, IceLiteAgent
from mixer.legs.leg import MediaLeg
from mixer.legs.transport import SendFlusher, pack
from mixer.rtp.rtcp import is_rtcp
from mixer.rtp.srtp import SrtpContext
from mixer.sdp.webrtc import WebRtcAnswer
from mixer.settings import EngineSettings

log = logging.getLogger("voicemix.engine")

# Reasons a datagram is dropped on a WebRTC leg, beyond the plain leg's (counted in stats()["drops"])
WEBRTC_DROP_REASONS = ("stun", "dtls_unvalidated", "not_keyed", "demux")
FINAL_STATES = ("failed", "closed")
# why a leg failed (`WebRtcLeg.failure`); any other reason is counted as "other"
FAILURE_REASONS = ("ice_timeout", "dtls_timeout", "dtls_fingerprint_mismatch", "dtls_handshake_error",
                   "dtls_no_srtp_profile", "other")


class WebRtcLeg(MediaLeg):
    """A browser's (or any WebRTC peer's) leg: one port, ICE-lite, DTLS-SRTP, rtcp-mux, BUNDLE."""

    kind = "webrtc"
    COUNTERS = (*MediaLeg.COUNTERS,
                *(("packets_dropped", (("reason", reason),)) for reason in WEBRTC_DROP_REASONS),
                *(("ice_check_errors", (("reason", reason),)) for reason in CHECK_ERRORS),
                ("ice_consent_losses", ()), ("dtls_handshakes", ()),
                *(("webrtc_failures", (("reason", reason),)) for reason in FAILURE_REASONS))

    def __init__(self, leg_id: str, answer: WebRtcAnswer, rtp_socket: socket.socket,
                 settings: EngineSettings, certificate: DtlsCertificate,
                 profiles: tuple[str, ...], label: str | None = None,
                 flusher: SendFlusher | None = None, retransmits: bool = False,
                 on_state: Callable[[WebRtcLeg], None] | None = None) -> None:
        super().__init__(leg_id, answer, rtp_socket, None, settings, label, flusher, retransmits)
        self.ssrc = answer.local_ssrc
        self.cname = answer.cname
        self.certificate = certificate
        self.profiles = profiles
        self.on_state = on_state
        self.state = "new"
        self.failure: str | None = None
        self.created_s = time.monotonic()
        self.connected_ms: float | None = None      # leg creation -> first keyed and nominated
        self._main_sends = answer.main_sends
        self._ready = False
        self.send_enabled = False
        self._slots: list[SlotSender] = []
        self._slot_ssrcs = list(answer.slot_ssrcs)
        self._slots_made = 0
        self._dtls_peer: tuple | None = None
        self._disconnected_s = 0.0
        self._connect_timer: asyncio.TimerHandle | None = None
        for reason in WEBRTC_DROP_REASONS:
            self.drops[reason] = 0
        self.ice = IceLiteAgent(IceCredentials(answer.local_ice.ufrag, answer.local_ice.pwd),
                                IceCredentials(answer.remote_ice.ufrag, answer.remote_ice.pwd),
                                settings.ice_consent_timeout_s)
        self.dtls = self._new_dtls(answer)
        self.dtls_restarts = 0
        self.dtls_handshakes = 0
        self.failures = dict.fromkeys(FAILURE_REASONS, 0)

    def _new_dtls(self, answer: WebRtcAnswer) -> DtlsSrtpTransport:
        return DtlsSrtpTransport(
            self.certificate, server=answer.dtls_server,
            remote_fingerprints=[(f.algorithm, f.value) for f in answer.remote_fingerprints],
            send=self._send_dtls, on_state=self._on_dtls_state, profiles=self.profiles,
            mtu=self.settings.dtls_mtu)

    # ---------------------------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        await super().open()
        self.dtls._loop = self._rtp.loop
        self._connect_timer = self._rtp.loop.call_later(self.settings.webrtc_connect_timeout_s,
                                                        self._connect_timeout)

    def close(self, send_bye: bool = True) -> None:
        self._cancel_connect_timer()
        if self._rtp.is_open:
            self.dtls.close()  # close_notify, queued before the socket's last flush
        else:
            self.dtls.fail("closed")
        super().close(send_bye)
        self._ready = False
        self.send_enabled = False

    def _cancel_connect_timer(self) -> None:
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None

    def _connect_timeout(self) -> None:
        self._connect_timer = None
        if self.srtp is None and self.state not in FINAL_STATES:
            self._fail("ice_timeout" if not self.ice.validated else "dtls_timeout")
            self.dtls.fail("timeout")

    def _fail(self, reason: str) -> None:
        if self.state in FINAL_STATES:
            return
        self._cancel_connect_timer()
        self.state = "failed"
        self.failure = reason
        self.failures[reason if reason in self.failures else "other"] += 1
        self._update_sending(time.monotonic())
        log.warning("leg %s: WebRTC failed (%s)", self.id, reason)
        if self.on_state is not None:
            self.on_state(self)

    # ----------------------------------------------------------------------------------- slots
    def new_slot_ssrc(self) -> int:
        ssrc = self._slot_ssrcs[self._slots_made]
        self._slots_made += 1
        return ssrc

    def slot_capacity(self, wanted: int) -> int:
        return min(wanted, len(self._slot_ssrcs))

    def slot_sender(self, rewriter: StreamRewriter) -> SlotSender:
        slot = super().slot_sender(rewriter)
        slot.enabled = self._ready
        self._slots.append(slot)
        return slot

    # ------------------------------------------------------------------------------------ receive
    def _on_datagram(self, data: bytes, addr: tuple, rtcp_port: bool,
                     arrival_s: float | None = None) -> None:
        now = time.monotonic() if arrival_s is None else arrival_s
        known = addr == self.remote_rtp
        if not (self._peer_budget if known else self._stranger_budget).take(now):
            self.drops["rate_limited"] += 1
            return
        kind = KIND_BY_FIRST_BYTE[data[0]] if data else -1
        if kind == RTP:
            if self.srtp is None:
                self.drops["not_keyed"] += 1   # media before DTLS finished: nothing to check it with
            elif is_rtcp(data):
                self._on_rtcp(data, addr)
            else:
                self._on_rtp(data, addr, now)
        elif kind == STUN:
            self._on_stun(data, addr, now)
        elif kind == DTLS:
            if self.ice.is_validated(addr):
                self._dtls_peer = addr
                self.dtls.receive(data)
            else:
                self.drops["dtls_unvalidated"] += 1
        else:
            self.drops["demux"] += 1

    def _on_stun(self, data: bytes, addr: tuple, now: float) -> None:
        selected = self.ice.selected
        checks, errors = self.ice.checks, self.ice.error_count
        response = self.ice.receive(data, addr, now)
        if response is not None:
            self._rtp.send(response, pack(addr))
        if self.ice.checks == checks:
            if self.ice.error_count != errors:
                self.drops["stun"] += 1  # malformed, unauthenticated, ...: by kind in the ICE stats
            return
        if self.state == "new":
            self.state = "connecting"
        if self.ice.selected != selected:
            self._set_remote(self.ice.selected, self.ice.selected)
            log.info("leg %s: ICE selected %s:%d", self.id, *self.ice.selected)
        if not self.dtls.server and self.dtls.state == "new":
            self._dtls_peer = addr
            self.dtls.start()  # we are active (the offer said passive): our ClientHello goes first
        self._update_sending(now)

    def _send_dtls(self, datagram: bytes) -> None:
        peer = self._dtls_peer or self.ice.selected
        if peer is not None:
            self._rtp.send(datagram, pack(peer))

    def _on_dtls_state(self, transport: DtlsSrtpTransport) -> None:
        if transport is not self.dtls:
            return  # an association replaced by a re-offer
        if transport.state == "connected":
            keys = transport.keys
            self.srtp = SrtpContext(keys.suite, keys.local_key, keys.remote_key,
                                    allow_repeat_tx=self.retransmits)
            self._inbound_ssrcs.clear()
            self.dtls_handshakes += 1
            calls = self.srtp.outbound_calls
            for slot in self._slots:
                slot.srtp = calls
            log.info("leg %s: DTLS connected (%s, %s, %.1f ms)", self.id, transport.protocol,
                     keys.profile, transport.handshake_ms or 0.0)
        elif transport.state == "failed":
            self._fail(f"dtls_{transport.failure}")
            return
        elif transport.state == "closed" and self.state not in FINAL_STATES:
            self.state = "closed"
            self.failure = transport.failure
            log.info("leg %s: the peer closed DTLS", self.id)
            if self.on_state is not None:
                self.on_state(self)
        self._update_sending(time.monotonic())

    def _update_sending(self, now: float) -> None:
        """Send only when keyed, nominated, with consent (RFC 7675), and not failed or closed."""
        ready = (self.srtp is not None and self.state not in FINAL_STATES and self._rtp.is_open
                 and self.ice.consent(now))
        if ready and self.state != "connected":
            first = self.connected_ms is None
            self.state = "connected"
            if first:
                self.connected_ms = (now - self.created_s) * 1000.0
                self._cancel_connect_timer()
                if self.on_state is not None:
                    self.on_state(self)
        elif not ready and self.state == "connected":
            self.state = "disconnected"
            self._disconnected_s = now
            log.warning("leg %s: ICE consent lost, not sending", self.id)
        elif (self.state == "disconnected" and now - self._disconnected_s
              > self.settings.webrtc_connect_timeout_s):
            # a peer gone without a goodbye (a closed tab): consent lost, no check since
            self._fail("ice_disconnected")
            return
        if ready != self._ready:
            self._ready = ready
            for slot in self._slots:
                slot.enabled = ready
        self.send_enabled = ready and self._main_sends

    # --------------------------------------------------------------------------------------- send
    def _send_rtcp(self, packets: list) -> None:
        if self._ready:
            super()._send_rtcp(packets)

    def maybe_send_rtcp(self, now_s: float) -> None:
        self._update_sending(time.monotonic())
        super().maybe_send_rtcp(now_s)

    # ----------------------------------------------------------------------------------- re-offer
    def apply_answer(self, answer: WebRtcAnswer) -> None:
        """Take a re-offer's answer (same codec and payload type, checked by the engine): an ICE
        restart when the remote credentials changed, a new DTLS association when the peer's
        fingerprint or our role changed, and the new direction."""
        previous = self.answer
        if answer.remote_ice != previous.remote_ice:
            self.ice.restart(IceCredentials(answer.local_ice.ufrag, answer.local_ice.pwd),
                             IceCredentials(answer.remote_ice.ufrag, answer.remote_ice.pwd))
            log.info("leg %s: ICE restart", self.id)
        if (answer.remote_fingerprints != previous.remote_fingerprints
                or answer.dtls_server != previous.dtls_server):
            # new keys: the old SRTP context serves until the new handshake completes
            self.dtls.close()
            self.dtls = self._new_dtls(answer)
            self.dtls._loop = self._rtp.loop
            self.dtls_restarts += 1
            if self.state in FINAL_STATES:
                self.state, self.failure = "connecting", None
            if not self.dtls.server and self.ice.selected is not None:
                self._dtls_peer = self.ice.selected
                self.dtls.start()
        self.answer = answer
        self._main_sends = answer.main_sends
        self.recv_enabled = answer.direction in ("sendrecv", "recvonly")
        self._update_sending(time.monotonic())

    # -------------------------------------------------------------------------------------- stats
    def counter_values(self) -> tuple[int, ...]:
        # MediaLeg's values end with every reason of `self.drops`, the WebRTC ones included
        return (*super().counter_values(), *self.ice.errors.values(), self.ice.consent_losses,
                self.dtls_handshakes, *self.failures.values())

    def stats(self) -> dict:
        result = super().stats()
        result["webrtc"] = {
            "state": self.state,
            "failure": self.failure,
            "connected_ms": round(self.connected_ms, 1) if self.connected_ms is not None else None,
            "ice": self.ice.stats(time.monotonic()),
            "dtls": self.dtls.stats(),
            "dtls_restarts": self.dtls_restarts,
            "slot_ssrcs": list(self._slot_ssrcs),
        }
        return result
