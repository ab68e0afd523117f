"""Real-socket helpers shared by the TURN tests and benchmarks (a package module, so test files
need no imports between each other): a server on ephemeral ports, UDP peers on loopback."""
from __future__ import annotations

import asyncio
import random
from contextlib import asynccontextmanager

from mixer.turn.server import TurnServer
from mixer.turn.settings import TurnSettings

SECRET = "test-secret"
USERS = {"alice": "alice-pw", "bob": "bob-pw"}


def relay_window(size: int = 200) -> str:
    """A random relay port range below Linux's ephemeral range; busy ports are skipped anyway."""
    low = random.randrange(20000, 30000 - size)
    return f"{low}-{low + size - 1}"


def settings_for_tests(**overrides) -> TurnSettings:
    values = dict(listen="127.0.0.1:0", secret=SECRET, static_users=USERS, allow_loopback_peers=True,
                  relay_ports=relay_window(), sweep_interval_s=0.05)
    values.update(overrides)
    return TurnSettings(**values)


@asynccontextmanager
async def running_server(**overrides):
    server = TurnServer(settings_for_tests(**overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class UdpPeer(asyncio.DatagramProtocol):
    """A UDP peer on loopback that records what it receives and can echo it back."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.received: asyncio.Queue[tuple[bytes, tuple]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] | None = None

    @classmethod
    async def open(cls, host: str = "127.0.0.1", echo: bool = False) -> "UdpPeer":
        peer = cls(echo)
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: peer, local_addr=(host, 0))
        return peer

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.address = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr) -> None:
        if self.echo:
            self.transport.sendto(data, addr)
        self.received.put_nowait((data, addr))

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)

    async def next(self, timeout: float = 1.0) -> tuple[bytes, tuple]:
        return await asyncio.wait_for(self.received.get(), timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
