"""The media engine: conferences, their legs' UDP ports, and the 20 ms clock that drives them.

This is the control API in-process (the HTTP control server in `control.py` is a thin shell over
these methods). All methods run on the engine's event loop.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import socket
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mixer.codec import FRAME_MS
from mixer.engine.clock import TickClock
from mixer.engine.drain import Drain
from mixer.engine.errors import EngineError
from mixer.engine.warmup import warm_media_paths
from mixer.engine.webrtc import WebRtcLegs
from mixer.legs.leg import MediaLeg
from mixer.legs.ports import PortAllocator, PortsExhausted
from mixer.legs.transport import SendFlusher
from mixer.mcu.conference import McuConference
from mixer.metrics import RetiredCounters
from mixer.codec import OpusSettings
from mixer.media.fork import MIX, DestinationError, Fork, parse_destination
from mixer.media.player import PLAYING, Player, PlayerError, ToneSource, open_file
from mixer.media.recorder import (
    METADATA_FILE, Recording, RecordingError, read_metadata, repair_recording,
)
from mixer.media.services import ConferenceMedia
from mixer.rtp.dtmf import Digit, DtmfError
from mixer.sdp.offer_answer import DEFAULT_CODECS
from mixer.sdp.webrtc import is_webrtc_offer
from mixer.relay.conference import RelayConference
from mixer.sfu.conference import SfuConference
from mixer.sdp import (
    AudioAnswer, SdpError, accept_answer, answer_audio, generate_crypto, offer_audio, parse,
)
from mixer.sdp.stream import STREAM_PAYLOAD_TYPES, describe_stream
from mixer.settings import EngineSettings
from mixer.turn.peers import PeerFilter
from mixer.voice import VoiceProcessingError
from mixer.voice.denoise import available as denoise_available
from mixer.voice.personal_mix import MAX_GAIN_DB as GAIN_MAX_DB, MIN_GAIN_DB as GAIN_MIN_DB

log = logging.getLogger("voicemix.engine")

__all__ = ["Engine", "EngineError"]

# An offer the engine made (for a call it places, e.g. to a SIP trunk) waits this long for its
# answer before its ports are released.
PENDING_OFFER_TTL_S = 300.0
PENDING_SWEEP_TICKS = 500   # 10 s


@dataclass
class PendingLeg:
    """A leg the engine offered and whose answer has not come yet."""

    conference_id: str
    offer: str
    rtp_socket: object
    rtcp_socket: object
    label: str | None
    created: float


class Engine:
    """Hosts conferences on one event loop. Start with `start()`, stop with `stop()`.

    `conference_types` maps a mode name to its conference class; benchmarks register baselines here.
    """

    conference_types: dict[str, type] = {"mcu": McuConference, "sfu": SfuConference,
                                         "relay": RelayConference}

    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()
        if self.settings.noise_suppression and not denoise_available():
            raise VoiceProcessingError("VOICEMIX_NOISE_SUPPRESSION is on but RNNoise cannot be "
                                       "loaded (pip install pyrnnoise)")
        self.ports = PortAllocator(*self.settings.port_range)
        self.conferences: dict[str, McuConference | SfuConference] = {}
        self.clock = TickClock(self._tick)
        self.flusher = SendFlusher()  # one sendmmsg flush per socket per loop turn, for every leg
        self.webrtc = WebRtcLegs(self.settings)  # the DTLS certificate, ICE/DTLS answers, counters
        self.started_at: float | None = None
        self.warmup_ms = 0.0   # what warming the media paths took at start()
        self.legs_created = 0
        self.legs_removed = 0
        self.pending: dict[str, PendingLeg] = {}   # offered legs awaiting their answer
        self.dtmf_bridged = 0
        self.legs_joined: Counter[tuple[str, str]] = Counter()  # (mode, transport) -> legs ever
        self.conferences_created: Counter[str] = Counter()      # mode -> conferences ever
        self.retired = RetiredCounters()  # counters of legs and conferences that are gone
        self.control_refusals: Counter[str] = Counter()  # control requests refused, by reason
        self._drain = Drain(self.conferences, self.delete_conference)

    # ---------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.repair_recordings()
        # first-use costs of the codecs and SRTP paid now, not inside the first ticks with media
        self.warmup_ms = warm_media_paths()
        # RNNoise's library (~15 MB, ~0.2 s to load) is loaded now, once per process, not on the
        # event loop when a first leg asks for noise suppression (a stall of every conference)
        denoise_available()
        self.clock.start()
        self.started_at = time.time()

    def stop(self) -> None:
        self.clock.stop()
        self._drain.cancel_timer()
        for conference_id in list(self.conferences):
            self.delete_conference(conference_id)

    # ---------------------------------------------------------------------------------- draining
    def drain(self, timeout_s: float | None = None) -> dict:
        """Stop taking new conferences; current ones go on until they end or `timeout_s`
        (default `drain_timeout_s`) passes, when the engine ends them (`mixer/engine/drain.py`)."""
        return self._drain.start(self.settings.drain_timeout_s if timeout_s is None else timeout_s)

    @property
    def draining(self) -> bool:
        return self._drain.active

    async def drained(self) -> None:
        """Return once draining and no conference is left."""
        await self._drain.wait()

    def _tick(self, now_ms: float) -> None:
        for conference in list(self.conferences.values()):
            conference.tick(now_ms)
        if self.pending and self.clock.ticks % PENDING_SWEEP_TICKS == 0:
            self._expire_pending()

    # -------------------------------------------------------------------------------- conferences
    def create_conference(self, mode: str = "mcu", conference_id: str | None = None) -> dict:
        conference_type = self.conference_types.get(mode)
        if conference_type is None:
            raise EngineError(400, "unsupported_mode", f"mode {mode!r} is not available "
                              f"(supported: {', '.join(self.conference_types)})")
        if self.draining:
            raise EngineError(503, "draining", "the engine is draining: it takes no new conferences")
        if len(self.conferences) >= self.settings.max_conferences:
            raise EngineError(503, "too_many_conferences", "the engine hosts its maximum")
        conference_id = conference_id or secrets.token_hex(8)
        if not (0 < len(conference_id) <= 64 and conference_id.replace("-", "").replace("_", "").isalnum()):
            raise EngineError(400, "bad_id", "conference ids are 1..64 of [A-Za-z0-9_-]")
        if conference_id in self.conferences:
            raise EngineError(409, "conference_exists", f"conference {conference_id} exists")
        self.conferences[conference_id] = conference_type(conference_id, self.settings)
        self.conferences_created[mode] += 1
        log.info("conference created", extra={"event": "conference_created",
                                               "conference_id": conference_id, "mode": mode})
        return {"id": conference_id, "mode": mode}

    def get_conference(self, conference_id: str) -> dict:
        conference = self._conference(conference_id)
        result = {
            "id": conference.id,
            "mode": conference.mode,
            "legs": [conference.leg_stats(leg_id) for leg_id in conference.voices],
            "players": [player.stats() for player in getattr(conference, "players", {}).values()],
            "recordings": [r.stats() for r in self._recordings(conference)],
            "forks": [f.stats() for f in self._forks(conference)],
            "stats": conference.stats(),
        }
        if self.draining:
            result["drain"] = self._drain.status()
        return result

    def list_conferences(self) -> list[dict]:
        """Every conference in brief (id, mode, legs, speakers), cheap enough to poll."""
        result = []
        for conference in self.conferences.values():
            stats = conference.stats()
            result.append({"id": conference.id, "mode": conference.mode, "legs": stats["legs"],
                           "speakers": stats.get("speakers", []),
                           "dominant_speaker": stats.get("dominant_speaker")})
        return result

    def delete_conference(self, conference_id: str) -> None:
        """Remove the conference: its recordings are finished (files closed, metadata written),
        its players stopped, its legs closed."""
        conference = self._conference(conference_id)
        for recording in self._recordings(conference):
            self.stop_recording(conference_id, recording.id)
        for fork in self._forks(conference):
            self.remove_fork(conference_id, fork.id)
        for player_id in list(getattr(conference, "players", ())):
            self.remove_player(conference_id, player_id)
        for leg_id in list(conference.voices):
            self.remove_leg(conference_id, leg_id)
        for leg_id in [k for k, p in self.pending.items() if p.conference_id == conference_id]:
            self._drop_pending(leg_id)
        del self.conferences[conference_id]
        labels = (("mode", conference.mode),)
        self.retired.add((family, labels + extra, value)
                         for family, extra, value in getattr(conference, "counters", list)())
        for family, extra, histogram in getattr(conference, "histograms", list)():
            self.retired.add_histogram(family, labels + extra, histogram)
        log.info("conference deleted", extra={"event": "conference_deleted",
                                              "conference_id": conference_id})
        self._drain.check()

    def _conference(self, conference_id: str) -> McuConference:
        conference = self.conferences.get(conference_id)
        if conference is None:
            if conference_id in self._drain.ended:
                raise EngineError(404, "conference_drained",
                                  f"conference {conference_id} was ended by the engine's drain")
            raise EngineError(404, "no_such_conference", f"no conference {conference_id}")
        return conference

    # --------------------------------------------------------------------------------------- legs
    async def add_leg(self, conference_id: str, offer_sdp: str, label: str | None = None, *,
                      noise_suppression: bool | None = None, auto_gain: bool | None = None) -> dict:
        """Answer an SDP offer with a new leg on its own UDP port; returns {"id", "sdp"}.
        `noise_suppression` and `auto_gain` set the leg's voice processing as a talker (MCU; None
        keeps the engine's setting)."""
        conference = self._conference(conference_id)
        self._check_voice_options(conference, "", noise_suppression, auto_gain, None)
        result = await self._add_leg(conference, conference_id, offer_sdp, label)
        if noise_suppression is not None or auto_gain is not None:
            conference.set_voice_options(result["id"], noise_suppression, auto_gain)
        return result

    async def _add_leg(self, conference, conference_id: str, offer_sdp: str,
                       label: str | None) -> dict:
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
        self._join(conference, leg)
        log.info("leg joined", extra={"event": "leg_joined", "conference_id": conference_id,
                                      "leg_id": leg_id, "port": port, "codec": answer.codec,
                                      "transport": leg.transport})
        return {"id": leg_id, "sdp": answer.sdp}

    def _join(self, conference, leg: MediaLeg) -> None:
        conference.add_leg(leg)
        leg.on_dtmf = partial(self._on_dtmf, conference.id)
        self.legs_created += 1
        self.legs_joined[(conference.mode, leg.transport)] += 1

    # ------------------------------------------------------------------- legs the engine offers
    async def offer_leg(self, conference_id: str, codecs: tuple[str, ...] | list[str] = ("PCMU", "PCMA"),
                        label: str | None = None) -> dict:
        """Make the offer for a leg the engine places (a call out through a SIP trunk): plain RTP,
        RTCP on the next port (trunks seldom do rtcp-mux), `codecs` and telephone-event. The leg
        joins the conference when `answer_leg` brings the answer; returns {"id", "sdp"}."""
        conference = self._conference(conference_id)
        if len(conference.voices) + self._pending_in(conference_id) >= self.settings.max_legs_per_conference:
            raise EngineError(409, "conference_full", "the conference has its maximum of legs")
        allowed = set(getattr(conference, "codecs", DEFAULT_CODECS))
        codecs = [c for c in codecs if c in allowed or c.lower() in allowed]
        if not codecs:
            raise EngineError(488, "no_common_codec", f"this conference takes {sorted(allowed)} only")
        try:
            rtp_socket, rtcp_socket = self.ports.allocate(self.settings.media_ip, True)
        except PortsExhausted as exc:
            raise EngineError(503, "no_ports", str(exc)) from exc
        port = rtp_socket.getsockname()[1]
        try:
            offer, _ = offer_audio(local_ip=self.settings.media_ip, local_port=port,
                                   codecs=tuple(codecs), rtcp_mux=False, audio_level_ext_id=None)
        except ValueError as exc:
            self._release(port, rtp_socket, rtcp_socket)
            raise EngineError(422, "bad_field", str(exc)) from exc
        leg_id = secrets.token_hex(6)
        self.pending[leg_id] = PendingLeg(conference_id, offer, rtp_socket, rtcp_socket, label,
                                          time.monotonic())
        return {"id": leg_id, "sdp": offer, "state": "offered"}

    async def answer_leg(self, conference_id: str, leg_id: str, answer_sdp: str) -> dict:
        """Complete an offered leg with the peer's answer; the leg joins the conference."""
        conference = self._conference(conference_id)
        pending = self.pending.get(leg_id)
        if pending is None or pending.conference_id != conference_id:
            raise EngineError(404, "no_such_leg", f"no offered leg {leg_id} in {conference_id}")
        try:
            negotiated = accept_answer(pending.offer, answer_sdp)
        except SdpError as exc:
            code = getattr(exc, "code", "bad_sdp")
            raise EngineError(488 if code != "bad_sdp" else 400, code, str(exc)) from exc
        del self.pending[leg_id]
        leg = MediaLeg(leg_id, negotiated, pending.rtp_socket, pending.rtcp_socket, self.settings,
                       pending.label, self.flusher, retransmits=getattr(conference, "retransmits", False))
        port = pending.rtp_socket.getsockname()[1]
        try:
            await leg.open()
        except OSError as exc:
            self._release(port, pending.rtp_socket, pending.rtcp_socket)
            raise EngineError(503, "socket_error", str(exc)) from exc
        self._join(conference, leg)
        log.info("leg joined", extra={"event": "leg_joined", "conference_id": conference_id,
                                      "leg_id": leg_id, "port": port, "codec": negotiated.codec,
                                      "transport": leg.transport, "offered": True})
        return conference.leg_stats(leg_id)

    def _pending_in(self, conference_id: str) -> int:
        return sum(1 for p in self.pending.values() if p.conference_id == conference_id)

    def _drop_pending(self, leg_id: str) -> None:
        pending = self.pending.pop(leg_id)
        self._release(pending.rtp_socket.getsockname()[1], pending.rtp_socket, pending.rtcp_socket)

    def _expire_pending(self) -> None:
        cutoff = time.monotonic() - PENDING_OFFER_TTL_S
        for leg_id in [k for k, p in self.pending.items() if p.created < cutoff]:
            log.info("offered leg %s got no answer in %d s: released", leg_id, PENDING_OFFER_TTL_S)
            self._drop_pending(leg_id)

    # ---------------------------------------------------------------------------------- DTMF
    def send_dtmf(self, conference_id: str, leg_id: str, digits: str) -> dict:
        """Send keys to the leg's participant: RFC 4733 events, or in-band tones on a G.711 leg
        without telephone-event. 409 when the leg can do neither, 422 for a non-DTMF key."""
        conference = self._conference(conference_id)
        leg = self._leg(conference, leg_id)
        if not digits:
            raise EngineError(422, "bad_field", "'digits' must not be empty")
        try:
            mode = leg.send_dtmf(digits)
        except DtmfError as exc:
            status = 422 if "not a DTMF key" in str(exc) or "at most" in str(exc) else 409
            raise EngineError(status, "bad_digits" if status == 422 else "no_dtmf_path", str(exc)) from exc
        return {"id": leg_id, "mode": mode, "queued": len(digits)}

    def _on_dtmf(self, conference_id: str, leg: MediaLeg, digit: Digit) -> None:
        """A key pressed on one leg of a two-party call is played to the other (a B2BUA's job:
        the far end may be an IVR); in a group call keys stay with the engine and controller."""
        if self.settings.dtmf_bridge != "two_party":
            return
        conference = self.conferences.get(conference_id)
        if conference is None or len(conference.voices) != 2:
            return
        other = next(v.leg for k, v in conference.voices.items() if k != leg.id)
        try:
            other.send_dtmf(digit.key)
            self.dtmf_bridged += 1
        except DtmfError:
            pass

    # ----------------------------------------------------------------------------- move, read
    def move_leg(self, conference_id: str, leg_id: str, target_id: str) -> dict:
        """Move a leg, with its port, SSRC and sequence numbering, to another conference on this
        engine (an IVR transferring its caller into a call): the peer notices nothing."""
        conference = self._conference(conference_id)
        target = self._conference(target_id)
        leg = self._leg(conference, leg_id)
        if target is conference:
            return conference.leg_stats(leg_id)
        allowed = getattr(target, "codecs", DEFAULT_CODECS)
        if leg.codec not in allowed and leg.codec.lower() not in allowed:
            raise EngineError(488, "no_common_codec",
                              f"conference {target_id} takes {list(allowed)}, the leg is {leg.codec}")
        if len(target.voices) >= self.settings.max_legs_per_conference:
            raise EngineError(409, "conference_full", "the target conference has its maximum of legs")
        conference.remove_leg(leg_id)
        leg.on_rtp = leg.on_nack = leg.on_ssrc_change = None
        target.add_leg(leg)
        leg.on_dtmf = partial(self._on_dtmf, target_id)
        log.info("leg %s moved from %s to %s", leg_id, conference_id, target_id)
        return target.leg_stats(leg_id)

    def get_leg(self, conference_id: str, leg_id: str) -> dict:
        conference = self._conference(conference_id)
        self._leg(conference, leg_id)
        return conference.leg_stats(leg_id)

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
        self._join(conference, leg)
        log.info("leg joined", extra={"event": "leg_joined", "conference_id": conference.id,
                                      "leg_id": leg_id, "port": port, "codec": leg.codec,
                                      "transport": leg.transport})
        return {"id": leg_id, "sdp": leg.answer.sdp}

    async def reoffer_leg(self, conference_id: str, leg_id: str, offer_sdp: str) -> dict:
        """A new offer on an existing leg (RFC 3264 section 8): ICE restart, a new DTLS
        fingerprint, a direction change (hold with sendonly/inactive, a SIP re-INVITE), resume, a
        new address; the same port, SSRCs and codec. Returns {"id", "sdp": answer, "direction"}."""
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
                self._reoffer_plain(leg, offer)
        except SdpError as exc:
            code = getattr(exc, "code", "bad_sdp")
            raise EngineError(488 if code != "bad_sdp" else 400, code, str(exc)) from exc
        log.info("leg re-offered", extra={"event": "leg_reoffered", "conference_id": conference_id,
                                          "leg_id": leg_id,
                                          "direction": getattr(leg.answer, "direction", None)})
        return {"id": leg_id, "sdp": leg.answer.sdp,
                "direction": getattr(leg.answer, "direction", "sendrecv")}

    def _reoffer_plain(self, leg: MediaLeg, offer) -> None:
        """Plain/SDES re-offer: new remote address, direction (hold), ptime or telephone-event;
        the codec and payload type stay (only the leg's codec is answered: 488 if the offer
        drops it); a new SDES key from the peer re-keys the inbound side, ours is kept (RFC 4568
        7.1.4 allows). The answer's o= line keeps our session id, version + 1 (RFC 3264 8)."""
        origin = leg.answer.description.origin
        answer = answer_audio(offer, local_ip=self.settings.advertised_addresses[0],
                              local_port=leg.local_port, codecs=(leg.codec,),
                              srtp_required=self.settings.srtp_required,
                              local_crypto=leg.answer.local_crypto,
                              session_id=origin.session_id,
                              session_version=origin.session_version + 1)
        if (answer.codec, answer.payload_type) != (leg.codec, leg.payload_type):
            raise EngineError(488, "codec_change", f"the leg runs {leg.codec}/{leg.payload_type}; a "
                              "re-offer cannot change it (make a new leg)")
        if answer.rtcp_mux != leg.rtcp_mux:
            raise EngineError(488, "rtcp_mux_change", "a re-offer cannot change rtcp-mux")
        if (answer.remote_crypto is None) != (leg.srtp is None):
            raise EngineError(488, "srtp_change", "a re-offer cannot turn SRTP on or off")
        leg.apply_answer(answer)

    def update_leg(self, conference_id: str, leg_id: str, muted: bool | None = None, *,
                   noise_suppression: bool | None = None, auto_gain: bool | None = None,
                   gains: dict[str, float | None] | None = None) -> dict:
        """Mute a leg; turn its voice processing as a talker on or off (MCU: noise suppression,
        automatic gain; None keeps the engine's setting); set the gains, in dB, at which this leg
        hears other legs (`gains`: talker leg id -> dB, or None to clear one)."""
        conference = self._conference(conference_id)
        leg = self._leg(conference, leg_id)
        self._check_voice_options(conference, leg_id, noise_suppression, auto_gain, gains)
        if muted is not None:
            leg.muted = muted
        if noise_suppression is not None or auto_gain is not None or gains:
            conference.set_voice_options(leg_id, noise_suppression, auto_gain, gains)
        return conference.leg_stats(leg_id)

    def _check_voice_options(self, conference, leg_id: str, noise_suppression: bool | None,
                             auto_gain: bool | None, gains: dict | None) -> None:
        """Voice processing is the MCU's (an SFU forwards what it receives, undecoded)."""
        if noise_suppression is None and auto_gain is None and not gains:
            return
        if not hasattr(conference, "set_voice_options"):
            raise EngineError(409, "not_mixed", "voice processing and per-listener gains need an "
                              "MCU conference (an SFU forwards packets without decoding them)")
        if noise_suppression and not denoise_available():
            raise EngineError(503, "noise_suppression_unavailable",
                              "RNNoise is not installed on this engine (pip install pyrnnoise)")
        for talker_id, gain_db in (gains or {}).items():
            if talker_id == leg_id:
                raise EngineError(422, "bad_field", "a leg does not hear itself: no gain for it")
            if talker_id not in conference.voices:
                raise EngineError(404, "no_such_leg", f"no leg {talker_id} in conference {conference.id}")
            if gain_db is not None and not (GAIN_MIN_DB <= gain_db <= GAIN_MAX_DB):
                raise EngineError(422, "bad_field",
                                  f"gain for {talker_id} must be {GAIN_MIN_DB:g}..{GAIN_MAX_DB:g} dB")

    def remove_leg(self, conference_id: str, leg_id: str) -> None:
        conference = self._conference(conference_id)
        pending = self.pending.get(leg_id)
        if pending is not None and pending.conference_id == conference_id:
            self._drop_pending(leg_id)   # offered, never answered
            return
        self._leg(conference, leg_id)
        leg = conference.remove_leg(leg_id)
        leg.close()
        self.ports.release(leg.local_port)
        self.legs_removed += 1
        labels = (("mode", conference.mode), ("transport", leg.transport))
        self.retired.add((family, labels + extra, value) for family, extra, value in leg.counters())
        log.info("leg left", extra={"event": "leg_left", "conference_id": conference_id,
                                    "leg_id": leg_id, "packets_in": leg.packets_in,
                                    "packets_out": leg.packets_out})

    @staticmethod
    def _leg(conference: McuConference, leg_id: str) -> MediaLeg:
        voice = conference.voices.get(leg_id)
        if voice is None:
            raise EngineError(404, "no_such_leg", f"no leg {leg_id} in conference {conference.id}")
        return voice.leg

    # ------------------------------------------------------------------------------------ players
    def add_player(self, conference_id: str, *, tone: float | None = None, file: str | None = None,
                   loop: bool = False, seconds: float | None = None, label: str | None = None,
                   player_id: str | None = None) -> dict:
        """Play a tone (`tone` Hz) or a WAV/Ogg Opus file (`file`, inside one of the player
        directories) into the conference, from the next tick. A tone stops after `seconds`
        (default `player_max_seconds`); a file plays to its end (`loop`: over and over) or for
        `seconds`. Returns the player's stats; its `state` turns "finished" when it is done."""
        conference = self._conference(conference_id)
        if not hasattr(conference, "add_player"):
            raise EngineError(400, "unsupported_mode", f"a {conference.mode} conference has no players")
        if (tone is None) == (file is None):
            raise EngineError(422, "bad_field", "give exactly one of 'tone' (Hz) or 'file'")
        if seconds is not None and not (isinstance(seconds, (int, float)) and seconds > 0):
            raise EngineError(422, "bad_field", "'seconds' must be a positive number")
        player_id = self._new_id(player_id, conference.players, "player")
        playing = [p for p in conference.players.values() if p.state == PLAYING]
        if len(playing) >= self.settings.max_players_per_conference:
            raise EngineError(409, "too_many_players",
                              f"{len(playing)} players already play in this conference")
        try:
            if tone is not None:
                source = ToneSource(tone, min(seconds or self.settings.player_max_seconds,
                                              self.settings.player_max_seconds))
            else:
                source = open_file(self._playable(file))
        except PlayerError as exc:
            status = {"no_such_file": 404, "file_forbidden": 403}.get(exc.code, 422)
            raise EngineError(status, exc.code, str(exc)) from None
        player = Player(player_id, source, label=label, loop=loop,
                        seconds=seconds if file is not None else None)
        self._forget_finished_players(conference)
        conference.add_player(player)
        log.info("player %s plays %s into %s", player_id, source.describe(), conference_id)
        return player.stats()

    def get_player(self, conference_id: str, player_id: str) -> dict:
        return self._player(self._conference(conference_id), player_id).stats()

    def update_player(self, conference_id: str, player_id: str, muted: bool | None = None) -> dict:
        player = self._player(self._conference(conference_id), player_id)
        if muted is not None:
            player.muted = muted
        return player.stats()

    def remove_player(self, conference_id: str, player_id: str) -> dict:
        """Stop the player (if it still plays) and forget it; returns its last stats."""
        conference = self._conference(conference_id)
        player = self._player(conference, player_id)
        player.stop()
        conference.remove_player(player_id)
        return player.stats()

    @staticmethod
    def _player(conference, player_id: str) -> Player:
        player = getattr(conference, "players", {}).get(player_id)
        if player is None:
            raise EngineError(404, "no_such_player", f"no player {player_id} in {conference.id}")
        return player

    def _forget_finished_players(self, conference) -> None:
        """Finished players stay listed (for whoever polls their state) until removed; beyond the
        per-conference limit the oldest finished ones are forgotten, so a phone tree that plays
        prompt after prompt never grows the list."""
        finished = [p for p in conference.players.values() if p.state != PLAYING]
        for player in finished[:max(0, len(finished) - self.settings.max_players_per_conference + 1)]:
            conference.remove_player(player.id)

    def _playable(self, file: str) -> Path:
        """The file a player may read: inside one of the player directories (symbolic links
        resolved), given absolute or relative to one of them."""
        if not isinstance(file, str) or not file or "\0" in file:
            raise PlayerError("bad_field", "'file' must be a path")
        roots = [Path(os.path.realpath(root)) for root in self.settings.player_paths]
        requested = Path(file)
        candidates = [requested] if requested.is_absolute() else [root / requested for root in roots]
        for candidate in candidates:
            resolved = Path(os.path.realpath(candidate))
            if not any(resolved.is_relative_to(root) for root in roots):
                continue
            if resolved.exists() or candidate is candidates[-1]:
                return resolved
        if requested.is_absolute() or any(".." in part for part in requested.parts):
            raise PlayerError("file_forbidden", "players read files in the player directories only")
        raise PlayerError("no_such_file", f"no file {file} in the player directories")

    # --------------------------------------------------------------------------------- recordings
    def start_recording(self, conference_id: str, *, format: str = "ogg", tracks: str = "mix",
                        recording_id: str | None = None) -> dict:
        """Record the conference from the next tick into `<recordings dir>/<id>/`: its mix, and
        with `tracks` "mix+participants" one track per participant (and per player). `format`
        "ogg" (Opus, RFC 7845; participants' Opus packets muxed as received) or "wav" (16-bit
        48 kHz mono). Returns the recording's metadata (`id`, `state` "recording", `path`, ...)."""
        conference = self._conference(conference_id)
        recording_id = self._new_id(recording_id, self.recording_ids(), "recording")
        if sum(r.active for r in self._recordings(conference)) >= \
                self.settings.max_recordings_per_conference:
            raise EngineError(409, "too_many_recordings", "the conference has its maximum of "
                              "recordings running")
        try:
            recording = Recording(
                recording_id, conference_id, self.settings.recordings_path / recording_id, format,
                tracks, self.clock.now_ms(), bitrate=self.settings.recording_opus_bitrate,
                track_delay_ms=self.settings.jitter_min_ms + FRAME_MS / 2)
        except RecordingError as exc:
            status = {"recording_exists": 409, "storage_error": 507}.get(exc.code, 422)
            raise EngineError(status, exc.code, str(exc)) from None
        self._media(conference).attach(recording_id, recording)
        log.info("recording %s of %s started (%s, %s) in %s", recording_id, conference_id, format,
                 tracks, recording.directory)
        return recording.metadata()

    def get_recording(self, conference_id: str, recording_id: str) -> dict:
        return self._recording(self._conference(conference_id), recording_id).metadata()

    def stop_recording(self, conference_id: str, recording_id: str) -> dict:
        """Finish the recording (every file closed, silence up to now, metadata written) and
        detach it; returns its final metadata with each track's offset and duration."""
        conference = self._conference(conference_id)
        recording = self._recording(conference, recording_id)
        metadata = recording.stop(self.clock.now_ms())
        self._detach(conference, recording_id)
        return metadata

    def recording_info(self, recording_id: str) -> dict:
        """The metadata of any recording in the recordings directory, finished or running."""
        for conference in self.conferences.values():
            for recording in self._recordings(conference):
                if recording.id == recording_id:
                    return recording.metadata()
        directory = self._recording_directory(recording_id)
        try:
            return read_metadata(directory)
        except (OSError, ValueError):
            raise EngineError(404, "no_such_recording", f"no recording {recording_id}") from None

    def recording_file(self, recording_id: str, track: str | None = None) -> Path:
        """The file of a finished recording's mix, or of one of its tracks (a participant's or
        player's id)."""
        info = self.recording_info(recording_id)
        if info.get("state") == "recording":
            raise EngineError(409, "recording_active", "the recording is still being made")
        directory = self._recording_directory(recording_id)
        if track is None:
            path = directory / Path(info["path"]).name
        else:
            names = {t["id"]: t["file"] for t in info.get("tracks", [])}
            if track not in names:
                raise EngineError(404, "no_such_track", f"recording {recording_id} has no track {track}")
            path = directory / names[track]
        if not path.is_file():
            raise EngineError(404, "no_such_file", f"{path.name} is gone from the recordings")
        return path

    def recording_ids(self) -> set[str]:
        ids = {r.id for c in self.conferences.values() for r in self._recordings(c)}
        root = self.settings.recordings_path
        if root.is_dir():
            ids.update(p.parent.name for p in root.glob(f"*/{METADATA_FILE}"))
        return ids

    def repair_recordings(self) -> list[dict]:
        """At start: recordings a killed engine left unfinished get their files made whole and
        their metadata marked "interrupted"."""
        root = self.settings.recordings_path
        repaired = []
        if root.is_dir():
            for metadata_path in sorted(root.glob(f"*/{METADATA_FILE}")):
                fixed = repair_recording(metadata_path.parent)
                if fixed is not None:
                    log.warning("recording %s was interrupted; repaired (%.2f s)", fixed.get("id"),
                                fixed.get("duration_s") or 0.0)
                    repaired.append(fixed)
        return repaired

    def _recording_directory(self, recording_id: str) -> Path:
        self._new_id(recording_id, (), "recording")  # a safe directory name, or 400
        return self.settings.recordings_path / recording_id

    @staticmethod
    def _recordings(conference) -> list[Recording]:
        media = getattr(conference, "media", None)
        if media is None:
            return []
        return [s for s in media.services.values() if isinstance(s, Recording)]

    def _recording(self, conference, recording_id: str) -> Recording:
        for recording in self._recordings(conference):
            if recording.id == recording_id:
                return recording
        raise EngineError(404, "no_such_recording",
                          f"no recording {recording_id} in conference {conference.id}")

    # -------------------------------------------------------------------------------------- forks
    async def add_fork(self, conference_id: str, source: str, destination: str, *,
                       srtp: bool = False, codec: str | None = None, label: str | None = None,
                       fork_id: str | None = None) -> dict:
        """Send `source` ("mix", or a leg id) as RTP, or SDES-SRTP with `srtp`, to `destination`
        ("host:port"; RTCP to port + 1). A participant's packets are forwarded in its own codec;
        the mix is encoded in `codec` (opus, PCMU or PCMA; default opus). The destination passes
        the TURN relays' peer filter: loopback, private, link-local, multicast and reserved
        addresses are refused (403 destination_forbidden) unless `fork_allow_loopback` or
        `fork_allowed_ips` say otherwise. Returns the fork, with `sdp`: what a receiver needs
        (the stream's codec and payload type, and the key with SRTP)."""
        conference = self._conference(conference_id)
        if not isinstance(source, str) or not source:
            raise EngineError(422, "bad_field", "'source' is 'mix' or a leg id")
        if source != MIX and source not in conference.voices:
            raise EngineError(404, "no_such_leg", f"no leg {source} in conference {conference_id}")
        if source == MIX:
            codec = codec or "opus"
            if codec not in STREAM_PAYLOAD_TYPES:
                raise EngineError(422, "bad_codec", "a mix fork's codec is opus, PCMU or PCMA")
        else:
            source_leg = conference.voices[source].leg
            if codec not in (None, source_leg.codec):
                raise EngineError(422, "bad_codec", f"a participant's fork carries its own codec "
                                  f"({source_leg.codec}): packets are forwarded, not transcoded")
            codec = source_leg.codec
        fork_id = self._new_id(fork_id, {f.id for f in self._forks(conference)}, "fork")
        if sum(f.state == "active" for f in self._forks(conference)) >= \
                self.settings.max_forks_per_conference:
            raise EngineError(409, "too_many_forks", "the conference has its maximum of forks")
        try:
            host, port = parse_destination(destination)
        except DestinationError as exc:
            raise EngineError(422, "bad_destination", str(exc)) from None
        address = await self._fork_address(host, port)
        try:
            rtp_socket, rtcp_socket = self.ports.allocate(self.settings.media_ip, True)
        except PortsExhausted as exc:
            raise EngineError(503, "no_ports", str(exc)) from exc
        local_port = rtp_socket.getsockname()[1]
        crypto = generate_crypto(1) if srtp else None
        ptime = 20 if source == MIX else source_leg.ptime_ms
        sdp = describe_stream(origin_ip=self.settings.media_ip, destination=(address, port),
                              codec=codec, ptime_ms=ptime, crypto=crypto, name="voicemix fork")
        answer = AudioAnswer(
            sdp=sdp, description=parse(sdp), codec=codec, payload_type=STREAM_PAYLOAD_TYPES[codec],
            clock_rate=48000 if codec == "opus" else 8000, channels=1, fmtp={},
            telephone_event_pt=None, remote_rtp=(address, port), remote_rtcp=(address, port + 1),
            rtcp_mux=False, ptime_ms=ptime, direction="sendonly", audio_level_ext_id=None,
            # the destination sends no media; its SRTCP reports cannot be authenticated (it has
            # no key of ours to learn), so they are dropped and counted
            local_crypto=crypto, remote_crypto=generate_crypto(1) if srtp else None)
        # a fork sends to its destination, checked above (the peer filter), not to an offer
        leg = MediaLeg(fork_id, answer, rtp_socket, rtcp_socket, self.settings, label or fork_id,
                       self.flusher, media_consent=False)
        try:
            await leg.open()
        except OSError as exc:
            self._release(local_port, rtp_socket, rtcp_socket)
            raise EngineError(503, "socket_error", str(exc)) from exc
        fork = Fork(fork_id, source, leg, f"{address}:{port}" if ":" not in address
                    else f"[{address}]:{port}", sdp, self._opus(), label)
        self._media(conference).attach(fork_id, fork)
        log.info("fork %s of %s/%s to %s:%d (%s%s)", fork_id, conference_id, source, address, port,
                 codec, ", SRTP" if srtp else "")
        return {**fork.stats(), "sdp": sdp}

    def get_fork(self, conference_id: str, fork_id: str) -> dict:
        fork = self._fork(self._conference(conference_id), fork_id)
        return {**fork.stats(), "sdp": fork.sdp}

    def remove_fork(self, conference_id: str, fork_id: str) -> dict:
        """Stop sending (an RTCP BYE goes to the destination) and forget the fork."""
        conference = self._conference(conference_id)
        fork = self._fork(conference, fork_id)
        fork.stop()
        self.ports.release(fork.leg.local_port)
        labels = (("mode", conference.mode), ("transport", "fork"))
        self.retired.add((family, labels + extra, value) for family, extra, value in fork.leg.counters())
        self._detach(conference, fork_id)
        return fork.stats()

    async def _fork_address(self, host: str, port: int) -> str:
        """The address a fork sends to: `host` resolved, and every address it resolves to allowed
        by the peer filter (a name must not reach a refused address through one of its records)."""
        try:
            literal = ipaddress.ip_address(host)
            addresses = [str(literal)]
        except ValueError:
            try:
                found = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP)
            except (socket.gaierror, UnicodeError) as exc:
                raise EngineError(422, "bad_destination", f"{host} does not resolve: {exc}") from None
            addresses = list(dict.fromkeys(info[4][0] for info in found))
        family = socket.AF_INET6 if ":" in self.settings.media_ip else socket.AF_INET
        addresses = [a for a in addresses if (":" in a) == (family == socket.AF_INET6)]
        if not addresses:
            raise EngineError(422, "bad_destination",
                              f"{host} has no address of the media address's family")
        peers = PeerFilter(self.settings.fork_allow_loopback, self.settings.fork_allowed_ips)
        refused = [a for a in addresses if not peers.permits(a)]
        if refused:
            raise EngineError(403, "destination_forbidden",
                              f"forks may not send to {', '.join(refused)} (loopback, private, "
                              f"link-local, multicast or reserved addresses are refused)")
        return addresses[0]

    def _opus(self) -> OpusSettings:
        return OpusSettings.for_engine(self.settings)

    @staticmethod
    def _forks(conference) -> list[Fork]:
        media = getattr(conference, "media", None)
        if media is None:
            return []
        return [s for s in media.services.values() if isinstance(s, Fork)]

    def _fork(self, conference, fork_id: str) -> Fork:
        for fork in self._forks(conference):
            if fork.id == fork_id:
                return fork
        raise EngineError(404, "no_such_fork", f"no fork {fork_id} in conference {conference.id}")

    def _media(self, conference) -> ConferenceMedia:
        if conference.media is None:
            conference.media = ConferenceMedia(conference, self.settings)
        return conference.media

    @staticmethod
    def _detach(conference, service_id: str) -> None:
        media = conference.media
        if media is not None:
            media.detach(service_id)
            if media.empty:
                conference.media = None

    def _new_id(self, wanted: str | None, existing, what: str) -> str:
        if wanted is None:
            return secrets.token_hex(6)
        if not (isinstance(wanted, str) and 0 < len(wanted) <= 64
                and wanted.replace("-", "").replace("_", "").isalnum()):
            raise EngineError(400, "bad_id", f"{what} ids are 1..64 of [A-Za-z0-9_-]")
        if wanted in existing:
            raise EngineError(409, f"{what}_exists", f"{what} {wanted} exists")
        return wanted

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
        forks = 0
        for conference in self.conferences.values():
            for fork in self._forks(conference):
                forks += 1
                packets_out += fork.leg.packets_out
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
            "forks": forks,
            "legs_created": self.legs_created,
            "legs_removed": self.legs_removed,
            "legs_offered_pending": len(self.pending),
            "dtmf_bridged": self.dtmf_bridged,
            "ports_in_use": self.ports.in_use,
            "packets_in": packets_in,
            "packets_out": packets_out,
            "drops": drops,
            "draining": self.draining,
            "webrtc": self.webrtc.stats(),
        }
