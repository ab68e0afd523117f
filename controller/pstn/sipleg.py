"""One SIP dialog bridged to one engine leg: where the B2BUA's two halves meet.

The carrier side is the SIP dialog (signalling) and G.711 RTP straight to the engine leg's port;
the conference side is whatever the call uses, mixed by the engine. This object follows the
dialog: a re-INVITE becomes an engine re-offer on the same port (hold mutes the leg in the call,
so the carrier's music on hold is not mixed into it; resume unmutes), INFO digits (RFC 6086
`application/dtmf-relay`) become call events, and the end of the dialog removes the participant.
It is also the participant's "local client" in `CallService`: `close()` (the participant removed
through the API, or the call ended) hangs the dialog up.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from controller.sip import InviteSession, SipReject
from mixer.engine.client import EngineError

if TYPE_CHECKING:
    from controller.pstn.service import PstnService

log = logging.getLogger("voicemix.pstn")

# the session's end -> the participant's end reason in the CDR
END_REASONS = {"remote_bye": "remote_hangup", "local_bye": "hangup", "ack_timeout": "no_ack",
               "cancelled": "cancelled", "shutdown": "controller_shutdown", "timeout": "no_answer",
               "failed": "failed", "rejected": "rejected"}


class SipLeg:
    def __init__(self, service: PstnService, session: InviteSession, call: dict | None,
                 leg_id: str, direction: str, engine, conference: str) -> None:
        self.service = service
        self.session = session
        self.call_id = call["id"] if call else None
        self.leg_id = leg_id
        self.direction = direction
        self.engine = engine
        self.conference = conference
        self.attached_at = time.monotonic()
        self.closing = False
        self.held = False
        self.answered_at: float | None = None
        self.info_digits = 0
        self.on_digit = None   # an IVR listening for keys sent by INFO
        session.on_reoffer = self._on_reoffer
        session.on_info = self._on_info
        session.on_terminated = self._on_terminated

    # ------------------------------------------------------------------------- CallService
    def close(self) -> None:
        """The participant left through the API or the call ended: hang the dialog up."""
        self.closing = True
        if not self.session.is_terminated:
            self.service.ua.spawn(self.session.bye())
        self.service.closed(self)

    # ------------------------------------------------------------------------------ dialog
    async def _on_reoffer(self, session: InviteSession, offer: bytes) -> bytes:
        try:
            answer = await self.engine.reoffer_leg(self.conference, self.leg_id,
                                                       offer.decode("utf-8", "replace"))
        except EngineError as exc:
            raise SipReject(488 if exc.status in (400, 488) else 500, None,
                            [("Warning", f'399 voicemix "{exc.code}"')]) from None
        held = answer.get("direction") in ("recvonly", "inactive")
        if held != self.held:
            self.held = held
            await self.service.set_hold(self, held)
        return answer["sdp"].encode()

    def _on_info(self, session: InviteSession, request) -> None:
        """RFC 6086 INFO with `application/dtmf-relay` (Signal=5) or `application/dtmf` (5)."""
        body = request.body.decode("ascii", "replace")
        key = None
        if request.content_type == "application/dtmf-relay":
            for line in body.splitlines():
                name, _, value = line.partition("=")
                if name.strip().lower() == "signal":
                    key = value.strip()
        else:
            key = body.strip()
        key = {"10": "*", "11": "#"}.get(key or "", key)
        if key and len(key) == 1 and key.upper() in "0123456789*#ABCD":
            self.info_digits += 1
            self.service.digit(self, key.upper())

    def _on_terminated(self, session: InviteSession, reason: str) -> None:
        if self.closing or (self.direction == "outbound" and self.answered_at is None):
            return   # an outbound call that never connected: the dialling task reports it
        self.service.ua.spawn(self.service.leg_ended(self, END_REASONS.get(reason, reason),
                                                      session.end_status))
