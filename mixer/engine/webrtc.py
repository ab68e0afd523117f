"""The engine's side of WebRTC legs: its DTLS certificate, answers to WebRTC offers and re-offers,
and counters over all of its WebRTC legs (connections, failures by reason, handshake times).

One ECDSA P-256 certificate per engine (made at the first WebRTC leg, renewed a day before it
expires); each leg gets fresh ICE credentials; the answer (`mixer.sdp.webrtc.answer_webrtc`) names
the leg's port on every advertised address (`VOICEMIX_MEDIA_PUBLIC_IP`, else `VOICEMIX_MEDIA_IP`).
"""
from __future__ import annotations

import datetime
import logging
import socket
from collections import Counter

import numpy as np

from mixer.legs.dtls import DtlsCertificate, parse_profiles
from mixer.legs.ice import IceCredentials
from mixer.legs.transport import SendFlusher
from mixer.legs.webrtc import WebRtcLeg
from mixer.sdp.offer_answer import DEFAULT_CODECS, SdpNotAcceptable
from mixer.sdp.session import SessionDescription
from mixer.sdp.webrtc import DtlsFingerprint, IceParameters, WebRtcAnswer, answer_webrtc
from mixer.settings import EngineSettings

log = logging.getLogger("voicemix.engine")

CERTIFICATE_RENEW_BEFORE = datetime.timedelta(days=1)
HANDSHAKE_WINDOW = 1000  # handshake times kept for p50/p99


class WebRtcLegs:
    """Makes WebRTC legs for the engine and counts what happens to them."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.profiles = parse_profiles(settings.webrtc_srtp_profiles)
        self._certificate: DtlsCertificate | None = None
        self.legs_created = 0
        self.connected = 0
        self.closed_by_peer = 0
        self.failures: Counter[str] = Counter()
        self.reoffers = 0
        self.ice_restarts = 0
        self._handshake_ms = np.zeros(HANDSHAKE_WINDOW, dtype=np.float32)
        self._connect_ms = np.zeros(HANDSHAKE_WINDOW, dtype=np.float32)

    @property
    def certificate(self) -> DtlsCertificate:
        now = datetime.datetime.now(datetime.timezone.utc)
        if self._certificate is None or self._certificate.expires_at - now < CERTIFICATE_RENEW_BEFORE:
            self._certificate = DtlsCertificate.generate()
            log.info("DTLS certificate made (ECDSA P-256, sha-256 %s)", self._certificate.fingerprint)
        return self._certificate

    def _answer(self, conference, offer: SessionDescription, port: int,
                local_ice: IceCredentials, **keep) -> WebRtcAnswer:
        return answer_webrtc(
            offer, addresses=self.settings.advertised_addresses, local_port=port,
            local_ice=IceParameters(local_ice.ufrag, local_ice.pwd),
            local_fingerprint=DtlsFingerprint("sha-256", self.certificate.fingerprint),
            codecs=getattr(conference, "codecs", DEFAULT_CODECS),
            slots=getattr(conference, "slots_per_leg", 0), **keep)

    def new_leg(self, leg_id: str, conference, offer: SessionDescription, rtp_socket: socket.socket,
                label: str | None, flusher: SendFlusher) -> WebRtcLeg:
        """The answer and the leg (not yet open); SdpError/SdpNotAcceptable for a bad offer."""
        port = rtp_socket.getsockname()[1]
        answer = self._answer(conference, offer, port, IceCredentials.generate())
        leg = WebRtcLeg(leg_id, answer, rtp_socket, self.settings, self.certificate, self.profiles,
                        label, flusher, retransmits=getattr(conference, "retransmits", False),
                        on_state=self._on_state)
        self.legs_created += 1
        return leg

    def reoffer(self, leg: WebRtcLeg, offer: SessionDescription) -> None:
        """Answer a re-offer on `leg` and apply it: new local ICE credentials when the peer's
        changed (ICE restart), the same port, SSRCs, slots and codec."""
        previous: WebRtcAnswer = leg.answer
        probe = self._answer_keeping(leg, offer, IceCredentials(previous.local_ice.ufrag,
                                                                previous.local_ice.pwd))
        if probe.remote_ice != previous.remote_ice:
            probe = self._answer_keeping(leg, offer, IceCredentials.generate())
            self.ice_restarts += 1
        if (probe.codec, probe.payload_type) != (leg.codec, leg.payload_type):
            raise SdpNotAcceptable("codec_change", f"the leg runs {leg.codec}/{leg.payload_type}; "
                                                   "a re-offer cannot change it")
        leg.apply_answer(probe)
        self.reoffers += 1

    def _answer_keeping(self, leg: WebRtcLeg, offer: SessionDescription,
                        local_ice: IceCredentials) -> WebRtcAnswer:
        previous: WebRtcAnswer = leg.answer
        return self._answer(
            _Slots(len(previous.slot_ssrcs), leg), offer, leg.local_port, local_ice,
            ssrc=previous.local_ssrc, cname=previous.cname, slot_ssrcs=previous.slot_ssrcs,
            session_id=previous.description.origin.session_id,
            session_version=previous.description.origin.session_version + 1)

    def _on_state(self, leg: WebRtcLeg) -> None:
        if leg.state == "connected":
            self.connected += 1
            slot = (self.connected - 1) % HANDSHAKE_WINDOW
            self._connect_ms[slot] = leg.connected_ms or 0.0
            self._handshake_ms[slot] = leg.dtls.handshake_ms or 0.0
        elif leg.state == "failed":
            self.failures[leg.failure or "unknown"] += 1
        elif leg.state == "closed":
            self.closed_by_peer += 1

    def stats(self) -> dict:
        n = min(self.connected, HANDSHAKE_WINDOW)

        def pct(values: np.ndarray, q: float) -> float | None:
            return round(float(np.percentile(values[:n], q)), 2) if n else None
        return {
            "legs_created": self.legs_created,
            "connected": self.connected,
            "closed_by_peer": self.closed_by_peer,
            "failures": dict(self.failures),
            "reoffers": self.reoffers,
            "ice_restarts": self.ice_restarts,
            "dtls_handshake_ms_p50": pct(self._handshake_ms, 50),
            "dtls_handshake_ms_p99": pct(self._handshake_ms, 99),
            "connect_ms_p50": pct(self._connect_ms, 50),
            "connect_ms_p99": pct(self._connect_ms, 99),
            "certificate_fingerprint": self._certificate.fingerprint if self._certificate else None,
        }


class _Slots:
    """A re-offer is answered with the slots the leg already has (its conference made them)."""

    def __init__(self, slots: int, leg: WebRtcLeg) -> None:
        self.slots_per_leg = slots
        self.codecs = (leg.codec,)

