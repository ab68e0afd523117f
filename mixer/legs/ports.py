"""UDP port pairs for legs: an even RTP port and the odd port above it for RTCP (RFC 3550 11)."""
from __future__ import annotations

import socket


class PortsExhausted(Exception):
    """No free port pair is left in the configured range."""


class PortAllocator:
    """Hands out even/odd port pairs from a range, skipping ports another process holds."""

    def __init__(self, low: int, high: int) -> None:
        self.low = low + (low % 2)
        self.high = high
        self._next = self.low
        self._used: set[int] = set()

    def allocate(self, host: str, rtcp_socket: bool) -> tuple[socket.socket, socket.socket | None]:
        """Bind and return (rtp_socket, rtcp_socket or None) on the next free pair."""
        span = (self.high - self.low + 1) // 2
        for _ in range(span):
            port = self._next
            self._next = self._next + 2 if self._next + 3 <= self.high else self.low
            if port in self._used:
                continue
            try:
                rtp = bind_udp(host, port)
            except OSError:
                continue
            rtcp = None
            if rtcp_socket:
                try:
                    rtcp = bind_udp(host, port + 1)
                except OSError:
                    rtp.close()
                    continue
            self._used.add(port)
            return rtp, rtcp
        raise PortsExhausted(f"no free UDP port pair in {self.low}-{self.high}")

    def release(self, port: int) -> None:
        self._used.discard(port)

    @property
    def in_use(self) -> int:
        return len(self._used)


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket on (host, port) with a 1 MB receive buffer; OSError if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
