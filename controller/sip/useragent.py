"""The SIP user agent core (RFC 3261 sections 8, 12-15 and 18): transports, the transaction layer,
dialogs and INVITE sessions wired together, and the checks every UAS makes before a request
reaches the application.

`UserAgent` answers on its own what needs no application: OPTIONS (200 with Allow/Accept),
CANCEL (200, and 487 to the INVITE it cancels), requests for unknown dialogs (481), methods it
does not do (405 when it knows them, 501 when it does not, both with Allow), unsupported URI
schemes (416), Require with unknown extensions (420), bodies it cannot read (415), merged
requests (482), malformed requests (400, or 505 for another SIP version) and INVITE floods from
one address (503 with Retry-After). New INVITEs go to the application as `InviteSession`s.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.sip.auth import Credentials
from controller.sip.dialog import new_call_id, new_tag
from controller.sip.errors import SipParseError, SipTransportError
from controller.sip.ids import random_hex
from controller.sip.message import (
    BRANCH_MAGIC_COOKIE, REASON_PHRASES, Headers, SipRequest, SipResponse, Via, parse_via,
)
from controller.sip.session import InviteSession
from controller.sip.transaction import (
    ClientTransaction, ServerInviteTransaction, ServerTransaction, SipTimers, TransactionLayer,
)
from controller.sip.transport import Flow, SipTransport, SourceBudget, TcpTransport, UdpTransport
from controller.sip.uri import AbsoluteUri, NameAddress, SipUri, Uri, parse_uri

log = logging.getLogger("voicemix.sip")

# Methods this UA implements, and SIP methods it knows but does not serve (405 rather than 501)
ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO")
KNOWN_METHODS = frozenset(ALLOWED_METHODS + (
    "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER", "UPDATE"))
SUPPORTED_URI_SCHEMES = ("sip", "sips", "tel")
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset()   # option-tags for Require (section 8.2.2.3)
ACCEPTED_BODY_TYPES = ("application/sdp",)
INFO_BODY_TYPES = ("application/dtmf-relay", "application/dtmf")
FLOOD_RETRY_AFTER_S = 5


@dataclass
class UaConfig:
    host: str = "127.0.0.1"
    port: int = 5060
    transports: tuple[str, ...] = ("udp", "tcp")
    public_host: str | None = None       # advertised in Via and Contact; default: host
    tls_context: ssl.SSLContext | None = None
    tls_client_context: ssl.SSLContext | None = None
    tls_port: int | None = None          # default: port + 1
    user_agent: str = "voicemix"
    contact_user: str = "voicemix"
    timers: SipTimers = field(default_factory=SipTimers)
    max_message_bytes: int = 16384
    source_rate: float = 300.0           # messages/s per source address before dropping
    source_burst: float = 600.0
    invite_rate: float = 50.0            # new INVITEs/s per source address before 503
    invite_burst: float = 100.0


class SipApplication:
    """What the UA hands to the layer above. Override `on_invite`."""

    def on_invite(self, session: InviteSession) -> None:
        session.reject(480)


class UserAgent:
    def __init__(self, config: UaConfig, app: SipApplication | None = None) -> None:
        self.config = config
        self.app = app or SipApplication()
        self.layer = TransactionLayer(config.timers, self._send_response_data)
        self.transports: dict[str, SipTransport] = {}
        self.sessions: dict[tuple[str, str, str], InviteSession] = {}   # by dialog id
        self._pending_uas: dict[tuple, InviteSession] = {}   # INVITE server tx key -> session
        self._merge: dict[tuple, tuple] = {}                 # (from tag, call-id, cseq) -> branch key
        self.invite_budget = SourceBudget(config.invite_rate, config.invite_burst)
        self._resolved: dict[str, str] = {}
        self._tasks: set[asyncio.Task] = set()
        self.counters = {"requests_in": 0, "responses_in": 0, "responses_out": 0,
                         "requests_out": 0, "invites_in": 0, "invites_flood_rejected": 0,
                         "malformed_answered": 0, "malformed_dropped": 0, "stray_responses": 0,
                         "rejected_by_core": 0, "task_errors": 0, "handler_errors": 0}
        # by status code, each response once (retransmissions not counted), and requests by
        # method (methods outside KNOWN_METHODS as "other": a peer cannot grow the label set)
        self.responses_sent: Counter[int] = Counter()
        self.responses_received: Counter[int] = Counter()
        self.requests_sent: Counter[str] = Counter()
        self.requests_received: Counter[str] = Counter()

    # ------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        cfg = self.config
        common = dict(max_message_bytes=cfg.max_message_bytes, source_rate=cfg.source_rate,
                      source_burst=cfg.source_burst)
        port = cfg.port
        for attempt in range(20 if cfg.port == 0 else 1):
            # UDP and TCP share one port number; with port 0 the one UDP got may be taken for TCP
            try:
                port = await self._bind_udp_tcp(cfg.port, common)
                break
            except OSError:
                for transport in self.transports.values():
                    await transport.close()
                self.transports.clear()
                if attempt == (19 if cfg.port == 0 else 0):
                    raise
        if "tls" in cfg.transports and cfg.tls_context is not None:
            tls = TcpTransport(self._on_message, self._on_parse_error, ssl_context=cfg.tls_context,
                               client_ssl_context=cfg.tls_client_context, **common)
            await tls.start(cfg.host, cfg.tls_port if cfg.tls_port is not None else (port + 1 if port else 0))
            self.transports["TLS"] = tls
        if not self.transports:
            raise ValueError("no SIP transport enabled")
        log.info("SIP user agent listening on %s", ", ".join(
            f"{name.lower()}:{t.local[0]}:{t.local[1]}" for name, t in self.transports.items()))

    async def _bind_udp_tcp(self, port: int, common: dict) -> int:
        cfg = self.config
        if "udp" in cfg.transports:
            udp = UdpTransport(self._on_message, self._on_parse_error, **common)
            await udp.start(cfg.host, port)
            self.transports["UDP"] = udp
            port = udp.local[1]
        if "tcp" in cfg.transports:
            tcp = TcpTransport(self._on_message, self._on_parse_error, **common)
            await tcp.start(cfg.host, port)
            self.transports["TCP"] = tcp
            port = tcp.local[1]
        return port

    async def stop(self) -> None:
        for session in list(self.sessions.values()) + list(self._pending_uas.values()):
            session._terminate("shutdown")
        self.layer.close()
        for task in list(self._tasks):
            task.cancel()
        for transport in self.transports.values():
            await transport.close()
        self.transports.clear()

    @property
    def port(self) -> int:
        return next(iter(self.transports.values())).local[1]

    def local_address(self, transport: str = "UDP") -> tuple[str, int]:
        t = self.transports.get(transport) or next(iter(self.transports.values()))
        return (self.config.public_host or t.local[0], t.local[1])

    def contact(self, transport: str = "UDP") -> str:
        host, port = self.local_address(transport)
        host = f"[{host}]" if ":" in host else host
        suffix = "" if transport == "UDP" else f";transport={transport.lower()}"
        scheme = "sips" if transport == "TLS" else "sip"
        return f"<{scheme}:{self.config.contact_user}@{host}:{port}{suffix}>"

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters["task_errors"] += 1
            log.error("SIP task failed", exc_info=task.exception())

    # ------------------------------------------------------------------------------- receive
    def _on_message(self, message, flow: Flow) -> None:
        if isinstance(message, SipResponse):
            self.counters["responses_in"] += 1
            self.responses_received[message.status] += 1
            if self.layer.match_response(message) is None:
                self._on_stray_response(message)
            return
        self.counters["requests_in"] += 1
        self.requests_received[method_label(message.method)] += 1
        self._stamp_via(message, flow)
        if self.layer.match_request(message) is not None:
            return
        if message.method == "ACK":
            self._on_ack(message)
            return
        tx = self.layer.create_server(message, flow)
        try:
            self._dispatch(tx)
        except Exception:   # the application failed: the request still gets an answer
            self.counters["handler_errors"] += 1
            log.exception("SIP: handling %s failed", message.method)
            if not tx.answered:
                self.respond(tx, 500)

    def _stamp_via(self, request: SipRequest, flow: Flow) -> None:
        """Section 18.2.1 and RFC 3581: note where the request really came from in its top Via."""
        via = request.top_via
        params = via.params if via.params is not None else {}
        changed = False
        if via.host != flow.remote[0]:
            params["received"] = flow.remote[0]
            changed = True
        if "rport" in params and params["rport"] is None:
            params["rport"] = str(flow.remote[1])
            changed = True
        if changed:
            via.params = params
            values = request.headers.values("Via")
            values[0] = str(via)
            request.headers.remove("Via")
            for index, value in enumerate(values):
                request.headers._items.insert(index, ["Via", "via", value])

    def _on_parse_error(self, exc: SipParseError, flow: Flow) -> None:
        """Answer a malformed request when a response can be formed (8.2.6 needs its Via, From,
        To, Call-ID and CSeq), else drop it; malformed responses are dropped (RFC 4475)."""
        partial = getattr(exc, "partial", None)
        headers = partial.headers if partial is not None else None
        needed = ("Via", "From", "To", "Call-ID", "CSeq")
        if headers is None or partial.method == "ACK" or not all(headers.get(h) for h in needed):
            self.counters["malformed_dropped"] += 1
            log.debug("SIP: dropped malformed message from %s: %s", flow.remote, exc)
            return
        response_headers = Headers()
        for value in headers.values("Via"):
            response_headers.add("Via", value)
        for name in ("From", "To", "Call-ID", "CSeq"):
            response_headers.add(name, headers.get(name))
        status = exc.status
        detail = str(exc)[:80].replace("\r", " ").replace("\n", " ")
        response = SipResponse(status, f"{REASON_PHRASES.get(status, 'Bad Request')} ({detail})",
                               response_headers)
        response.headers.add("Server", self.config.user_agent)
        try:
            via = parse_via(headers.values("Via")[0])
            via.params = {**(via.params or {}), "received": flow.remote[0]}
            destination = self._response_destination(via, flow)
        except SipParseError:
            destination = flow.remote
        self.counters["malformed_answered"] += 1
        self.responses_sent[status] += 1
        try:
            if flow.connection is not None and not flow.connection.closed:
                flow.connection.write(response.serialize())
            else:
                flow.transport.send(response.serialize(), destination)
        except (SipTransportError, OSError):
            pass

    def _on_stray_response(self, response: SipResponse) -> None:
        """A 2xx to an INVITE whose transaction is gone (RFC 6026: retransmitted by the peer
        because our ACK was lost): ACK it again from its dialog."""
        self.counters["stray_responses"] += 1
        if 200 <= response.status < 300 and response.cseq.method == "INVITE":
            session = self.sessions.get((response.call_id, response.from_.tag or "", response.to.tag or ""))
            if session is not None:
                session._on_2xx_retransmission(response)

    def _on_ack(self, ack: SipRequest) -> None:
        """An ACK that matched no transaction: the ACK of a 2xx, for the dialog's session."""
        session = self.sessions.get((ack.call_id, ack.to.tag or "", ack.from_.tag or ""))
        if session is not None:
            session._on_ack(ack)

    # ------------------------------------------------------------------------------ dispatch
    def _dispatch(self, tx: ServerTransaction) -> None:
        request = tx.request
        method = request.method
        if method == "CANCEL":
            self._on_cancel(tx)
            return
        if method not in ALLOWED_METHODS:
            status = 405 if method in KNOWN_METHODS else 501
            self._core_reject(tx, status, [("Allow", ", ".join(ALLOWED_METHODS))])
            return
        if isinstance(request.uri, AbsoluteUri) and request.uri.scheme not in SUPPORTED_URI_SCHEMES:
            self._core_reject(tx, 416)
            return
        required = [t.strip() for v in request.headers.values("Require") for t in v.split(",") if t.strip()]
        unsupported = [t for t in required if t.lower() not in SUPPORTED_EXTENSIONS]
        if unsupported:
            self._core_reject(tx, 420, [("Unsupported", ", ".join(unsupported))])
            return
        to_tag = request.to.tag
        if to_tag:
            session = self.sessions.get((request.call_id, to_tag, request.from_.tag or ""))
            if session is None:
                self._core_reject(tx, 481)
                return
            session._on_request(tx)
            return
        if method == "OPTIONS":
            self.respond(tx, 200, extra=self.capabilities())
            return
        if method != "INVITE":
            self._core_reject(tx, 481)   # BYE / INFO outside any dialog
            return
        self._on_new_invite(tx)

    def capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ", ".join(ALLOWED_METHODS)), ("Accept", ", ".join(ACCEPTED_BODY_TYPES)),
                ("Accept-Encoding", "identity"), ("Accept-Language", "en")]

    def _core_reject(self, tx: ServerTransaction, status: int, extra=None) -> None:
        self.counters["rejected_by_core"] += 1
        self.respond(tx, status, extra=extra)

    def _on_new_invite(self, tx: ServerTransaction) -> None:
        request = tx.request
        self.counters["invites_in"] += 1
        assert isinstance(tx, ServerInviteTransaction)
        if not self.invite_budget.take(tx.flow.remote[0], time.monotonic()):
            self.counters["invites_flood_rejected"] += 1
            self.respond(tx, 503, extra=[("Retry-After", str(FLOOD_RETRY_AFTER_S))])
            return
        if request.body and request.content_type not in ACCEPTED_BODY_TYPES:
            self._core_reject(tx, 415, [("Accept", ", ".join(ACCEPTED_BODY_TYPES))])
            return
        accept = [a.split(";", 1)[0].strip().lower() for a in request.headers.values("Accept") if a.strip()]
        if accept and not any(a in ("application/sdp", "application/*", "*/*") for a in accept):
            # RFC 4475 3.3.15: an answer can only be SDP, which the caller says it cannot read
            self._core_reject(tx, 406, [("Warning", f'399 {self.config.user_agent} "only application/sdp"')])
            return
        encoding = request.headers.get("Content-Encoding")
        if encoding and encoding.strip().lower() != "identity":
            self._core_reject(tx, 415, [("Accept-Encoding", "identity")])
            return
        merge_key = (request.from_.tag, request.call_id, request.cseq.number)
        if merge_key in self._merge and self._merge[merge_key] != tx.key:
            self._core_reject(tx, 482)   # section 8.2.2.2: the same request by another path
            return
        self._merge[merge_key] = tx.key
        self.respond(tx, 100)
        session = InviteSession(self, "uas", request, server_tx=tx, flow=tx.flow)
        self._pending_uas[tx.key] = session
        tx.on_terminated = lambda t, key=merge_key: self._merge.pop(key, None)
        self.app.on_invite(session)

    def _on_cancel(self, tx: ServerTransaction) -> None:
        """Section 9.2: 481 when nothing matches; else 200, and 487 to the INVITE if it is still
        unanswered."""
        invite_tx = self.layer.find_server(tx.request, "INVITE")
        if invite_tx is None:
            self._core_reject(tx, 481)
            return
        self.respond(tx, 200)
        session = self._pending_uas.get(invite_tx.key)
        if session is not None and not invite_tx.answered:
            session._on_cancel()

    # ------------------------------------------------------------------------------ respond
    def make_response(self, request: SipRequest, status: int, reason: str | None = None,
                      to_tag: str | None = None, extra: list[tuple[str, str]] | None = None,
                      body: bytes = b"", content_type: str = "application/sdp") -> SipResponse:
        """Section 8.2.6.2: Via, From, To (with our tag past 100), Call-ID, CSeq copied;
        Record-Route copied on dialog-creating responses (12.1.1)."""
        headers = Headers()
        for value in request.headers.values("Via"):
            headers.add("Via", value)
        headers.add("From", request.headers.get("From"))
        to_value = request.headers.get("To")
        if status > 100 and to_tag and not request.to.tag:
            to_value = f"{to_value};tag={to_tag}"
        headers.add("To", to_value)
        headers.add("Call-ID", request.call_id)
        headers.add("CSeq", request.headers.get("CSeq"))
        if request.method == "INVITE" and 100 < status < 300:
            for value in request.headers.lines("Record-Route"):
                headers.add("Record-Route", value)
        headers.add("Server", self.config.user_agent)
        for name, value in extra or ():
            headers.add(name, value)
        if body:
            headers.add("Content-Type", content_type)
        return SipResponse(status, reason, headers, body)

    def respond(self, tx: ServerTransaction, status: int, reason: str | None = None, *,
                to_tag: str | None = None, extra=None, body: bytes = b"") -> SipResponse:
        if to_tag is None and status > 100 and not tx.request.to.tag:
            to_tag = new_tag_for(tx)
        response = self.make_response(tx.request, status, reason, to_tag, extra, body)
        tx.respond(response)
        return response

    def _send_response_data(self, data: bytes, response: SipResponse, request: SipRequest,
                            flow: Flow, tx: ServerTransaction | None,
                            retransmission: bool = False) -> bool:
        """Section 18.2.2: over a stream, the connection the request came on; over UDP, the
        received address and the rport (RFC 3581) or sent-by port."""
        self.counters["responses_out"] += 1
        if not retransmission:
            self.responses_sent[response.status] += 1
        try:
            if flow.connection is not None and not flow.connection.closed:
                flow.connection.write(data)
            else:
                flow.transport.send(data, self._response_destination(request.top_via, flow))
            return True
        except (SipTransportError, OSError) as exc:
            log.info("SIP: response %d not sent: %s", response.status, exc)
            return False

    @staticmethod
    def _response_destination(via: Via, flow: Flow) -> tuple[str, int]:
        params = via.params or {}
        host = params.get("received") or via.host
        rport = params.get("rport")
        if rport and rport.isdigit():
            return host, int(rport)
        return host, via.port or 5060

    # -------------------------------------------------------------------------------- send
    async def resolve(self, host: str) -> str:
        """An address for `host` (no RFC 3263 NAPTR/SRV: trunks are configured by host:port)."""
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            pass
        cached = self._resolved.get(host)
        if cached is not None:
            return cached
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=2)
        if not infos:
            raise SipTransportError(f"cannot resolve {host}")
        address = infos[0][4][0]
        self._resolved[host] = address
        return address

    async def flow_to(self, uri: Uri, transport: str | None = None,
                      address: tuple[str, int] | None = None) -> Flow:
        """The flow a request to `uri` (or to an explicit next-hop `address`) leaves on."""
        if transport is None:
            transport = (uri.transport or "udp").upper() if isinstance(uri, SipUri) else "UDP"
            if isinstance(uri, SipUri) and uri.secure:
                transport = "TLS"
        chosen = self.transports.get(transport)
        if chosen is None:
            raise SipTransportError(f"no {transport} transport for {uri}")
        if address is None:
            if not isinstance(uri, SipUri):
                raise SipTransportError(f"cannot route to {uri}")
            host, port = uri.address(5061 if transport == "TLS" else 5060)
            address = (await self.resolve(host), port)
        if isinstance(chosen, TcpTransport):
            connection = await chosen.connect(address)
            return Flow(chosen, address, connection)
        return Flow(chosen, address)

    def via_for(self, flow: Flow, branch: str | None = None) -> str:
        host, port = self.local_address(flow.name)
        host = f"[{host}]" if ":" in host else host
        branch = branch or BRANCH_MAGIC_COOKIE + random_hex(8)
        return f"SIP/2.0/{flow.name} {host}:{port};rport;branch={branch}"

    def send_request(self, request: SipRequest, flow: Flow,
                     on_response: Callable | None = None) -> ClientTransaction:
        """Add our Via (a new branch) and send `request` in a client transaction on `flow`."""
        request.headers.prepend("Via", self.via_for(flow))
        if "User-Agent" not in request.headers:
            request.headers.add("User-Agent", self.config.user_agent)
        request.invalidate()
        self.counters["requests_out"] += 1
        self.requests_sent[method_label(request.method)] += 1
        return self.layer.create_client(request, flow, on_response)

    def send_stateless(self, request: SipRequest, flow: Flow) -> bytes:
        """Send a request outside any transaction (the ACK of a 2xx, 13.2.2.4)."""
        request.headers.prepend("Via", self.via_for(flow))
        request.invalidate()
        data = request.serialize()
        flow.send(data)
        self.counters["requests_out"] += 1
        self.requests_sent[method_label(request.method)] += 1
        return data

    async def request(self, method: str, uri: Uri | str, *, from_: str | None = None,
                      to: str | None = None, address: tuple[str, int] | None = None,
                      transport: str | None = None, extra=None, body: bytes = b"",
                      timeout: float | None = None) -> SipResponse:
        """An out-of-dialog non-INVITE request (OPTIONS keepalives); its final response."""
        target = parse_uri(uri) if isinstance(uri, str) else uri
        flow = await self.flow_to(target, transport, address)
        host, _ = self.local_address(flow.name)
        headers = Headers()
        headers.add("Max-Forwards", "70")
        headers.add("From", f"{from_ or f'<sip:{self.config.contact_user}@{host}>'};tag={new_tag()}")
        headers.add("To", to or f"<{target.text}>")
        headers.add("Call-ID", new_call_id(host))
        headers.add("CSeq", f"1 {method}")
        headers.add("Contact", self.contact(flow.name))
        for name, value in extra or ():
            headers.add(name, value)
        if method == "OPTIONS":
            headers.add("Accept", "application/sdp")
        request = SipRequest(method, target, headers, body)
        tx = self.send_request(request, flow)
        if timeout is None:
            return await tx.final
        return await asyncio.wait_for(tx.final, timeout)

    def invite(self, target: Uri | str, *, from_: NameAddress | str, to: NameAddress | str | None = None,
               sdp: bytes = b"", address: tuple[str, int] | None = None,
               transport: str | None = None, credentials: Credentials | None = None,
               extra: list[tuple[str, str]] | None = None) -> InviteSession:
        """Start an outgoing call (UAC). Await `session.answered` for the answer SDP."""
        session = InviteSession.outgoing(self, target, from_=from_, to=to, sdp=sdp,
                                         address=address, transport=transport,
                                         credentials=credentials, extra=extra)
        session.start()
        return session

    # ------------------------------------------------------------------------------ stats
    def stats(self) -> dict:
        return {**self.counters, "sessions": len(self.sessions),
                "responses_sent_by_code": dict(self.responses_sent),
                "responses_received_by_code": dict(self.responses_received),
                "requests_sent_by_method": dict(self.requests_sent),
                "requests_received_by_method": dict(self.requests_received),
                "sessions_pending": len(self._pending_uas),
                "transactions": self.layer.stats(),
                "transports": {name: t.stats() for name, t in self.transports.items()}}


def method_label(method: str) -> str:
    """A request's method as a metric label: the SIP methods by name, anything else "other"."""
    return method if method in KNOWN_METHODS else "other"


def new_tag_for(tx: ServerTransaction) -> str:
    """One To tag per server transaction, so every response of the transaction carries the same."""
    tag = getattr(tx, "to_tag", None)
    if tag is None:
        tag = tx.to_tag = random_hex(6)
    return tag
