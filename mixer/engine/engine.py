"""The media engine: conferences, their legs' UDP ports, and the 20 ms clock that drives them.

This is the control API in-process (the HTTP control server in `control.py` is a thin shell over
these methods). All methods run on the engine's event loop.
"""
from __future__ import annotations

import logging
import secrets
import time

from mixer.engine.clock import TickClock
from mixer.engine.webrtc import WebRtcLegs
from mixer.legs.leg import MediaLeg
from mixer.legs.ports import PortAllocator, PortsExhausted
from mixer.legs.transport import SendFlusher
from mixer.mcu.conference import McuConference
from mixer.sdp.offer_answer import DEFAULT_CODECS
from mixer.sdp.webrtc import is_webrtc_offer
from mixer.sfu.conference import SfuConference
from mixer.sdp import SdpError, answer_audio, parse
from mixer.settings import EngineSettings

log = logging.getLogger("voicemix.engine")



class EngineError(Exception):
    """A control request the engine refuses; `status` is the HTTP status the control API answers."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Engine:
    """Hosts conferences on one event loop. Start with `start()`, stop with `stop()`.

    `conference_types` maps a mode name to its conference class; benchmarks register baselines here.
    """

    conference_types: dict[str, type] = {"mcu": McuConference, "sfu": SfuConference}

    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()
        self.ports = PortAllocator(*self.settings.port_range)
        self.conferences: dict[str, McuConference | SfuConference] = {}
        self.clock = TickClock(self._tick)
        self.flusher = SendFlusher()  # one sendmmsg flush per socket per loop turn, for every leg
        self.webrtc = WebRtcLegs(self.settings)  # the DTLS certificate, ICE/DTLS answers, counters
        self.started_at: float | None = None
        self.legs_created = 0
        self.legs_removed = 0

    # ---------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.clock.start()
        self.started_at = time.time()

    def stop(self) -> None:
        self.clock.stop()
        for conference_id in list(self.conferences):
            self.delete_conference(conference_id)

    def _tick(self, now_ms: float) -> None:
        for conference in list(self.conferences.values()):
            conference.tick(now_ms)

    # -------------------------------------------------------------------------------- conferences
    def create_conference(self, mode: str = "mcu", conference_id: str | None = None) -> dict:
        conference_type = self.conference_types.get(mode)
        if conference_type is None:
            raise EngineError(400, "unsupported_mode", f"mode {mode!r} is not available "
                              f"(supported: {', '.join(self.conference_types)})")
        if len(self.conferences) >= self.settings.max_conferences:
            raise EngineError(503, "too_many_conferences", "the engine hosts its maximum")
        conference_id = conference_id or secrets.token_hex(8)
        if not (0 < len(conference_id) <= 64 and conference_id.replace("-", "").replace("_", "").isalnum()):
            raise EngineError(400, "bad_id", "conference ids are 1..64 of [A-Za-z0-9_-]")
        if conference_id in self.conferences:
            raise EngineError(409, "conference_exists", f"conference {conference_id} exists")
        self.conferences[conference_id] = conference_type(conference_id, self.settings)
        log.info("conference %s created (mode %s)", conference_id, mode)
        return {"id": conference_id, "mode": mode}

    def get_conference(self, conference_id: str) -> dict:
        conference = self._conference(conference_id)
        return {
            "id": conference.id,
            "mode": conference.mode,
            "legs": [conference.leg_stats(leg_id) for leg_id in conference.voices],
            "stats": conference.stats(),
        }

    def delete_conference(self, conference_id: str) -> None:
        conference = self._conference(conference_id)
        for leg_id in list(conference.voices):
            self.remove_leg(conference_id, leg_id)
        del self.conferences[conference_id]
        log.info("conference %s deleted", conference_id)

    def _conference(self, conference_id: str) -> McuConference:
        conference = self.conferences.get(conference_id)
        if conference is None:
            raise EngineError(404, "no_such_conference", f"no conference {conference_id}")
        return conference

    # --------------------------------------------------------------------------------------- legs
    async def add_leg(self, conference_id: str, offer_sdp: str, label: str | None = None) -> dict:
        """Answer an SDP offer with a new leg on its own UDP port; returns {"id", "sdp"}."""
        conference = self._conference(conference_id)
        if len(conference.voices) >= self.settings.max_legs_per_conference:
            raise EngineError(409, "conference_full", "the conference has its maximum of legs")
        try:
            offer = parse(offer_sdp)
        except SdpError as exc:
            raise EngineError(400, "bad_sdp", str(exc)) from exc
        if is_webrtc_offer(offer):
            return await self._add_webrtc_leg(conference, offer, label)
        audio = next((m for m in offer.media if m.media == "audio"), None)
        wants_mux = audio is not None and audio.rtcp_mux
        try:
            rtp_socket, rtcp_socket = self.ports.allocate(self.settings.media_ip, not wants_mux)
        except PortsExhausted as exc:
            raise EngineError(503, "no_ports", str(exc)) from exc
        port = rtp_socket.getsockname()[1]
        try:
            answer = answer_audio(offer, local_ip=self.settings.advertised_addresses[0], local_port=port,
                                  codecs=getattr(conference, "codecs", DEFAULT_CODECS),
                                  srtp_required=self.settings.srtp_required)
        except SdpError as exc:
            self._release(port, rtp_socket, rtcp_socket)
            code = getattr(exc, "code", "bad_sdp")
            raise EngineError(488 if code != "bad_sdp" else 400, code, str(exc)) from exc
        leg_id = secrets.token_hex(6)
        leg = MediaLeg(leg_id, answer, rtp_socket, rtcp_socket, self.settings, label, self.flusher,
                       retransmits=getattr(conference, "retransmits", False))
        try:
            await leg.open()
        except OSError as exc:
            self._release(port, rtp_socket, rtcp_socket)
            raise EngineError(503, "socket_error", str(exc)) from exc
        conference.add_leg(leg)
        self.legs_created += 1
        log.info("leg %s joined %s on %s:%d (%s%s)", leg_id, conference_id, self.settings.media_ip,
                 port, answer.codec, ", SRTP" if leg.srtp else "")
        return {"id": leg_id, "sdp": answer.sdp}

    async def _add_webrtc_leg(self, conference, offer, label: str | None) -> dict:
        """A WebRTC leg: one port (rtcp-mux) carrying ICE, DTLS and SRTP (`mixer.engine.webrtc`)."""
        try:
            rtp_socket, _ = self.ports.allocate(self.settings.media_ip, False)
        except PortsExhausted as exc:
            raise EngineError(503, "no_ports", str(exc)) from exc
        port = rtp_socket.getsockname()[1]
        leg_id = secrets.token_hex(6)
        try:
            leg = self.webrtc.new_leg(leg_id, conference, offer, rtp_socket, label, self.flusher)
        except SdpError as exc:
            self._release(port, rtp_socket)
            code = getattr(exc, "code", "bad_sdp")
            raise EngineError(488 if code != "bad_sdp" else 400, code, str(exc)) from exc
        try:
            await leg.open()
        except OSError as exc:
            self._release(port, rtp_socket)
            raise EngineError(503, "socket_error", str(exc)) from exc
        conference.add_leg(leg)
        self.legs_created += 1
        log.info("leg %s joined %s on %s:%d (%s, WebRTC)", leg_id, conference.id,
                 self.settings.media_ip, port, leg.codec)
        return {"id": leg_id, "sdp": leg.answer.sdp}

    async def reoffer_leg(self, conference_id: str, leg_id: str, offer_sdp: str) -> dict:
        """A new offer on an existing leg (RFC 3264 section 8): ICE restart, a new DTLS
        fingerprint, a direction change (hold), a new address; the same port, SSRCs and codec.
        Returns {"id", "sdp": answer}."""
        conference = self._conference(conference_id)
        leg = self._leg(conference, leg_id)
        try:
            offer = parse(offer_sdp)
        except SdpError as exc:
            raise EngineError(400, "bad_sdp", str(exc)) from exc
        try:
            if leg.kind == "webrtc":
                if not is_webrtc_offer(offer):
                    raise EngineError(488, "transport_change", "a WebRTC leg's re-offer must stay "
                                      "UDP/TLS/RTP/SAVPF (make a new leg to change transport)")
                self.webrtc.reoffer(leg, offer)
            else:
                if is_webrtc_offer(offer):
                    raise EngineError(488, "transport_change", "a plain leg cannot become WebRTC "
                                      "by re-offer (make a new leg)")
                self._reoffer_plain(conference, leg, offer)
        except SdpError as exc:
            code = getattr(exc, "code", "bad_sdp")
            raise EngineError(488 if code != "bad_sdp" else 400, code, str(exc)) from exc
        log.info("leg %s of %s re-offered", leg_id, conference_id)
        return {"id": leg_id, "sdp": leg.answer.sdp}

    def _reoffer_plain(self, conference, leg: MediaLeg, offer) -> None:
        """Plain/SDES re-offer: new remote address or direction (hold); the codec stays; a new
        SDES key from the peer re-keys the inbound side, ours is kept (RFC 4568 7.1.4 allows)."""
        answer = answer_audio(offer, local_ip=self.settings.advertised_addresses[0],
                              local_port=leg.local_port,
                              codecs=getattr(conference, "codecs", DEFAULT_CODECS),
                              srtp_required=self.settings.srtp_required,
                              local_crypto=leg.answer.local_crypto)
        if (answer.codec, answer.payload_type) != (leg.codec, leg.payload_type):
            raise EngineError(488, "codec_change", f"the leg runs {leg.codec}/{leg.payload_type}; a "
                              "re-offer cannot change it (make a new leg)")
        if answer.rtcp_mux != leg.rtcp_mux:
            raise EngineError(488, "rtcp_mux_change", "a re-offer cannot change rtcp-mux")
        if (answer.remote_crypto is None) != (leg.srtp is None):
            raise EngineError(488, "srtp_change", "a re-offer cannot turn SRTP on or off")
        leg.apply_answer(answer)

    def update_leg(self, conference_id: str, leg_id: str, muted: bool | None = None) -> dict:
        conference = self._conference(conference_id)
        leg = self._leg(conference, leg_id)
        if muted is not None:
            leg.muted = muted
        return conference.leg_stats(leg_id)

    def remove_leg(self, conference_id: str, leg_id: str) -> None:
        conference = self._conference(conference_id)
        self._leg(conference, leg_id)
        leg = conference.remove_leg(leg_id)
        leg.close()
        self.ports.release(leg.local_port)
        self.legs_removed += 1
        log.info("leg %s left %s", leg_id, conference_id)

    @staticmethod
    def _leg(conference: McuConference, leg_id: str) -> MediaLeg:
        voice = conference.voices.get(leg_id)
        if voice is None:
            raise EngineError(404, "no_such_leg", f"no leg {leg_id} in conference {conference.id}")
        return voice.leg

    def _release(self, port: int, *sockets) -> None:
        for sock in sockets:
            if sock is not None:
                sock.close()
        self.ports.release(port)

    # -------------------------------------------------------------------------------------- stats
    def stats(self) -> dict:
        packets_in = packets_out = 0
        drops: dict[str, int] = {}
        legs = 0
        for conference in self.conferences.values():
            for leg in conference.legs.values():
                legs += 1
                packets_in += leg.packets_in
                packets_out += leg.packets_out
                for reason, count in leg.drops.items():
                    drops[reason] = drops.get(reason, 0) + count
        return {
            **self.clock.stats(),
            "uptime_s": round(time.time() - self.started_at, 3) if self.started_at else 0.0,
            "conferences": len(self.conferences),
            "legs": legs,
            "legs_created": self.legs_created,
            "legs_removed": self.legs_removed,
            "ports_in_use": self.ports.in_use,
            "packets_in": packets_in,
            "packets_out": packets_out,
            "drops": drops,
            "webrtc": self.webrtc.stats(),
        }
