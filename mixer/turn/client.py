"""A TURN client over TCP or TLS (RFC 8656, RFC 6062 5.1 framing): the side a firewalled softphone
runs. Used by the end-to-end tests (a simulated participant whose RTP goes through TURN), the
benchmark load, and anyone embedding voicemix who needs a relayed address.

`TurnClient` does the requests (long-term credential retries on 401/438 included);
`TurnDatagramTransport` makes an allocation look like an asyncio datagram transport, so code that
speaks UDP (`sendto(data, addr)`, `datagram_received(data, addr)`) runs over TURN unchanged.
"""
from __future__ import annotations

import asyncio
import os
import ssl as ssl_module
from collections.abc import Callable

from mixer.turn import stun
from mixer.turn._wire import StreamFramer
from mixer.turn.errors import StunError
from mixer.turn.stun import StunMessage

CHANNEL_FIRST = 0x4000
Attributes = list[tuple[int, bytes]] | Callable[[bytes], list[tuple[int, bytes]]]


class TurnRequestError(Exception):
    """The server answered a request with an error response."""

    def __init__(self, method: int, code: int, reason: str) -> None:
        super().__init__(f"TURN request 0x{method:03x} failed: {code} {reason}")
        self.code = code
        self.reason = reason


class TurnClient(asyncio.Protocol):
    """One TCP/TLS connection to a TURN server and at most one allocation on it."""

    def __init__(self, server: tuple[str, int], username: str | None = None, password: str | None = None,
                 *, ssl: ssl_module.SSLContext | None = None, integrity: str = "sha1",
                 timeout_s: float = 3.0) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.ssl = ssl
        self.integrity = integrity
        self.timeout_s = timeout_s
        self.realm: str | None = None
        self.nonce: str | None = None
        self.key: bytes | None = None
        self.relayed: tuple[str, int] | None = None
        self.mapped: tuple[str, int] | None = None
        self.lifetime: int | None = None
        self.channels: dict[tuple[str, int], int] = {}  # peer -> channel
        self._peers_by_channel: dict[int, tuple[str, int]] = {}
        self._next_channel = CHANNEL_FIRST
        self._waiting: dict[bytes, asyncio.Future] = {}
        self.on_data: Callable[[bytes, tuple[str, int]], None] = lambda data, peer: None
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()
        self.malformed = 0
        self.bind_failures = 0
        self.framer = StreamFramer(self._on_stun, self._on_broken, self._on_channel)
        self.data_received = self.framer.data_received

    # ---------------------------------------------------------------------------------- transport
    async def connect(self) -> "TurnClient":
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, *self.server, ssl=self.ssl,
                                     server_hostname=self.server[0] if self.ssl else None)
        return self

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closed.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("TURN connection closed"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    # ----------------------------------------------------------------------------------- requests
    async def transact(self, raw: bytes, transaction_id: bytes) -> StunMessage:
        """Send one raw request and wait for its response (any class)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting[transaction_id] = future
        self.write(raw)
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        finally:
            self._waiting.pop(transaction_id, None)

    def _build(self, method: int, attributes: list[tuple[int, bytes]], txid: bytes) -> bytes:
        if self.key is None:
            return stun.build(method, stun.REQUEST, txid, attributes)
        auth = [(stun.USERNAME, self.username.encode()), (stun.REALM, self.realm.encode()),
                (stun.NONCE, self.nonce.encode())]
        return stun.build(method, stun.REQUEST, txid, attributes + auth, key=self.key, integrity=self.integrity)

    async def request(self, method: int, attributes: Attributes | None = None, *,
                      check: bool = True) -> StunMessage:
        """Send an authenticated request; learn REALM/NONCE from 401 and 438 and retry (RFC 8489 9.2.3).

        `attributes` may be a function of the transaction id (XOR-PEER-ADDRESS of IPv6 needs it)."""
        response = None
        for _ in range(3):
            txid = os.urandom(12)
            values = attributes(txid) if callable(attributes) else list(attributes or [])
            response = await self.transact(self._build(method, values, txid), txid)
            error = response.error_code() if response.cls == stun.ERROR else None
            if error and error[0] in (stun.UNAUTHORIZED, stun.STALE_NONCE) and self.username is not None:
                realm, nonce = response.text(stun.REALM), response.text(stun.NONCE)
                retry = error[0] == stun.STALE_NONCE or self.key is None
                if realm and nonce:
                    self.realm, self.nonce = realm, nonce
                    self.key = stun.long_term_key(self.username, realm, self.password or "")
                if retry:
                    continue
            break
        if check and response.cls == stun.ERROR:
            code, reason = response.error_code()
            raise TurnRequestError(method, code, reason)
        return response

    async def allocate(self, lifetime: int | None = None,
                       extra: list[tuple[int, bytes]] | None = None) -> tuple[str, int]:
        attributes = [stun.uint32_attribute(stun.REQUESTED_TRANSPORT, stun.TRANSPORT_UDP << 24)]
        if lifetime is not None:
            attributes.append(stun.uint32_attribute(stun.LIFETIME, lifetime))
        response = await self.request(stun.ALLOCATE, attributes + list(extra or []))
        self.relayed = response.xor_address(stun.XOR_RELAYED_ADDRESS)
        self.mapped = response.xor_address(stun.XOR_MAPPED_ADDRESS)
        self.lifetime = response.uint32(stun.LIFETIME)
        return self.relayed

    async def refresh(self, lifetime: int | None = None) -> int:
        attributes = [] if lifetime is None else [stun.uint32_attribute(stun.LIFETIME, lifetime)]
        response = await self.request(stun.REFRESH, attributes)
        self.lifetime = response.uint32(stun.LIFETIME)
        return self.lifetime

    async def create_permission(self, *peers: tuple[str, int]) -> None:
        await self.request(stun.CREATE_PERMISSION, lambda txid: [
            (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(peer, txid)) for peer in peers])

    async def channel_bind(self, peer: tuple[str, int], number: int | None = None) -> int:
        number = self._claim_channel(peer) if number is None else number
        await self.request(stun.CHANNEL_BIND, lambda txid: [
            stun.channel_number_attribute(number), (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(peer, txid))])
        self.channels[peer] = number
        self._peers_by_channel[number] = peer
        return number

    def bind_now(self, peer: tuple[str, int]) -> int:
        """Write ChannelBind now and use the channel at once: on a stream the server handles the
        request before any ChannelData written after it. The response is checked in the background
        (a stale nonce is retried; a refusal is counted in `bind_failures`)."""
        number = self._claim_channel(peer)
        self.channels[peer] = number
        self._peers_by_channel[number] = peer
        txid = os.urandom(12)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting[txid] = future
        self.write(self._build(stun.CHANNEL_BIND, [
            stun.channel_number_attribute(number),
            (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(peer, txid))], txid))
        loop.create_task(self._confirm_bind(txid, future, peer, number))
        return number

    async def _confirm_bind(self, txid: bytes, future: asyncio.Future, peer: tuple[str, int], number: int) -> None:
        try:
            response = await asyncio.wait_for(future, self.timeout_s)
            if response.cls == stun.ERROR:
                await self.channel_bind(peer, number)  # 438 and friends: the full retry logic
        except (TurnRequestError, asyncio.TimeoutError, ConnectionError):
            self.bind_failures += 1
        finally:
            self._waiting.pop(txid, None)

    def _claim_channel(self, peer: tuple[str, int]) -> int:
        if peer in self.channels:
            return self.channels[peer]
        number = self._next_channel
        self._next_channel += 1
        return number

    # -------------------------------------------------------------------------------------- data
    def send_channel(self, number: int, payload: bytes) -> None:
        self.write(stun.channel_data(number, payload, pad=True))

    def send_indication(self, peer: tuple[str, int], payload: bytes) -> None:
        txid = os.urandom(12)
        self.write(stun.build(stun.SEND, stun.INDICATION, txid,
                              [(stun.XOR_PEER_ADDRESS, stun.encode_xor_address(peer, txid)),
                               (stun.DATA_ATTR, payload)], fingerprint=False))

    def _on_channel(self, number: int, payload: bytes) -> None:
        peer = self._peers_by_channel.get(number)
        if peer is not None:
            self.on_data(payload, peer)

    def _on_stun(self, raw: bytes) -> None:
        try:
            message = stun.parse(raw)
        except StunError:
            self.malformed += 1
            return
        if message.cls == stun.INDICATION and message.method == stun.DATA:
            try:
                peer = message.xor_address(stun.XOR_PEER_ADDRESS)
            except StunError:
                self.malformed += 1
                return
            data = message.get(stun.DATA_ATTR)
            if peer is not None and data is not None:
                self.on_data(data, peer)
            return
        future = self._waiting.get(message.transaction_id)
        if future is not None and not future.done():
            future.set_result(message)

    def _on_broken(self, reason: str) -> None:
        self.malformed += 1
        self.close()


class TurnDatagramTransport:
    """An allocation dressed as an asyncio DatagramTransport: `sendto(data, peer)` goes as ChannelData
    (bound on first use), data from peers goes to `protocol.datagram_received(data, peer)`."""

    def __init__(self, client: TurnClient, protocol: asyncio.DatagramProtocol) -> None:
        self.client = client
        self.protocol = protocol
        client.on_data = protocol.datagram_received

    @classmethod
    async def open(cls, server: tuple[str, int], username: str, password: str,
                   protocol_factory: Callable[[], asyncio.DatagramProtocol], **kwargs) -> "TurnDatagramTransport":
        client = await TurnClient(server, username, password, **kwargs).connect()
        await client.allocate()
        transport = cls(client, protocol_factory())
        transport.protocol.connection_made(transport)
        return transport

    def sendto(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        peer = (addr[0], addr[1])
        number = self.client.channels.get(peer)
        if number is None:
            number = self.client.bind_now(peer)
        self.client.send_channel(number, data)

    def get_extra_info(self, name: str, default=None):
        if name == "sockname":
            return self.client.relayed
        if name == "peername":
            return self.client.server
        return default

    def is_closing(self) -> bool:
        return self.client.transport is None

    def close(self) -> None:
        self.client.close()
        self.protocol.connection_lost(None)
