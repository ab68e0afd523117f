"""A raw SIP peer for the stack's tests: a real UDP (or TCP) socket on loopback that sends exactly
the bytes a test writes and records every message that comes back, so timers and error answers
are seen on the wire."""
from __future__ import annotations

import asyncio
import secrets

from controller.sip.message import parse_message
from controller.sip.transaction import SipTimers
from controller.sip.useragent import SipApplication, UaConfig, UserAgent

FAST = SipTimers(t1=0.02, t2=0.08, t4=0.1)


class RawPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list = []       # parsed messages
        self.raw: list[bytes] = []
        self.times: list[float] = []
        self.transport = None
        self.port = 0
        self._arrived = asyncio.Event()

    @classmethod
    async def open(cls) -> RawPeer:
        peer = cls()
        loop = asyncio.get_running_loop()
        peer.transport, _ = await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
        peer.port = peer.transport.get_extra_info("sockname")[1]
        return peer

    def datagram_received(self, data, addr):
        self.raw.append(data)
        self.times.append(asyncio.get_running_loop().time())
        try:
            self.received.append(parse_message(data))
        except Exception:
            self.received.append(None)
        self._arrived.set()

    def send(self, data: bytes | str, port: int) -> None:
        if isinstance(data, str):
            data = data.replace("\n", "\r\n").encode()
        self.transport.sendto(data, ("127.0.0.1", port))

    async def wait_for(self, predicate, timeout: float = 2.0):
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for message in self.received:
                if message is not None and predicate(message):
                    return message
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no matching message; got {[repr(m) for m in self.received]}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def of(self, predicate) -> list:
        return [m for m in self.received if m is not None and predicate(m)]

    def close(self) -> None:
        self.transport.close()


def request_text(method: str, port: int, *, branch: str | None = None, call_id: str | None = None,
                 cseq: int = 1, to_tag: str | None = None, from_tag: str = "peer1",
                 body: str = "", extra: str = "", uri: str = "sip:+15550100@127.0.0.1",
                 cseq_method: str | None = None) -> str:
    branch = branch or "z9hG4bK" + secrets.token_hex(6)
    call_id = call_id or secrets.token_hex(8) + "@peer"
    to = "<sip:+15550100@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    ctype = "Content-Type: application/sdp\n" if body else ""
    body_crlf = body.replace("\n", "\r\n")
    return (f"{method} {uri} SIP/2.0\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\n"
            f"Max-Forwards: 70\nFrom: <sip:+15550199@127.0.0.1>;tag={from_tag}\nTo: {to}\n"
            f"Call-ID: {call_id}\nCSeq: {cseq} {cseq_method or method}\n"
            f"Contact: <sip:peer@127.0.0.1:{port}>\n{extra}{ctype}"
            f"Content-Length: {len(body_crlf.encode())}\n\n") + body


SDP = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n"


class ScriptedApp(SipApplication):
    """Answers INVITEs as a test says: `action(session)` is called for each."""

    def __init__(self, action=None) -> None:
        self.sessions = []
        self.action = action or (lambda s: s.reject(486))

    def on_invite(self, session) -> None:
        self.sessions.append(session)
        self.action(session)


async def start_ua(app=None, **config) -> UserAgent:
    config.setdefault("timers", FAST)
    ua = UserAgent(UaConfig(port=0, **config), app)
    await ua.start()
    return ua
