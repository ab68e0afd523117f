"""The media engine: conferences, their legs' UDP ports, and the 20 ms clock that drives them.

This is the control API in-process (the HTTP control server in `control.py` is a thin shell over
these methods). All methods run on the engine's event loop.
"""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mixer.engine.clock import TickClock
from mixer.legs.leg import MediaLeg
from mixer.legs.ports import PortAllocator, PortsExhausted
from mixer.legs.transport import SendFlusher
from mixer.mcu.conference import MAX_PLAYERS, McuConference
from mixer.mcu.players import Player, PlayerError, read_wav
from mixer.rtp.dtmf import Digit, DtmfError
from mixer.sdp.offer_answer import DEFAULT_CODECS
from mixer.sfu.conference import SfuConference
from mixer.sdp import SdpError, accept_answer, answer_audio, offer_audio, parse
from mixer.settings import EngineSettings

log = logging.getLogger("voicemix.engine")

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
        self.started_at: float | None = None
        self.legs_created = 0
        self.legs_removed = 0
        self.pending: dict[str, PendingLeg] = {}   # offered legs awaiting their answer
        self.dtmf_bridged = 0

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
        if self.pending and self.clock.ticks % PENDING_SWEEP_TICKS == 0:
            self._expire_pending()

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
        for leg_id in [k for k, p in self.pending.items() if p.conference_id == conference_id]:
            self._drop_pending(leg_id)
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
        audio = next((m for m in offer.media if m.media == "audio"), None)
        wants_mux = audio is not None and audio.rtcp_mux
        try:
            rtp_socket, rtcp_socket = self.ports.allocate(self.settings.media_ip, not wants_mux)
        except PortsExhausted as exc:
            raise EngineError(503, "no_ports", str(exc)) from exc
        port = rtp_socket.getsockname()[1]
        try:
            answer = answer_audio(offer, local_ip=self.settings.media_ip, local_port=port,
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
        log.info("leg %s joined %s on %s:%d (%s%s)", leg_id, conference_id, self.settings.media_ip,
                 port, answer.codec, ", SRTP" if leg.srtp else "")
        return {"id": leg_id, "sdp": answer.sdp}

    def _join(self, conference, leg: MediaLeg) -> None:
        conference.add_leg(leg)
        leg.on_dtmf = partial(self._on_dtmf, conference.id)
        self.legs_created += 1

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
        log.info("leg %s joined %s on %s:%d (%s, offered)", leg_id, conference_id,
                 self.settings.media_ip, port, negotiated.codec)
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

    # ------------------------------------------------------------------------ re-negotiation
    def renegotiate_leg(self, conference_id: str, leg_id: str, offer_sdp: str) -> dict:
        """Answer a new offer for an existing leg (a re-INVITE: hold with sendonly/inactive,
        resume, a new address) on the same port, codec and keys; returns {"id", "sdp"}.
        488 when the offer drops the leg's codec or would change its SRTP or RTCP muxing."""
        conference = self._conference(conference_id)
        leg = self._leg(conference, leg_id)
        try:
            offer = parse(offer_sdp)
        except SdpError as exc:
            raise EngineError(400, "bad_sdp", str(exc)) from exc
        if leg.srtp is not None:
            raise EngineError(488, "srtp_renegotiation", "re-offers are not taken on SRTP legs")
        origin = leg.answer.description.origin
        try:
            answer = answer_audio(offer, local_ip=self.settings.media_ip, local_port=leg.local_port,
                                  codecs=(leg.codec,), session_id=origin.session_id,
                                  session_version=origin.session_version + 1)
        except SdpError as exc:
            code = getattr(exc, "code", "bad_sdp")
            raise EngineError(488 if code != "bad_sdp" else 400, code, str(exc)) from exc
        if answer.remote_crypto is not None or answer.rtcp_mux != leg.rtcp_mux:
            raise EngineError(488, "transport_change", "the re-offer changes SRTP or rtcp-mux")
        leg.renegotiate(answer)
        log.info("leg %s of %s renegotiated: %s, remote %s:%d", leg_id, conference_id,
                 answer.direction, *answer.remote_rtp)
        return {"id": leg_id, "sdp": answer.sdp, "direction": answer.direction}

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

    # -------------------------------------------------------------------------------- players
    def add_player(self, conference_id: str, *, tone: float | None = None, file: str | None = None,
                   loop: bool = False, seconds: float | None = None, label: str | None = None,
                   player_id: str | None = None) -> dict:
        """Play a tone or a 16-bit WAV file into an MCU conference (everyone hears it); its
        `state` becomes "finished" at the end (a minimal player: issue 13 brings the full one)."""
        conference = self._conference(conference_id)
        if not isinstance(conference, McuConference):
            raise EngineError(409, "players_need_mcu", "players play into MCU conferences")
        if (tone is None) == (file is None):
            raise EngineError(422, "bad_field", "a player needs exactly one of 'tone' and 'file'")
        if len(conference.players) >= MAX_PLAYERS:
            raise EngineError(409, "too_many_players", f"at most {MAX_PLAYERS} players at once")
        if tone is not None and not (isinstance(tone, (int, float)) and 20 <= tone <= 20000):
            raise EngineError(422, "bad_tone", "a tone is 20..20000 Hz")
        if seconds is not None and not (isinstance(seconds, (int, float)) and 0 < seconds <= 86400):
            raise EngineError(422, "bad_field", "'seconds' must be 0..86400")
        samples = None
        if file is not None:
            try:
                samples = read_wav(Path(file))
            except PlayerError as exc:
                raise EngineError(422, exc.code, str(exc)) from None
        player_id = player_id or secrets.token_hex(6)
        if player_id in conference.players:
            raise EngineError(409, "player_exists", f"player {player_id} exists")
        player = Player(player_id, tone=tone, samples=samples, seconds=seconds, loop=loop,
                        label=label, kind="tone" if tone is not None else "wav")
        conference.players[player_id] = player
        return player.stats()

    def _player(self, conference_id: str, player_id: str) -> Player:
        conference = self._conference(conference_id)
        player = getattr(conference, "players", {}).get(player_id)
        if player is None:
            raise EngineError(404, "no_such_player", f"no player {player_id} in {conference_id}")
        return player

    def get_player(self, conference_id: str, player_id: str) -> dict:
        return self._player(conference_id, player_id).stats()

    def update_player(self, conference_id: str, player_id: str, muted: bool | None = None) -> dict:
        player = self._player(conference_id, player_id)
        if muted is not None:
            player.muted = muted
        return player.stats()

    def remove_player(self, conference_id: str, player_id: str) -> None:
        self._player(conference_id, player_id)
        del self._conference(conference_id).players[player_id]

    def get_leg(self, conference_id: str, leg_id: str) -> dict:
        conference = self._conference(conference_id)
        self._leg(conference, leg_id)
        return conference.leg_stats(leg_id)

    def update_leg(self, conference_id: str, leg_id: str, muted: bool | None = None) -> dict:
        conference = self._conference(conference_id)
        leg = self._leg(conference, leg_id)
        if muted is not None:
            leg.muted = muted
        return conference.leg_stats(leg_id)

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
            "legs_offered_pending": len(self.pending),
            "dtmf_bridged": self.dtmf_bridged,
            "ports_in_use": self.ports.in_use,
            "packets_in": packets_in,
            "packets_out": packets_out,
            "drops": drops,
        }
