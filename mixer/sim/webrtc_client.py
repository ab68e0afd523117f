"""A scripted WebRTC client for tests that must misbehave on purpose.

aiortc and Chromium are the honest peers; this one sends exactly what a test tells it to: checks
with a wrong password or without USE-CANDIDATE, a fingerprint that does not match its certificate,
garbage DTLS records, a second ClientHello on an established association, an ICE restart. It is
built from the product's own protocol pieces (STUN codec, DTLS transport, SRTP context) acting as
the full agent and DTLS client.
"""
from __future__ import annotations

import asyncio
import secrets
import time

from mixer import _rtp
from mixer.legs.demux import DTLS, RTP, STUN, classify
from mixer.legs.dtls import DtlsCertificate, DtlsSrtpTransport
from mixer.legs.ice import IceCredentials
from mixer.rtp.rtcp import is_rtcp
from mixer.rtp.srtp import SrtpContext
from mixer.sdp import parse
from mixer.turn import stun


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: ScriptedWebRtcClient) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr) -> None:
        self.owner._on_datagram(data, addr)

    def error_received(self, exc) -> None:
        pass


class ScriptedWebRtcClient:
    """`offer()` -> engine -> `accept(answer)` -> `check()` / `handshake()` / `send_rtp()`."""

    def __init__(self, *, host: str = "127.0.0.1", setup: str = "actpass",
                 fingerprint_of: DtlsCertificate | None = None, recvonly_slots: int = 0) -> None:
        self.host = host
        self.setup = setup
        self.certificate = DtlsCertificate.generate()
        # the fingerprint the offer claims: our own certificate's unless told to lie
        self.claimed = fingerprint_of or self.certificate
        self.recvonly_slots = recvonly_slots
        self.ice = IceCredentials.generate()
        self.remote_ice: IceCredentials | None = None
        self.remote_fingerprint: str | None = None
        self.engine: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.dtls: DtlsSrtpTransport | None = None
        self.srtp: SrtpContext | None = None
        self.stun_responses: dict[bytes, asyncio.Future] = {}
        self.rtp: list[_rtp.RtpPacket] = []
        self.rtcp = 0
        self.bad_srtp = 0
        self.ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self),
                                                                local_addr=(self.host, 0))

    @property
    def address(self) -> tuple[str, int]:
        return self.transport.get_extra_info("sockname")[:2]

    def offer(self, ice: IceCredentials | None = None) -> str:
        ice = ice or self.ice
        lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0",
                 "a=group:BUNDLE " + " ".join(str(i) for i in range(1 + self.recvonly_slots))]
        for mid in range(1 + self.recvonly_slots):
            lines += [f"m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0",
                      f"a=ice-ufrag:{ice.ufrag}", f"a=ice-pwd:{ice.pwd}",
                      f"a=fingerprint:sha-256 {self.claimed.fingerprint}", f"a=setup:{self.setup}",
                      f"a=mid:{mid}", "a=sendrecv" if mid == 0 else "a=recvonly", "a=rtcp-mux",
                      "a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1",
                      "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level"]
        return "\r\n".join(lines) + "\r\n"

    def accept(self, answer_sdp: str) -> None:
        answer = parse(answer_sdp)
        media = answer.media[0]
        self.remote_ice = IceCredentials(media.attribute("ice-ufrag"), media.attribute("ice-pwd"))
        self.remote_fingerprint = media.attribute("fingerprint").split()[1]
        candidate = media.attribute("candidate").split()
        self.engine = (candidate[4], int(candidate[5]))

    # ------------------------------------------------------------------------------------- ICE
    def check_request(self, *, use_candidate: bool = True, password: str | None = None,
                      ufrag: str | None = None, controlled: bool = False,
                      fingerprint: bool = True) -> tuple[bytes, bytes]:
        """(transaction id, a Binding request as a controlling full agent would send it)."""
        txid = secrets.token_bytes(12)
        username = f"{ufrag or self.remote_ice.ufrag}:{self.ice.ufrag}".encode()
        attributes = [(stun.USERNAME, username), (stun.PRIORITY, (1 << 24).to_bytes(4, "big"))]
        if controlled:
            attributes.append((stun.ICE_CONTROLLED, secrets.token_bytes(8)))
        else:
            attributes.append((stun.ICE_CONTROLLING, secrets.token_bytes(8)))
        if use_candidate:
            attributes.append((stun.USE_CANDIDATE, b""))
        key = (password or self.remote_ice.pwd).encode()
        return txid, stun.build(stun.BINDING, stun.REQUEST, txid, attributes, key=key,
                                fingerprint=fingerprint)

    async def check(self, timeout_s: float = 2.0, **kwargs) -> stun.StunMessage:
        txid, request = self.check_request(**kwargs)
        future = asyncio.get_running_loop().create_future()
        self.stun_responses[txid] = future
        self.send_raw(request)
        try:
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self.stun_responses.pop(txid, None)

    # ------------------------------------------------------------------------------------ DTLS
    async def handshake(self, timeout_s: float = 5.0) -> str:
        """Run DTLS as the client (the engine answered passive); the final state."""
        done = asyncio.Event()
        self.dtls = DtlsSrtpTransport(self.certificate, server=self.setup == "passive",
                                      remote_fingerprints=[("sha-256", self.remote_fingerprint)],
                                      send=self.send_raw, on_state=lambda _t: done.set())
        self.dtls.start()
        try:
            await asyncio.wait_for(done.wait(), timeout_s)
        except asyncio.TimeoutError:
            return self.dtls.state
        if self.dtls.state == "connected":
            keys = self.dtls.keys
            self.srtp = SrtpContext(keys.suite, keys.local_key, keys.remote_key)
        return self.dtls.state

    async def connect(self) -> None:
        response = await self.check()
        assert response.cls == stun.SUCCESS, response.error_code()
        state = await self.handshake()
        assert state == "connected", (state, self.dtls.failure)

    # ------------------------------------------------------------------------------------ media
    def send_raw(self, data: bytes) -> None:
        self.transport.sendto(data, self.engine)

    def send_rtp(self, payload: bytes, payload_type: int = 111) -> None:
        packet = _rtp.build_rtp(payload_type, self._seq, self._ts, self.ssrc, payload, False)
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + 960) & 0xFFFFFFFF
        self.send_raw(self.srtp.protect(packet))

    def _on_datagram(self, data: bytes, addr) -> None:
        kind = classify(data)
        if kind == STUN:
            try:
                message = stun.parse(data)
            except Exception:
                return
            future = self.stun_responses.get(message.transaction_id)
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == DTLS and self.dtls is not None:
            self.dtls.receive(data)
        elif kind == RTP and self.srtp is not None:
            if is_rtcp(data):
                self.rtcp += 1 if self.srtp.unprotect_rtcp(data) is not None else 0
                return
            plain = self.srtp.unprotect(data)
            if plain is None:
                self.bad_srtp += 1
                return
            self.rtp.append(_rtp.RtpPacket.parse(plain))

    async def wait_for_rtp(self, count: int, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.rtp) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
