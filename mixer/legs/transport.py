"""UDP sockets driven straight from the event loop, with batched receive and send.

uvloop's datagram transport costs one Python callback and two `recvmsg` calls per packet, and parses
the destination address on every `sendto`. Here a socket's reader callback drains everything waiting
with one `recvmmsg` (`mixer._netio`), and sends are queued per socket and flushed once per loop
iteration with `sendmmsg`, to a destination packed into `sockaddr` form once. An SFU under load
forwards many packets per subscriber per iteration, so a flush moves many packets per system call; an
MCU sends one packet per leg per tick, and still saves the per-call address handling.
"""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from mixer import _netio

# Drain at most this many batches per readable event, so one flooded socket cannot hold the loop.
MAX_BATCHES_PER_EVENT = 4


class SendFlusher:
    """Flushes every endpoint that queued datagrams, once, at the next turn of the event loop.

    With `automatic=False` nothing is scheduled: the owner calls `flush()` itself (a benchmark that
    drives a conference's tick without an event loop)."""

    def __init__(self, automatic: bool = True) -> None:
        self._pending: list[UdpEndpoint] = []
        self._scheduled = not automatic
        self._automatic = automatic
        self.flushes = 0

    def schedule(self, endpoint: UdpEndpoint) -> None:
        self._pending.append(endpoint)
        if not self._scheduled:
            self._scheduled = True
            # the endpoint's own loop: a conference ticked from outside a running loop (a test
            # harness pumping the loop itself) still gets its sends flushed at the next turn
            loop = endpoint.loop
            if loop is None:  # closed meanwhile: its queue is dropped when it flushes
                loop = asyncio.get_running_loop()
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = not self._automatic
        pending, self._pending = self._pending, []
        for endpoint in pending:
            endpoint.flush()
        self.flushes += 1


class UdpEndpoint:
    """One non-blocking UDP socket: `handler(data, (host, port), arrival_s)` per datagram received
    (`arrival_s`: when the kernel received it, on the `time.monotonic()` clock, so a stalled process
    still knows how old what it reads is), and `send(data, packed_address)` queued until the flusher
    runs (or `flush()` now)."""

    def __init__(self, sock: socket.socket, handler: Callable[[bytes, tuple, float], None],
                 flusher: SendFlusher, batch: int = 64,
                 on_oversized: Callable[[int], None] | None = None) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.handler = handler
        self.flusher = flusher
        self._receiver = _netio.BatchReceiver(batch, timestamps=True)
        self._batch = batch
        self._on_oversized = on_oversized  # told how many datagrams were too big for a media packet
        self._truncated_seen = 0
        self._out_data: list[bytes] = []
        self._out_addresses: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.send_dropped = 0
        self.socket_errors = 0
        self.sent = 0

    def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._readable)

    def close(self) -> None:
        if self._loop is not None:
            self.flush()
            self._loop.remove_reader(self.fd)
            self._loop = None
        self.sock.close()

    @property
    def is_open(self) -> bool:
        return self._loop is not None

    def _readable(self) -> None:
        for _ in range(MAX_BATCHES_PER_EVENT):
            try:
                datagrams = self._receiver.receive(self.fd)
            except OSError:
                # e.g. ECONNREFUSED queued by an ICMP error: nothing to read, the socket is fine
                self.socket_errors += 1
                return
            if self._receiver.truncated != self._truncated_seen:
                if self._on_oversized is not None:
                    self._on_oversized(self._receiver.truncated - self._truncated_seen)
                self._truncated_seen = self._receiver.truncated
            for data, address, arrival_s in datagrams:
                self.handler(data, address, arrival_s)
            if len(datagrams) < self._batch:
                return

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def send(self, data: bytes, packed_address: bytes) -> None:
        if self._loop is None:  # closed (or not open yet): nothing can leave
            self.send_dropped += 1
            return
        if not self._out_data:
            self.flusher.schedule(self)
        self._out_data.append(data)
        self._out_addresses.append(packed_address)

    def flush(self) -> None:
        if not self._out_data or self._loop is None:
            self._out_data.clear()
            self._out_addresses.clear()
            return
        sent = _netio.send_batch(self.fd, self._out_data, self._out_addresses)
        self.sent += sent
        self.send_dropped += len(self._out_data) - sent
        self._out_data.clear()
        self._out_addresses.clear()

    def stats(self) -> dict:
        return {"receive_calls": self._receiver.calls, "received": self._receiver.packets,
                "truncated": self._receiver.truncated, "sent": self.sent,
                "send_dropped": self.send_dropped, "socket_errors": self.socket_errors}


def pack(address: tuple) -> bytes:
    """(host, port) as the sockaddr bytes `UdpEndpoint.send` takes."""
    return _netio.pack_address(address[0], address[1])
