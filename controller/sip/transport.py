"""SIP transports (RFC 3261 section 18): UDP, TCP and TLS on asyncio.

A transport receives bytes, frames and parses them into messages and hands each to the stack with
the `Flow` it came on (how to answer: the UDP socket and address, or the TCP/TLS connection).
Defences live here, before anything costly: datagrams or frames over `max_message_bytes` are
dropped (a stream that sends one is closed: it cannot be resynchronised), and every source address
has a message budget (a token bucket) so one flooding peer costs little and cannot starve others.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.sip.errors import SipParseError, SipTransportError
from controller.sip.message import SipRequest, SipResponse, find_header_end, parse_message

log = logging.getLogger("voicemix.sip")

# RFC 5626 section 3.5.1: a CRLF CRLF "ping" on a stream is answered with one CRLF "pong"
KEEPALIVE_PING = b"\r\n\r\n"
KEEPALIVE_PONG = b"\r\n"
SOURCES_TRACKED = 4096          # per-address budgets kept (least recently seen evicted)
TCP_IDLE_S = 300.0              # an idle connection is closed after this long
TCP_CONNECT_TIMEOUT_S = 5.0

Message = SipRequest | SipResponse


@dataclass(eq=False)
class Flow:
    """Where a message came from and how to send back along the same path (section 18.2.2)."""

    transport: SipTransport
    remote: tuple[str, int]
    connection: TcpConnection | None = None

    @property
    def name(self) -> str:
        return self.transport.name

    @property
    def reliable(self) -> bool:
        return self.transport.reliable

    def send(self, data: bytes) -> None:
        if self.connection is not None and not self.connection.closed:
            self.connection.write(data)
        else:
            self.transport.send(data, self.remote)


class SourceBudget:
    """At most `rate` messages a second per source address, with `burst` in reserve."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def take(self, host: str, now: float) -> bool:
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._buckets[host] = [self.burst, now]
            if len(self._buckets) > SOURCES_TRACKED:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(host)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] < 1.0:
            return False
        bucket[0] -= 1.0
        return True


@dataclass
class TransportStats:
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    malformed: int = 0
    oversized: int = 0
    rate_limited: int = 0
    send_errors: int = 0
    connections: int = 0
    extra: dict = field(default_factory=dict)


MessageHandler = Callable[[Message, Flow], None]
ErrorHandler = Callable[[SipParseError, Flow], None]


class SipTransport:
    """Base of the transports: stats, source budgets, and the hand-off to the stack."""

    name = "UDP"
    reliable = False

    def __init__(self, on_message: MessageHandler, on_error: ErrorHandler, *,
                 max_message_bytes: int = 16384, source_rate: float = 200.0,
                 source_burst: float = 400.0) -> None:
        self.on_message = on_message
        self.on_error = on_error
        self.max_message_bytes = max_message_bytes
        self.budget = SourceBudget(source_rate, source_burst)
        self.stats_ = TransportStats()
        self.local: tuple[str, int] | None = None

    def _deliver(self, data: bytes, flow: Flow, datagram: bool) -> None:
        stats = self.stats_
        stats.messages_in += 1
        stats.bytes_in += len(data)
        try:
            message = parse_message(data, datagram=datagram)
        except SipParseError as exc:
            stats.malformed += 1
            self.on_error(exc, flow)
            return
        message.source = flow.remote
        message.transport = self.name
        self.on_message(message, flow)

    def _admit(self, host: str) -> bool:
        if self.budget.take(host, time.monotonic()):
            return True
        self.stats_.rate_limited += 1
        return False

    def send(self, data: bytes, address: tuple[str, int]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def stats(self) -> dict:
        s = self.stats_
        return {"transport": self.name, "local": f"{self.local[0]}:{self.local[1]}" if self.local else None,
                "messages_in": s.messages_in, "messages_out": s.messages_out,
                "bytes_in": s.bytes_in, "bytes_out": s.bytes_out, "malformed": s.malformed,
                "oversized": s.oversized, "rate_limited": s.rate_limited,
                "send_errors": s.send_errors, "connections": s.connections}


# ---------------------------------------------------------------------------------------- UDP
class UdpTransport(SipTransport, asyncio.DatagramProtocol):
    """One UDP socket; each datagram is one message (section 18.3)."""

    name = "UDP"
    reliable = False

    def __init__(self, *args, **kwargs) -> None:
        SipTransport.__init__(self, *args, **kwargs)
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self.local = self._transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if not self._admit(addr[0]):
            return
        if len(data) > self.max_message_bytes:
            self.stats_.oversized += 1
            return
        if data in (b"\r\n\r\n", b"\r\n", b"\0\0\0\0"):   # NAT keepalives (RFC 5626 4.4.1)
            return
        self._deliver(data, Flow(self, addr[:2]), datagram=True)

    def error_received(self, exc: Exception) -> None:   # ICMP port unreachable and the like
        self.stats_.send_errors += 1

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        if self._transport is None or self._transport.is_closing():
            raise SipTransportError("UDP transport is closed")
        self._transport.sendto(data, address)
        self.stats_.messages_out += 1
        self.stats_.bytes_out += len(data)

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


# ------------------------------------------------------------------------------------ TCP/TLS
class TcpConnection(asyncio.Protocol):
    """One stream: messages framed by Content-Length (section 18.3)."""

    def __init__(self, owner: TcpTransport) -> None:
        self.owner = owner
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.remote: tuple[str, int] | None = None
        self.closed = False
        self.last_active = time.monotonic()
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = (peer[0], peer[1])
        self.owner._register(self)
        if not self.ready.done():
            self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.owner._unregister(self)
        if not self.ready.done():
            self.ready.set_exception(SipTransportError(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        self.buffer += data
        owner = self.owner
        while self.buffer and not self.closed:
            if self.buffer.startswith(KEEPALIVE_PING):
                del self.buffer[:4]
                self.write(KEEPALIVE_PONG)
                continue
            while self.buffer.startswith(b"\r\n"):   # stray CRLFs between messages
                del self.buffer[:2]
            if not self.buffer:
                return
            end, sep = find_header_end(self.buffer)
            if end < 0:
                if len(self.buffer) > owner.max_message_bytes:
                    self._overflow()
                return
            length = _content_length(bytes(self.buffer[:end]))
            if length is None:
                owner.stats_.malformed += 1
                self.abort()   # no way to know where this message ends
                return
            total = end + sep + length
            if total > owner.max_message_bytes:
                self._overflow()
                return
            if len(self.buffer) < total:
                return
            frame = bytes(self.buffer[:total])
            del self.buffer[:total]
            if not owner._admit(self.remote[0]):
                continue
            owner._deliver(frame, Flow(owner, self.remote, self), datagram=False)

    def _overflow(self) -> None:
        self.owner.stats_.oversized += 1
        self.abort()

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise SipTransportError("connection closed")
        self.transport.write(data)
        self.last_active = time.monotonic()
        self.owner.stats_.messages_out += 1
        self.owner.stats_.bytes_out += len(data)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def _content_length(head: bytes) -> int | None:
    """The Content-Length of a header block (0 when absent), None when unreadable."""
    found = None
    for line in head.split(b"\n"):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            value = value.strip()
            if not value.isdigit() or found is not None:
                return None
            found = int(value)
    return 0 if found is None else found


class TcpTransport(SipTransport):
    """A listening TCP (or TLS, with `ssl_context`) socket plus the connections it accepts or
    opens; responses go back on the connection the request came in on (section 18.2.2)."""

    reliable = True

    def __init__(self, *args, ssl_context: ssl.SSLContext | None = None,
                 client_ssl_context: ssl.SSLContext | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ssl_context = ssl_context
        self.client_ssl_context = client_ssl_context
        self.name = "TLS" if ssl_context is not None else "TCP"
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[tuple[str, int], TcpConnection] = {}
        self._connecting: dict[tuple[str, int], asyncio.Future] = {}
        self._reaper: asyncio.Task | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: TcpConnection(self), host, port,
                                                ssl=self.ssl_context, reuse_address=True)
        self.local = self._server.sockets[0].getsockname()[:2]
        self._reaper = loop.create_task(self._reap_idle())

    def _register(self, connection: TcpConnection) -> None:
        self._connections[connection.remote] = connection
        self.stats_.connections += 1

    def _unregister(self, connection: TcpConnection) -> None:
        if self._connections.get(connection.remote) is connection:
            del self._connections[connection.remote]

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        """Send on the connection to `address`, opening one if there is none (the write then
        happens once connected; a failure is counted and logged)."""
        connection = self._connections.get(address)
        if connection is not None and not connection.closed:
            connection.write(data)
            return
        task = asyncio.get_running_loop().create_task(self.send_async(data, address))
        task.add_done_callback(self._send_done)

    def _send_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.stats_.send_errors += 1
            log.info("SIP %s send failed: %s", self.name, task.exception())

    async def send_async(self, data: bytes, address: tuple[str, int]) -> None:
        connection = await self.connect(address)
        connection.write(data)

    async def connect(self, address: tuple[str, int]) -> TcpConnection:
        connection = self._connections.get(address)
        if connection is not None and not connection.closed:
            return connection
        pending = self._connecting.get(address)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._connecting[address] = future
        try:
            ssl_context = self.client_ssl_context if self.ssl_context is not None else None
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: TcpConnection(self), address[0], address[1],
                                       ssl=ssl_context), TCP_CONNECT_TIMEOUT_S)
            # the peer sees our ephemeral port; index the connection by where we dialled too
            self._connections[address] = connection
            future.set_result(connection)
            return connection
        except (OSError, asyncio.TimeoutError) as exc:
            error = SipTransportError(f"{self.name} connect to {address[0]}:{address[1]} failed: {exc!r}")
            future.set_exception(error)
            future.exception()   # retrieved: concurrent waiters re-raise it themselves
            raise error from exc
        finally:
            self._connecting.pop(address, None)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(TCP_IDLE_S / 4)
            cutoff = time.monotonic() - TCP_IDLE_S
            for connection in list(self._connections.values()):
                if connection.last_active < cutoff:
                    connection.abort()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for connection in list(self._connections.values()):
            connection.abort()
        self._connections.clear()

    def stats(self) -> dict:
        result = super().stats()
        result["open_connections"] = len(self._connections)
        return result
