"""Fuzz targets for the SIP stack: the message parser, and a live user agent on a UDP socket.

`sip_message`: `parse_message` raises only SipParseError; an accepted message serializes back to
one that parses to the same start line, headers and body; its structured views (Via, From, To,
CSeq, Contact) and a response built from it (what a UAS answers with) raise nothing else; every
Authorization/WWW-Authenticate value either parses or raises SipParseError.

`sip_ua`: every input goes to a running UserAgent as a UDP datagram from one address, then a
neighbour on another address sends a good OPTIONS and must get its 200: whatever arrived, the UA
still answers others; nothing raised on its loop, in its handlers or its tasks.
"""
from __future__ import annotations

import asyncio
import secrets
import socket
import threading

from controller.sip import InviteSession, SipApplication, SipParseError, UaConfig, UserAgent
from controller.sip.auth import parse_auth_params
from controller.sip.message import SipRequest, parse_message
from controller.sip.transaction import SipTimers
from tests.fuzz.registry import InvariantBroken, target


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise InvariantBroken(what)


def _request(method: str, extra: str = "", body: str = "", uri: str = "sip:+15550100100@127.0.0.1") -> bytes:
    body_crlf = body.replace("\n", "\r\n")
    text = (f"{method} {uri} SIP/2.0\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{secrets.token_hex(4)};rport\n"
            "Max-Forwards: 70\nFrom: \"Caller\" <sip:+15550100199@carrier.test>;tag=f1\n"
            "To: <sip:+15550100100@127.0.0.1>\nCall-ID: fuzz@carrier.test\n"
            f"CSeq: 1 {method}\nContact: <sip:carrier@127.0.0.1:5999;transport=udp>\n{extra}"
            f"Content-Length: {len(body_crlf.encode())}\n\n").replace("\n", "\r\n")
    return text.encode() + body_crlf.encode()


SDP = ("v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
       "m=audio 4000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n")


def _seeds() -> list[bytes]:
    return [
        _request("INVITE", "Content-Type: application/sdp\n", SDP),
        _request("OPTIONS", "Accept: application/sdp\nRequire: 100rel\n"),
        _request("BYE", "Authorization: Digest username=\"a\", realm=\"r\", nonce=\"n\", "
                        "uri=\"sip:x\", response=\"0\", qop=auth, nc=00000001, cnonce=\"c\"\n"),
        _request("CANCEL"),
        (b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
         b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
         b"WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256, qop=\"auth\"\r\n"
         b"Content-Length: 0\r\n\r\n"),
        b"v: SIP / 2.0 / TCP h ; branch = z9hG4bK1 ,\r\n",
    ]


def _fields(message):
    start = ((message.method, message.uri.text) if isinstance(message, SipRequest)
             else (message.status, message.reason))
    headers = [(n, v) for n, v in message.headers if n != "Content-Length"]
    return start, headers, message.body


@target("sip_message", "controller.sip.message.parse_message: SipParseError only; accepted messages "
        "round-trip; their structured views and a response built from them raise nothing else",
        seeds=_seeds, max_len=4096)
def sip_message_target():
    ua = UserAgent(UaConfig())   # not started: only its response builder is used

    def check(data: bytes) -> None:
        try:
            message = parse_message(data)
        except SipParseError:
            return
        again = parse_message(message.serialize())
        _check(_fields(again) == _fields(message), "parse(serialize(m)) != m")
        for name in ("Authorization", "WWW-Authenticate", "Proxy-Authenticate"):
            for value in message.headers.lines(name):
                try:
                    parse_auth_params(value)
                except SipParseError:
                    pass
        try:
            message.contacts
        except SipParseError:
            pass
        if isinstance(message, SipRequest):
            response = ua.make_response(message, 486, to_tag="t")
            reparsed = parse_message(response.serialize())
            _check(reparsed.status == 486 and reparsed.call_id == message.call_id,
                   "a response built from an accepted request does not parse back")
    return check


class _UaThread:
    """A UserAgent on a loop in a background thread; INVITEs get 180 then 486."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict] = []
        self.loop.set_exception_handler(lambda loop, context: self.errors.append(context))
        ready = threading.Event()
        self.ua: UserAgent | None = None

        class App(SipApplication):
            def on_invite(self, session: InviteSession) -> None:
                session.ring()
                session.reject(486)

        async def start() -> None:
            # the flood limits are wide open: the fuzzer is one address sending very fast
            self.ua = UserAgent(UaConfig(port=0, timers=SipTimers(t1=0.05, t2=0.2, t4=0.25),
                                         source_rate=1e9, source_burst=1e9, invite_rate=1e9,
                                         invite_burst=1e9), App())
            await self.ua.start()
            ready.set()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            self.loop.run_forever()
        threading.Thread(target=main, name="fuzz-sip-ua", daemon=True).start()
        ready.wait(10)


@target("sip_ua", "a live UserAgent: after any datagram it still answers a neighbour's OPTIONS; "
        "nothing raised on its loop, in its handlers or tasks", seeds=_seeds, max_len=4096)
def sip_ua_target():
    server = _UaThread()
    port = server.ua.port
    fuzzer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fuzzer.bind(("127.0.0.1", 0))
    neighbour = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    neighbour.bind(("127.0.0.1", 0))
    neighbour.settimeout(2.0)
    nport = neighbour.getsockname()[1]
    sequence = [0]

    def check(data: bytes) -> None:
        fuzzer.sendto(data, ("127.0.0.1", port))
        sequence[0] += 1
        probe = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                 f"Via: SIP/2.0/UDP 127.0.0.1:{nport};branch=z9hG4bKprobe{sequence[0]};rport\r\n"
                 f"Max-Forwards: 70\r\nFrom: <sip:n@127.0.0.1>;tag=n\r\nTo: <sip:u@127.0.0.1>\r\n"
                 f"Call-ID: probe{sequence[0]}@n\r\nCSeq: {sequence[0]} OPTIONS\r\nContent-Length: 0\r\n\r\n")
        neighbour.sendto(probe.encode(), ("127.0.0.1", port))
        while True:
            try:
                answer = neighbour.recv(65536)
            except socket.timeout:
                raise InvariantBroken("the UA stopped answering a neighbour") from None
            if f"Call-ID: probe{sequence[0]}@n".encode() in answer:
                break
        _check(answer.startswith(b"SIP/2.0 200"), f"the neighbour's OPTIONS got {answer[:40]!r}")
        counters = server.ua.counters
        _check(not server.errors, f"exception on the UA loop: {server.errors[:1]}")
        _check(counters["task_errors"] == 0 and counters["handler_errors"] == 0,
               "a SIP handler or task raised")
    return check
