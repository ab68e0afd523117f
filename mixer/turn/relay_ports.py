"""UDP ports for relayed transport addresses, from the configured range (VOICEMIX_TURN_RELAY_PORTS).

A port another process holds is skipped, so several servers (or test runs) can share a range.
"""
from __future__ import annotations

import socket

from mixer.legs.ports import bind_udp


class RelayPortsExhausted(Exception):
    """No free port is left in the range: the request gets 508 Insufficient Capacity."""


class RelayPorts:
    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high
        self._next = low
        self._used: set[int] = set()

    def bind(self, host: str, even: bool = False) -> socket.socket:
        """A non-blocking UDP socket bound to the next free port (an even one if asked)."""
        for _ in range(self.high - self.low + 1):
            port = self._next
            self._next = port + 1 if port < self.high else self.low
            if port in self._used or (even and port % 2):
                continue
            try:
                sock = bind_udp(host, port)
            except OSError:
                continue
            self._used.add(port)
            return sock
        raise RelayPortsExhausted(f"no free UDP port in {self.low}-{self.high}")

    def release(self, port: int) -> None:
        self._used.discard(port)

    @property
    def in_use(self) -> int:
        return len(self._used)
