"""An INVITE session (RFC 3261 sections 13-15): one call's dialog and its offer/answer.

The same class plays both roles:

- UAS (`role == "uas"`): made by the UA for a new INVITE. The application calls `ring()` (180),
  `progress(sdp)` (183), `accept(sdp)` (200; retransmitted until the ACK comes, 13.3.1.4, and
  given up with a BYE after 64*T1), or `reject(status)`. A CANCEL ends it with 487 and reason
  `cancelled`.
- UAC (`role == "uac"`): made by `UserAgent.invite()`. `answered` resolves with the answer SDP
  (or raises `SipStatusError` / `SipTimeout` / `SipTransportError`); 401/407 are answered with
  digest credentials once per challenge; `cancel()` sends CANCEL once a provisional response has
  come (9.1), and a 2xx that crosses the CANCEL is ACKed and ended with BYE.

Once confirmed, either side may `bye()`; a re-INVITE from the peer goes to `on_reoffer` (hold and
resume are a new offer; the answer comes back from the callback), one of ours is `reinvite()`;
glare gets 491 (14.2). `on_terminated(session, reason)` is called once when the session ends,
with reasons `remote_bye`, `local_bye`, `cancelled`, `rejected`, `failed`, `ack_timeout`,
`timeout`, `shutdown`.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from controller.sip.auth import Credentials, authorization, choose_challenge
from controller.sip.dialog import Dialog, new_call_id, new_tag
from controller.sip.errors import (
    SipError, SipReject, SipStatusError, SipTimeout, SipTransportError,
)
from controller.sip.message import Headers, SipRequest, SipResponse
from controller.sip.transaction import ClientInviteTransaction, ServerTransaction
from controller.sip.uri import NameAddress, SipUri, Uri, parse_name_address, parse_uri

if TYPE_CHECKING:
    from controller.sip.transport import Flow
    from controller.sip.useragent import UserAgent

log = logging.getLogger("voicemix.sip")

MAX_AUTH_ATTEMPTS = 2


class InviteSession:
    def __init__(self, ua: UserAgent, role: str, invite: SipRequest,
                 server_tx: ServerTransaction | None = None, flow: Flow | None = None) -> None:
        self.ua = ua
        self.role = role
        self.invite = invite
        self.server_tx = server_tx
        self.flow = flow
        self.dialog: Dialog | None = None
        self.state = "incoming" if role == "uas" else "calling"
        self.local_tag = new_tag() if role == "uas" else (invite.from_.tag or new_tag())
        self.remote_sdp: bytes | None = invite.body or None if role == "uas" else None
        self.local_sdp: bytes | None = invite.body or None if role == "uac" else None
        self.end_reason: str | None = None
        self.end_status: int | None = None   # the SIP status that ended it, when there is one
        self.provisional: SipResponse | None = None
        loop = asyncio.get_running_loop()
        self.answered: asyncio.Future[bytes] = loop.create_future()
        self.ended: asyncio.Future[str] = loop.create_future()
        # application callbacks
        self.on_terminated: Callable[[InviteSession, str], None] | None = None
        self.on_reoffer: Callable[[InviteSession, bytes], Awaitable[bytes]] | None = None
        self.on_info: Callable[[InviteSession, SipRequest], None] | None = None
        self.on_provisional: Callable[[InviteSession, SipResponse], None] | None = None
        self.on_confirmed: Callable[[InviteSession], None] | None = None
        # UAS 2xx retransmission (13.3.1.4)
        self._ok: SipResponse | None = None
        self._ok_data: bytes | None = None
        self._ok_timer: asyncio.TimerHandle | None = None
        self._ok_interval = 0.0
        self._ok_deadline = 0.0
        self._ok_tx: ServerTransaction | None = None
        # UAC state
        self._tx: ClientInviteTransaction | None = None
        self._cancel_wanted = False
        self._cancel_sent = False
        self._ack_data: bytes | None = None
        self._ack_flow: Flow | None = None
        self._reinvite_out = False
        self._reinvite_in: ServerTransaction | None = None
        self._options: dict = {}
        self.data: dict = {}   # for the application's own bookkeeping

    # ------------------------------------------------------------------------------ facts
    @property
    def call_id(self) -> str:
        return self.invite.call_id

    @property
    def caller(self) -> NameAddress:
        return self.invite.from_

    @property
    def callee(self) -> NameAddress:
        return self.invite.to

    @property
    def request_uri(self) -> Uri:
        return self.invite.uri

    @property
    def source(self) -> tuple[str, int] | None:
        return self.invite.source

    @property
    def is_terminated(self) -> bool:
        return self.state == "terminated"

    def __repr__(self) -> str:
        return f"<InviteSession {self.role} {self.state} {self.call_id}>"

    # ======================================================================= UAS: answering
    def _respond(self, status: int, reason: str | None = None, body: bytes = b"",
                 extra: list[tuple[str, str]] | None = None) -> SipResponse | None:
        tx = self.server_tx
        if tx is None or tx.answered or self.state == "terminated":
            return None
        headers = list(extra or [])
        if 100 < status < 300:
            headers.append(("Contact", self.ua.contact(tx.flow.name)))
        if status == 200:
            headers += self.ua.capabilities()[:1]
        response = self.ua.make_response(tx.request, status, reason, self.local_tag, headers, body)
        tx.respond(response)
        return response

    def ring(self) -> None:
        """180 Ringing (an early dialog)."""
        if self.state == "incoming":
            self._respond(180)

    def progress(self, sdp: bytes) -> None:
        """183 Session Progress with an answer for early media."""
        if self.state == "incoming":
            self.local_sdp = sdp
            self._respond(183, body=sdp)

    def accept(self, sdp: bytes) -> None:
        """200 OK with the answer; confirmed when the ACK arrives."""
        if self.state != "incoming":
            raise SipError(f"cannot accept a session that is {self.state}")
        self.local_sdp = sdp
        response = self._respond(200, body=sdp)
        if response is None:
            return
        self.dialog = Dialog.as_uas(self.invite, self.local_tag)
        self.dialog.state = "confirmed"
        self.ua.sessions[self.dialog.id] = self
        self.ua._pending_uas.pop(self.server_tx.key, None)
        self.state = "answered"
        self._start_ok_retransmission(response, self.server_tx)

    def reject(self, status: int, reason: str | None = None,
               extra: list[tuple[str, str]] | None = None) -> None:
        if self.state != "incoming":
            return
        self._respond(status, reason, extra=extra)
        self.end_status = status
        self._terminate("rejected")

    def _on_cancel(self) -> None:
        if self.state != "incoming":
            return
        self._respond(487)
        self.end_status = 487
        self._terminate("cancelled")

    def _start_ok_retransmission(self, response: SipResponse, tx: ServerTransaction) -> None:
        timers = self.ua.config.timers
        self._ok = response
        self._ok_tx = tx
        self._ok_data = response.serialize()
        self._ok_interval = timers.t1
        self._ok_deadline = asyncio.get_running_loop().time() + timers.b
        self._ok_timer = asyncio.get_running_loop().call_later(self._ok_interval, self._resend_ok)

    def _resend_ok(self) -> None:
        self._ok_timer = None
        if self._ok_data is None or self.state == "terminated":
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= self._ok_deadline:
            self._ok_data = None
            log.info("SIP: no ACK for 2xx of %s within 64*T1: ending it", self.call_id)
            self.end_status = 408
            self._send_bye()
            self._terminate("ack_timeout")
            return
        tx = self._ok_tx
        self.ua._send_response_data(self._ok_data, self._ok, tx.request, tx.flow, tx,
                                    retransmission=True)
        self._ok_interval = min(2 * self._ok_interval, self.ua.config.timers.t2)
        self._ok_timer = loop.call_later(self._ok_interval, self._resend_ok)

    def _stop_ok_retransmission(self) -> None:
        self._ok_data = None
        if self._ok_timer is not None:
            self._ok_timer.cancel()
            self._ok_timer = None

    def _on_ack(self, ack: SipRequest) -> None:
        if self._ok_data is None:
            return   # a retransmitted ACK
        if self._ok is not None and ack.cseq.number != self._ok.cseq.number:
            return
        self._stop_ok_retransmission()
        if self.state == "answered":
            self.state = "confirmed"
            if not self.answered.done():
                self.answered.set_result(self.remote_sdp or b"")
            if self.on_confirmed is not None:
                self.on_confirmed(self)
        if ack.body and self._options.get("awaiting_ack_answer"):
            self._options.pop("awaiting_ack_answer", None)
            self.remote_sdp = ack.body

    # ======================================================================= UAC: calling
    @classmethod
    def outgoing(cls, ua: UserAgent, target: Uri | str, *, from_: NameAddress | str,
                 to: NameAddress | str | None, sdp: bytes, address, transport,
                 credentials: Credentials | None, extra) -> InviteSession:
        target_uri = parse_uri(target) if isinstance(target, str) else target
        from_addr = parse_name_address(from_) if isinstance(from_, str) else from_
        to_addr = (parse_name_address(to) if isinstance(to, str) else to) or NameAddress(target_uri)
        local_tag = new_tag()
        host = ua.config.public_host or ua.config.host
        headers = Headers()
        headers.add("Max-Forwards", "70")
        headers.add("From", str(from_addr.with_tag(local_tag)))
        headers.add("To", str(NameAddress(to_addr.uri, to_addr.display_name)))
        headers.add("Call-ID", new_call_id(host))
        headers.add("CSeq", "1 INVITE")
        headers.add("Allow", ", ".join(ua.capabilities()[0][1].split(", ")))
        for name, value in extra or ():
            headers.add(name, value)
        if sdp:
            headers.add("Content-Type", "application/sdp")
        invite = SipRequest("INVITE", target_uri, headers, sdp)
        session = cls(ua, "uac", invite)
        session._options = {"address": address, "transport": transport, "credentials": credentials}
        return session

    def start(self) -> None:
        self.ua.spawn(self._run_uac())

    async def _run_uac(self) -> None:
        attempts = 0
        request = self.invite
        try:
            flow = await self.ua.flow_to(request.uri, self._options["transport"], self._options["address"])
        except (SipTransportError, OSError) as exc:
            self._fail_uac(SipTransportError(str(exc)), "failed", 503)
            return
        self.flow = flow
        while True:
            if self.state == "terminated":
                return
            if not request.headers.get("Contact"):
                request.headers.add("Contact", self.ua.contact(flow.name))
            self._tx = self.ua.send_request(request, flow, self._on_response)
            try:
                final = await self._tx.final
            except SipTimeout as exc:
                self._fail_uac(exc, "timeout", 408)
                return
            except SipTransportError as exc:
                self._fail_uac(exc, "failed", 503)
                return
            if 200 <= final.status < 300:
                return   # handled in _on_response
            credentials: Credentials | None = self._options.get("credentials")
            if final.status in (401, 407) and credentials is not None and attempts < MAX_AUTH_ATTEMPTS \
                    and not self._cancel_wanted:
                challenge = choose_challenge(final)
                if challenge is not None and (credentials.realm is None or credentials.realm == challenge.realm):
                    attempts += 1
                    request = self._authorized_copy(request, final, challenge, credentials)
                    self.invite = request
                    continue
            reason = "cancelled" if final.status == 487 and self._cancel_wanted else "rejected"
            self._fail_uac(SipStatusError(final.status, final.reason, final), reason, final.status)
            return

    def _authorized_copy(self, request: SipRequest, challenge_response: SipResponse, challenge,
                         credentials: Credentials) -> SipRequest:
        """The same INVITE with the next CSeq, a new branch and the digest answer (22.2)."""
        headers = request.headers.copy()
        headers.remove("Via")
        header = "Proxy-Authorization" if challenge.proxy else "Authorization"
        headers.remove(header)
        headers.set("CSeq", f"{request.cseq.number + 1} {request.method}")
        headers.add(header, authorization(challenge, credentials.username, credentials.password,
                                          request.method, request.uri.text, request.body))
        return SipRequest(request.method, request.uri, headers, request.body)

    def _on_response(self, tx, response: SipResponse) -> None:
        if tx is not self._tx and response.status < 200:
            return
        status = response.status
        if status < 200:
            if status > 100:
                self.provisional = response
                if self.state == "calling":
                    self.state = "early"
                if self.on_provisional is not None:
                    self.on_provisional(self, response)
            if self._cancel_wanted and not self._cancel_sent:
                self._send_cancel()
            return
        if status >= 300:
            return   # the transaction ACKed it; _run_uac decides
        self._on_2xx(response)

    def _on_2xx(self, response: SipResponse) -> None:
        remote_tag = response.to.tag or ""
        if self.dialog is not None and self.dialog.remote_tag != remote_tag:
            # a second fork answered: ACK it and end that dialog at once (13.2.2.4)
            other = Dialog.as_uac(self.invite, response)
            self._ack(other, response)
            self.ua.spawn(self._bye_dialog(other))
            return
        if self.dialog is not None:
            self._on_2xx_retransmission(response)
            return
        self.dialog = Dialog.as_uac(self.invite, response)
        self.dialog.state = "confirmed"
        self.ua.sessions[self.dialog.id] = self
        self.remote_sdp = response.body or None
        cancelled = self._cancel_wanted or self.state == "terminated"
        self.state = "confirmed"
        self.ua.spawn(self._confirm(response, cancelled))

    async def _confirm(self, response: SipResponse, cancelled: bool) -> None:
        """ACK the 2xx first, so nothing we send next in the dialog can overtake the ACK."""
        await self._send_ack(self.dialog, self._ack_request(self.dialog, response))
        if cancelled:
            await self.bye()
            return
        if not self.answered.done():
            self.answered.set_result(response.body)
        if self.on_confirmed is not None:
            self.on_confirmed(self)

    def _ack_request(self, dialog: Dialog, response: SipResponse) -> SipRequest:
        ack = dialog.request("ACK", cseq=response.cseq.number)
        for name in ("Authorization", "Proxy-Authorization"):
            value = self.invite.headers.get(name)
            if value:
                ack.headers.add(name, value)
        return ack

    def _ack(self, dialog: Dialog, response: SipResponse) -> None:
        self.ua.spawn(self._send_ack(dialog, self._ack_request(dialog, response)))

    async def _send_ack(self, dialog: Dialog, ack: SipRequest) -> None:
        try:
            flow = await self._dialog_flow(dialog)
            self._ack_flow = flow
            self._ack_data = self.ua.send_stateless(ack, flow)
        except (SipTransportError, OSError) as exc:
            log.info("SIP: ACK for %s not sent: %s", self.call_id, exc)

    def _on_2xx_retransmission(self, response: SipResponse) -> None:
        if self._ack_data is not None and self._ack_flow is not None:
            try:
                self._ack_flow.send(self._ack_data)
            except (SipTransportError, OSError):
                pass

    def cancel(self) -> None:
        """Stop an outgoing call that has not been answered (9.1)."""
        if self.role != "uac" or self.state not in ("calling", "early") or self._cancel_wanted:
            return
        self._cancel_wanted = True
        if self._tx is not None and self._tx.last_provisional is not None:
            self._send_cancel()

    def _send_cancel(self) -> None:
        tx = self._tx
        if tx is None or self._cancel_sent:
            return
        self._cancel_sent = True
        request = tx.request
        headers = Headers()
        headers.add("Via", request.headers.values("Via")[0])
        for route in request.headers.lines("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", request.headers.get("From"))
        headers.add("To", request.headers.get("To"))
        headers.add("Call-ID", request.call_id)
        headers.add("CSeq", f"{request.cseq.number} CANCEL")
        cancel = SipRequest("CANCEL", request.uri, headers)
        self.ua.counters["requests_out"] += 1
        self.ua.requests_sent["CANCEL"] += 1
        self.ua.layer.create_client(cancel, tx.flow)
        tx.cancel_timeout()

    def _fail_uac(self, exc: Exception, reason: str, status: int | None) -> None:
        self.end_status = status
        if not self.answered.done():
            self.answered.set_exception(exc)
            self.answered.exception()
        self._terminate(reason)

    # ================================================================ in-dialog, both roles
    async def _dialog_flow(self, dialog: Dialog) -> Flow:
        uri = dialog.next_hop_uri()
        transport = None
        if self.flow is not None:
            transport = self.flow.name
            if isinstance(uri, SipUri) and uri.transport:
                transport = uri.transport.upper()
        if self.role == "uac" and self._options.get("address") is not None and not dialog.route_set:
            # outbound through a configured trunk: the trunk stays the next hop
            return await self.ua.flow_to(uri, transport, self._options["address"])
        try:
            return await self.ua.flow_to(uri, transport)
        except (SipTransportError, OSError):
            if self.flow is not None:   # a Contact we cannot reach: back the way the call came
                return await self.ua.flow_to(uri, self.flow.name, self.flow.remote)
            raise

    async def _send_in_dialog(self, request: SipRequest, timeout: float | None = None) -> SipResponse:
        flow = await self._dialog_flow(self.dialog)
        tx = self.ua.send_request(request, flow)
        response = await tx.final
        credentials: Credentials | None = self._options.get("credentials")
        if response.status in (401, 407) and credentials is not None:
            challenge = choose_challenge(response)
            if challenge is not None:
                retry = self._authorized_copy(request, response, challenge, credentials)
                self.dialog.local_seq = retry.cseq.number
                tx = self.ua.send_request(retry, flow)
                response = await tx.final
        return response

    async def bye(self, reason: str = "local_bye") -> None:
        """End a confirmed session (15.1.1); an unanswered outgoing one is cancelled instead."""
        if self.role == "uac" and self.state in ("calling", "early"):
            self.cancel()
            return
        if self.state == "incoming":
            self.reject(480)
            return
        if self.state == "terminated" or self.dialog is None:
            return
        self._stop_ok_retransmission()
        request = self.dialog.request("BYE")
        self._terminate(reason)
        try:
            await self._send_in_dialog(request)
        except (SipError, OSError) as exc:
            log.info("SIP: BYE for %s got no answer: %s", self.call_id, exc)

    def _send_bye(self) -> None:
        if self.dialog is not None:
            request = self.dialog.request("BYE")
            self.ua.spawn(self._quiet(self._send_in_dialog(request)))

    async def _bye_dialog(self, dialog: Dialog) -> None:
        request = dialog.request("BYE")
        try:
            flow = await self._dialog_flow(dialog)
            await self.ua.send_request(request, flow).final
        except (SipError, OSError):
            pass

    @staticmethod
    async def _quiet(coro) -> None:
        try:
            await coro
        except (SipError, OSError):
            pass

    async def reinvite(self, sdp: bytes) -> bytes:
        """Send a new offer in the dialog (hold, resume); the answer SDP, or SipStatusError.
        Glare (491) is retried once after the random wait of section 14.1."""
        if self.state != "confirmed" or self.dialog is None:
            raise SipError(f"cannot re-INVITE a session that is {self.state}")
        for attempt in range(2):
            self._reinvite_out = True
            try:
                request = self.dialog.request("INVITE", sdp, extra=[("Contact", self.ua.contact(
                    self.flow.name if self.flow else "UDP"))])
                response = await self._send_in_dialog(request)
            finally:
                self._reinvite_out = False
            if 200 <= response.status < 300:
                self.dialog.update_target(response)
                await self._send_ack(self.dialog, self._ack_request(self.dialog, response))
                self.local_sdp = sdp
                self.remote_sdp = response.body or self.remote_sdp
                return response.body
            if response.status == 491 and attempt == 0:
                wait = random.uniform(2.1, 4.0) if self.role == "uac" else random.uniform(0.0, 2.0)
                await asyncio.sleep(wait * self.ua.config.timers.t1 / 0.5)
                continue
            raise SipStatusError(response.status, response.reason, response)
        raise SipStatusError(491, "Request Pending")

    def _on_request(self, tx: ServerTransaction) -> None:
        request = tx.request
        ua = self.ua
        if self.dialog is None or not self.dialog.accept_remote_seq(request):
            ua.respond(tx, 500, "CSeq Out Of Order", to_tag=self.local_tag)
            return
        method = request.method
        if method == "BYE":
            ua.respond(tx, 200)
            self._stop_ok_retransmission()
            self._terminate("remote_bye")
        elif method == "INVITE":
            self._on_reinvite(tx)
        elif method == "INFO":
            ctype = request.content_type
            if request.body and ctype not in ("application/dtmf-relay", "application/dtmf"):
                ua.respond(tx, 415, extra=[("Accept", "application/dtmf-relay, application/dtmf")])
                return
            ua.respond(tx, 200)
            if self.on_info is not None:
                self.on_info(self, request)
        elif method == "OPTIONS":
            ua.respond(tx, 200, extra=ua.capabilities())
        else:
            ua.respond(tx, 405, extra=[("Allow", ", ".join(ua.capabilities()[0][1].split(", ")))])

    def _on_reinvite(self, tx: ServerTransaction) -> None:
        """Section 14.2: 491 while our own re-INVITE is pending, 500 with Retry-After while the
        previous one from the peer is unanswered; else the new offer goes to `on_reoffer`."""
        ua = self.ua
        if self._reinvite_out:
            ua.respond(tx, 491)
            return
        if (self._reinvite_in is not None and not self._reinvite_in.answered) or self._ok_data is not None:
            ua.respond(tx, 500, extra=[("Retry-After", str(random.randint(1, 10)))])
            return
        self._reinvite_in = tx
        ua.respond(tx, 100)
        ua.spawn(self._answer_reinvite(tx))

    async def _answer_reinvite(self, tx: ServerTransaction) -> None:
        request = tx.request
        ua = self.ua
        try:
            if request.body:
                if request.content_type not in ("application/sdp",):
                    raise SipReject(415)
                if self.on_reoffer is None:
                    raise SipReject(488)
                answer = await self.on_reoffer(self, request.body)
                self.remote_sdp = request.body
            else:
                # an offerless re-INVITE: our current description is the offer; the ACK answers
                answer = self.local_sdp or b""
                self._options["awaiting_ack_answer"] = True
            self.local_sdp = answer
        except SipReject as exc:
            if not tx.answered:
                ua.respond(tx, exc.status, exc.reason, extra=exc.headers)
            return
        except Exception:
            log.exception("SIP: re-INVITE of %s failed", self.call_id)
            if not tx.answered:
                ua.respond(tx, 500)
            return
        if self.state == "terminated" or tx.answered:
            return
        self.dialog.update_target(request)
        response = ua.make_response(request, 200, None, None,
                                    [("Contact", ua.contact(tx.flow.name))], answer)
        tx.respond(response)
        self._start_ok_retransmission(response, tx)

    # ---------------------------------------------------------------------------------- end
    def _terminate(self, reason: str) -> None:
        if self.state == "terminated":
            return
        self.state = "terminated"
        self.end_reason = reason
        self._stop_ok_retransmission()
        if self.dialog is not None:
            self.dialog.state = "terminated"
            if self.ua.sessions.get(self.dialog.id) is self:
                del self.ua.sessions[self.dialog.id]
        if self.server_tx is not None:
            self.ua._pending_uas.pop(self.server_tx.key, None)
            if not self.server_tx.answered:
                try:
                    self.server_tx.respond(self.ua.make_response(
                        self.server_tx.request, 480 if reason != "shutdown" else 503, None,
                        self.local_tag))
                except RuntimeError:
                    pass
        if not self.answered.done():
            self.answered.set_exception(SipStatusError(self.end_status or 487, reason))
            self.answered.exception()
        if not self.ended.done():
            self.ended.set_result(reason)
        if self.on_terminated is not None:
            callback, self.on_terminated = self.on_terminated, None
            try:
                callback(self, reason)
            except Exception:
                log.exception("SIP: on_terminated of %s failed", self.call_id)
