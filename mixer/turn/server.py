"""The STUN binding service (RFC 8489) and TURN server (RFC 8656): UDP, TCP and TLS client transports,
UDP relayed transport. Embeddable: `TurnServer(settings)` with async `start()` / `stop()` on the
caller's event loop; `voicemix turn` is a thin shell over it.

Request handling reads like RFC 8656 section 7-11: authenticate (RFC 8489 9.2.4), refuse unknown
comprehension-required attributes (420), then the method's own checks, each with the RFC's error
code. ChannelData never comes here: the compiled framer hands it to the allocation's relay.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import struct
import time
from collections import Counter

from mixer.turn import stun
from mixer.turn._wire import CHANNEL_MAX, CHANNEL_MIN, StreamFramer, TokenBucket
from mixer.turn.allocation import Allocation
from mixer.turn.auth import Credentials, Identity
from mixer.turn.errors import StunError
from mixer.turn.peers import PeerFilter
from mixer.turn.relay_ports import RelayPorts, RelayPortsExhausted
from mixer.turn.settings import TurnSettings, split_hostport
from mixer.turn.stun import StunMessage

log = logging.getLogger("voicemix.turn")

TURN_REQUESTS = (stun.ALLOCATE, stun.REFRESH, stun.CREATE_PERMISSION, stun.CHANNEL_BIND)
METHOD_NAMES = {stun.BINDING: "binding", stun.ALLOCATE: "allocate", stun.REFRESH: "refresh",
                stun.CREATE_PERMISSION: "create_permission", stun.CHANNEL_BIND: "channel_bind",
                stun.SEND: "send", stun.DATA: "data"}


class _Reject(Exception):
    """A request answered with an error response (code, extra attributes)."""

    def __init__(self, code: int, attributes: list[tuple[int, bytes]] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.attributes = attributes or []


class _Link:
    """Where a message came from and how to answer: one TCP/TLS connection or one UDP source."""

    kind: str
    remote: tuple[str, int]
    key: object

    def send(self, data: bytes) -> None:
        raise NotImplementedError


class _UdpLink(_Link):
    kind = "udp"

    def __init__(self, transport: asyncio.DatagramTransport, remote: tuple) -> None:
        self.transport = transport
        self.remote = (remote[0], remote[1])
        self.key = ("udp", self.remote)

    def send(self, data: bytes) -> None:
        self.transport.sendto(data, self.remote)


class _StreamLink(_Link, asyncio.Protocol):
    """One TCP (or TLS) client connection; its bytes go straight into the compiled framer."""

    def __init__(self, server: "TurnServer", kind: str) -> None:
        self.server = server
        self.kind = kind
        self.key = self
        self.transport: asyncio.Transport | None = None
        self.remote = ("", 0)
        self.opened = time.monotonic()
        self.framer = StreamFramer(self._on_stun, self._on_broken)
        # Set before the loop binds the protocol: every read goes to Cython with no Python frame.
        self.data_received = self.framer.data_received

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.remote = (peer[0], peer[1]) if peer else ("", 0)
        if len(self.server._links) >= self.server.settings.max_tcp_connections:
            self.server.counters["tcp_refused_full"] += 1
            transport.abort()
            return
        transport.set_write_buffer_limits(high=self.server.settings.max_tcp_buffer)
        self.server._links.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._link_closed(self)

    def pause_writing(self) -> None:
        if self.framer.relay is not None:
            self.framer.relay.client_paused = True

    def resume_writing(self) -> None:
        if self.framer.relay is not None:
            self.framer.relay.client_paused = False

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _on_stun(self, raw: bytes) -> None:
        self.server.handle_stun(self, raw)

    def _on_broken(self, reason: str) -> None:
        self.server.counters["stream_broken"] += 1
        log.debug("closing %s client %s:%d: %s", self.kind, *self.remote, reason)
        self.close()


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, server: "TurnServer") -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if data and 0x40 <= data[0] < 0x80:  # ChannelData (RFC 8656 12): first two bits 0b01
            allocation = self.server.allocations.get(("udp", (addr[0], addr[1])))
            if allocation is None:
                self.server.counters["channel_data_without_allocation"] += 1
                return
            allocation.relay.channel_datagram(data)
            return
        self.server.handle_stun(_UdpLink(self.transport, addr), data)

    def error_received(self, exc: Exception) -> None:
        self.server.counters["socket_errors"] += 1


class TurnServer:
    """STUN + TURN on one event loop. `start()` binds the listeners; `stop()` closes everything."""

    def __init__(self, settings: TurnSettings | None = None) -> None:
        self.settings = settings or TurnSettings()
        s = self.settings
        self.credentials = Credentials(s.realm, s.secret, s.static_users, s.nonce_lifetime_s)
        self.peer_filter = PeerFilter(s.allow_loopback_peers, s.allowed_peer_ips)
        self.relay_ports = RelayPorts(*s.port_range)
        self.allocations: dict[object, Allocation] = {}
        self._user_allocations: Counter[str] = Counter()
        self._user_buckets: dict[str, TokenBucket] = {}
        self._links: set[_StreamLink] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._sweeper: asyncio.Task | None = None
        self.counters: Counter[str] = Counter()
        self.closed_totals: Counter[str] = Counter()
        self.udp_address: tuple[str, int] | None = None
        self.tcp_address: tuple[str, int] | None = None
        self.tls_address: tuple[str, int] | None = None

    # ---------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        host, port = split_hostport(s.listen)
        # Port 0: TCP takes an ephemeral port and UDP the same number; if that UDP port is taken
        # (another socket holds it), try another.
        for attempt in range(20 if port == 0 else 1):
            try:
                await self._listen(loop, host, port)
                break
            except OSError:
                for server in self._servers:
                    server.close()
                self._servers.clear()
                if attempt == 19 or port != 0:
                    raise
        if s.tls_listen:
            if not (s.tls_cert and s.tls_key):
                raise ValueError("tls_listen needs tls_cert and tls_key")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(s.tls_cert, s.tls_key)
            tls_host, tls_port = split_hostport(s.tls_listen)
            server = await loop.create_server(lambda: _StreamLink(self, "tls"), tls_host, tls_port,
                                              ssl=context)
            self._servers.append(server)
            self.tls_address = server.sockets[0].getsockname()[:2]
        self._sweeper = loop.create_task(self._sweep_forever())
        log.info("turn started: udp %s tcp %s tls %s, relay %s ports %s, turn %s", _fmt(self.udp_address),
                 _fmt(self.tcp_address), _fmt(self.tls_address), s.relay_ip, s.relay_ports,
                 "enabled" if s.enabled else "disabled (STUN binding only)")

    async def _listen(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        s = self.settings
        if s.listen_tcp:
            server = await loop.create_server(lambda: _StreamLink(self, "tcp"), host, port)
            self._servers.append(server)
            self.tcp_address = server.sockets[0].getsockname()[:2]
            port = port or self.tcp_address[1]
        if s.listen_udp:
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _UdpListener(self),
                                                               local_addr=(host, port))
            self.udp_address = self._udp.get_extra_info("sockname")[:2]

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for key in list(self.allocations):
            self._delete(key, "shutdown")
        for server in self._servers:
            server.close()
        for link in list(self._links):
            link.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        log.info("turn stopped: udp %s tcp %s tls %s", _fmt(self.udp_address), _fmt(self.tcp_address),
                 _fmt(self.tls_address))

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            self.sweep()

    def sweep(self, now: float | None = None) -> None:
        """Delete expired allocations, permissions and channels; close idle TCP clients."""
        now = time.monotonic() if now is None else now
        for key, allocation in list(self.allocations.items()):
            if allocation.expired(now):
                self._delete(key, "expired")
            else:
                allocation.sweep(now)
        idle = self.settings.tcp_idle_s
        for link in list(self._links):
            if link not in self.allocations and now - link.opened > idle:
                self.counters["tcp_idle_closed"] += 1
                link.opened = now
                link.close()

    def _link_closed(self, link: _StreamLink) -> None:
        self._links.discard(link)
        if link in self.allocations:
            self._delete(link, "connection closed")

    # ------------------------------------------------------------------------------- dispatching
    def handle_stun(self, link: _Link, raw: bytes) -> None:
        """One STUN message from a client: answer it, or drop and count it."""
        try:
            message = stun.parse(raw)
        except StunError:
            self.counters["malformed"] += 1
            return
        if message.cls == stun.REQUEST:
            self.counters[f"requests_{METHOD_NAMES.get(message.method, 'unknown')}"] += 1
            if message.method == stun.BINDING:
                self._binding(link, message)
            elif not self.settings.enabled:
                self.counters["turn_disabled"] += 1
            elif message.method in TURN_REQUESTS:
                self._turn_request(link, message)
            else:
                self._respond_error(link, message, stun.BAD_REQUEST, None)
        elif message.cls == stun.INDICATION:
            if message.method == stun.SEND and self.settings.enabled:
                self._send_indication(link, message)
            elif message.method != stun.BINDING:  # binding indications are keep-alives
                self.counters["ignored_indications"] += 1
        else:
            self.counters["ignored_responses"] += 1

    def _binding(self, link: _Link, message: StunMessage) -> None:
        """RFC 8489 6.3.1: answer with the client's transport address as the server saw it."""
        unknown = message.unknown_required()
        if unknown:
            self._respond_error(link, message, stun.UNKNOWN_ATTRIBUTE, None,
                                [(stun.UNKNOWN_ATTRIBUTES, struct.pack(f"!{len(unknown)}H", *unknown))])
            return
        attributes = [(stun.XOR_MAPPED_ADDRESS, stun.encode_xor_address(link.remote, message.transaction_id)),
                      (stun.MAPPED_ADDRESS, stun.encode_address(link.remote)),
                      (stun.SOFTWARE, self.settings.software.encode())]
        link.send(stun.build(stun.BINDING, stun.SUCCESS, message.transaction_id, attributes))
        self.counters["responses_binding"] += 1

    def _turn_request(self, link: _Link, message: StunMessage) -> None:
        identity = None
        try:
            identity = self._authenticate(link, message)
            unknown = message.unknown_required()
            if unknown:
                raise _Reject(stun.UNKNOWN_ATTRIBUTE,
                              [(stun.UNKNOWN_ATTRIBUTES, struct.pack(f"!{len(unknown)}H", *unknown))])
            handler = {stun.ALLOCATE: self._allocate, stun.REFRESH: self._refresh,
                       stun.CREATE_PERMISSION: self._create_permission,
                       stun.CHANNEL_BIND: self._channel_bind}[message.method]
            attributes = handler(link, message, identity)
            if attributes is None:  # answered later (Allocate binds a socket first)
                return
            self._respond(link, message, identity, attributes)
        except _Reject as reject:
            self._respond_error(link, message, reject.code, identity, reject.attributes)
        except StunError:
            self.counters["malformed"] += 1
            self._respond_error(link, message, stun.BAD_REQUEST, identity)

    def _respond(self, link: _Link, message: StunMessage, identity: Identity,
                 attributes: list[tuple[int, bytes]]) -> None:
        attributes = attributes + [(stun.SOFTWARE, self.settings.software.encode())]
        link.send(stun.build(message.method, stun.SUCCESS, message.transaction_id, attributes,
                             key=identity.key, integrity=stun.integrity_kind(message) or "sha1"))
        self.counters[f"responses_{METHOD_NAMES[message.method]}"] += 1

    def _respond_error(self, link: _Link, message: StunMessage, code: int, identity: Identity | None,
                       attributes: list[tuple[int, bytes]] | None = None) -> None:
        """An error response; integrity-protected when the request authenticated (RFC 8489 9.2.4)."""
        attributes = [stun.error_attribute(code)] + (attributes or [])
        key = identity.key if identity is not None else None
        link.send(stun.build(message.method, stun.ERROR, message.transaction_id, attributes, key=key,
                             integrity=stun.integrity_kind(message) or "sha1"))
        self.counters[f"errors_{code}"] += 1

    # ---------------------------------------------------------------------------- authentication
    def _challenge(self) -> list[tuple[int, bytes]]:
        return [(stun.REALM, self.settings.realm.encode()),
                (stun.NONCE, self.credentials.new_nonce().encode())]

    def _authenticate(self, link: _Link, message: StunMessage) -> Identity:
        """RFC 8489 9.2.4: 401 without integrity, 400 incomplete, 438 stale nonce, 401 bad user or
        key; RFC 8656 6.4: 441 when the allocation was made with other credentials."""
        if stun.integrity_kind(message) is None:
            raise _Reject(stun.UNAUTHORIZED, self._challenge())
        username, realm, nonce = message.text(stun.USERNAME), message.text(stun.REALM), message.text(stun.NONCE)
        if username is None or realm is None or nonce is None:
            raise _Reject(stun.BAD_REQUEST)
        if not self.credentials.nonce_valid(nonce) or realm != self.settings.realm:
            raise _Reject(stun.STALE_NONCE, self._challenge())
        identity = self.credentials.identity(username)
        if identity is None or not stun.check_integrity(message, identity.key):
            self.counters["auth_failures"] += 1
            raise _Reject(stun.UNAUTHORIZED, self._challenge())
        allocation = self.allocations.get(link.key)
        if allocation is not None and allocation.identity.username != username:
            raise _Reject(stun.WRONG_CREDENTIALS)
        return identity

    # ------------------------------------------------------------------------------------ methods
    def _lifetime(self, message: StunMessage) -> float:
        """Refresh (RFC 8656 7.3): the requested lifetime capped at the maximum, else the default."""
        requested = message.uint32(stun.LIFETIME)
        default = self.settings.allocation_lifetime_s
        return min(float(requested) if requested is not None else default,
                   self.settings.max_allocation_lifetime_s)

    def _allocate(self, link: _Link, message: StunMessage, identity: Identity):
        """RFC 8656 7.2."""
        existing = self.allocations.get(link.key)
        if existing is not None:
            if existing.allocate_txid == message.transaction_id and existing.allocate_response:
                link.send(existing.allocate_response)  # a retransmission gets the same answer
                return None
            raise _Reject(stun.ALLOCATION_MISMATCH)
        transport = message.get(stun.REQUESTED_TRANSPORT)
        if transport is None or len(transport) != 4:
            raise _Reject(stun.BAD_REQUEST)
        if transport[0] != stun.TRANSPORT_UDP:
            raise _Reject(stun.UNSUPPORTED_TRANSPORT_PROTOCOL)
        family = message.get(stun.REQUESTED_ADDRESS_FAMILY)
        if family is not None and (len(family) != 4 or family[0] != stun.FAMILY_IPV4):
            raise _Reject(stun.ADDRESS_FAMILY_NOT_SUPPORTED)
        even = message.get(stun.EVEN_PORT)
        if even is not None and len(even) != 1:
            raise _Reject(stun.BAD_REQUEST)
        if self._user_allocations[identity.user] >= self.settings.user_quota:
            raise _Reject(stun.ALLOCATION_QUOTA_REACHED)
        if len(self.allocations) >= self.settings.max_allocations:
            raise _Reject(stun.INSUFFICIENT_CAPACITY)
        try:
            sock = self.relay_ports.bind(self.settings.relay_ip, even=even is not None)
        except RelayPortsExhausted:
            raise _Reject(stun.INSUFFICIENT_CAPACITY) from None
        # RFC 8656 7.2: a request below the default gets the default; above the maximum, the maximum
        lifetime = max(self._lifetime(message), self.settings.allocation_lifetime_s)
        user = identity.user
        bucket = self._user_buckets.get(user)
        if bucket is None:
            rate = float(self.settings.bandwidth_bytes_s)
            bucket = self._user_buckets[user] = TokenBucket(rate, rate)
        allocation = Allocation(link.key, identity, link.remote, link.kind, link.send, bucket, lifetime)
        allocation.relay.open(sock, asyncio.get_running_loop())
        allocation.relayed_addr = sock.getsockname()[:2]
        self.allocations[link.key] = allocation
        self._user_allocations[user] += 1
        if isinstance(link, _StreamLink):
            link.framer.relay = allocation.relay
        attributes = [
            (stun.XOR_RELAYED_ADDRESS, stun.encode_xor_address(allocation.relayed_addr, message.transaction_id)),
            stun.uint32_attribute(stun.LIFETIME, int(lifetime)),
            (stun.XOR_MAPPED_ADDRESS, stun.encode_xor_address(link.remote, message.transaction_id)),
            (stun.SOFTWARE, self.settings.software.encode()),
        ]
        response = stun.build(stun.ALLOCATE, stun.SUCCESS, message.transaction_id, attributes,
                              key=identity.key, integrity=stun.integrity_kind(message) or "sha1")
        allocation.allocate_txid = message.transaction_id
        allocation.allocate_response = response
        link.send(response)
        self.counters["responses_allocate"] += 1
        self.counters["allocations_created"] += 1
        log.debug("allocation %s for %s (%s %s:%d)", allocation.relayed_addr, user, link.kind, *link.remote)
        return None

    def _allocation(self, link: _Link) -> Allocation:
        allocation = self.allocations.get(link.key)
        if allocation is None:
            raise _Reject(stun.ALLOCATION_MISMATCH)
        return allocation

    def _refresh(self, link: _Link, message: StunMessage, identity: Identity):
        """RFC 8656 7.3: a new lifetime, or deletion with LIFETIME 0."""
        allocation = self._allocation(link)
        lifetime = self._lifetime(message)
        if lifetime <= 0:
            self._delete(link.key, "deleted by client")
        else:
            allocation.refresh(lifetime)
        return [stun.uint32_attribute(stun.LIFETIME, int(max(lifetime, 0)))]

    def _peer(self, allocation: Allocation, peer: tuple[str, int]) -> tuple[str, int]:
        relay_v6 = ":" in allocation.relayed_addr[0]
        if (":" in peer[0]) != relay_v6:
            raise _Reject(stun.PEER_ADDRESS_FAMILY_MISMATCH)
        if not self.peer_filter.permits(peer[0]):
            self.counters["peers_refused"] += 1
            raise _Reject(stun.FORBIDDEN)
        return peer

    def _create_permission(self, link: _Link, message: StunMessage, identity: Identity):
        """RFC 8656 9.2: all peers are checked before any permission is installed."""
        allocation = self._allocation(link)
        peers = message.xor_addresses(stun.XOR_PEER_ADDRESS)
        if not peers:
            raise _Reject(stun.BAD_REQUEST)
        for peer in peers:
            self._peer(allocation, peer)
        for peer in peers:
            allocation.permit(peer[0], self.settings.permission_lifetime_s)
        return []

    def _channel_bind(self, link: _Link, message: StunMessage, identity: Identity):
        """RFC 8656 11.2: one peer per channel and one channel per peer. Numbers: 0x4000-0x4FFF
        (RFC 8656) and, for older clients such as coturn's, the rest of RFC 5766's 0x4000-0x7FFF."""
        allocation = self._allocation(link)
        number = stun.channel_number(message)
        peer = message.xor_address(stun.XOR_PEER_ADDRESS)
        if number is None or peer is None or not CHANNEL_MIN <= number <= CHANNEL_MAX:
            raise _Reject(stun.BAD_REQUEST)
        bound = allocation.channels.get(number)
        if bound is not None and bound[0] != peer:
            raise _Reject(stun.BAD_REQUEST)
        other = allocation.channel_of(peer)
        if other is not None and other != number:
            raise _Reject(stun.BAD_REQUEST)
        self._peer(allocation, peer)
        allocation.bind(number, peer, self.settings.channel_lifetime_s, self.settings.permission_lifetime_s)
        return []

    def _send_indication(self, link: _Link, message: StunMessage) -> None:
        """RFC 8656 10.2: relay DATA to the peer if a permission exists; otherwise drop silently."""
        allocation = self.allocations.get(link.key)
        try:
            peer = message.xor_address(stun.XOR_PEER_ADDRESS)
            data = message.get(stun.DATA_ATTR)
        except StunError:
            self.counters["malformed"] += 1
            return
        if allocation is None or peer is None or data is None or message.unknown_required():
            self.counters["send_indications_dropped"] += 1
            return
        if not allocation.send_to_peer(peer, data):
            self.counters["send_indications_dropped"] += 1

    # -------------------------------------------------------------------------------- bookkeeping
    def _delete(self, key: object, why: str) -> None:
        allocation = self.allocations.pop(key, None)
        if allocation is None:
            return
        allocation.close()
        if allocation.relayed_addr is not None:
            self.relay_ports.release(allocation.relayed_addr[1])
        user = allocation.identity.user
        self._user_allocations[user] -= 1
        if self._user_allocations[user] <= 0:
            del self._user_allocations[user]
            self._user_buckets.pop(user, None)
        if isinstance(key, _StreamLink):
            key.framer.relay = None
        stats = allocation.relay.stats()
        for name in ("to_peer_packets", "to_peer_bytes", "to_client_packets", "to_client_bytes"):
            self.closed_totals[name] += stats[name]
        self.counters[f"allocations_{why.replace(' ', '_')}"] += 1

    def stats(self) -> dict:
        """Counters, live allocations, and relay totals (closed allocations included)."""
        now = time.monotonic()
        totals = Counter(self.closed_totals)
        for allocation in self.allocations.values():
            for name, value in allocation.relay.stats().items():
                if name in ("to_peer_packets", "to_peer_bytes", "to_client_packets", "to_client_bytes"):
                    totals[name] += value
        return {
            "enabled": self.settings.enabled,
            "allocations": len(self.allocations),
            "tcp_connections": len(self._links),
            "relay_ports_in_use": self.relay_ports.in_use,
            "counters": dict(self.counters),
            "relay": dict(totals),
            "allocation_list": [a.stats(now) for a in self.allocations.values()],
        }


def _fmt(address: tuple[str, int] | None) -> str:
    return f"{address[0]}:{address[1]}" if address else "-"
