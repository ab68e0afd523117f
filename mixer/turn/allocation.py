"""One TURN allocation (RFC 8656 2.2): a relayed UDP socket, its permissions and channel bindings.

The hot path lives in the compiled `ChannelRelay` (which owns the relayed socket); this class owns
the lifetimes and keeps the relay's lookup tables equal to "channels whose binding and whose peer's
permission are both live", so a lookup there is the whole permission check.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

from mixer.turn._wire import ChannelRelay, TokenBucket
from mixer.turn.auth import Identity
from mixer.turn.stun import DATA, DATA_ATTR, INDICATION, XOR_PEER_ADDRESS, build, encode_xor_address


class Allocation:
    def __init__(self, key: object, identity: Identity, client_addr: tuple[str, int], transport_kind: str,
                 client_send: Callable[[bytes], None], bucket: TokenBucket, lifetime_s: float,
                 now: float | None = None) -> None:
        self.key = key
        self.identity = identity
        self.client_addr = client_addr
        self.transport_kind = transport_kind
        self.client_send = client_send
        self.relay = ChannelRelay(client_send, transport_kind != "udp", self._from_unbound_peer, bucket)
        self.relayed_addr: tuple[str, int] | None = None
        self.created = time.monotonic() if now is None else now
        self.expires = self.created + lifetime_s
        self.permissions: dict[str, float] = {}               # peer IP -> expiry (RFC 8656 9)
        self.channels: dict[int, tuple[tuple[str, int], float]] = {}  # number -> (peer, expiry)
        self.allocate_txid: bytes | None = None               # retransmitted Allocate -> same answer
        self.allocate_response: bytes | None = None
        self.data_indications_out = 0
        self.send_indications_in = 0
        self.drop_no_permission = 0

    # --------------------------------------------------------------------------------- lifetimes
    def refresh(self, lifetime_s: float, now: float | None = None) -> None:
        self.expires = (time.monotonic() if now is None else now) + lifetime_s

    def expired(self, now: float) -> bool:
        return now >= self.expires

    def permit(self, ip: str, lifetime_s: float, now: float | None = None) -> None:
        self.permissions[ip] = (time.monotonic() if now is None else now) + lifetime_s
        self._sync()

    def has_permission(self, ip: str, now: float | None = None) -> bool:
        expiry = self.permissions.get(ip)
        return expiry is not None and expiry > (time.monotonic() if now is None else now)

    def channel_of(self, peer: tuple[str, int]) -> int | None:
        for number, (bound, _) in self.channels.items():
            if bound == peer:
                return number
        return None

    def bind(self, number: int, peer: tuple[str, int], channel_lifetime_s: float,
             permission_lifetime_s: float, now: float | None = None) -> None:
        """Bind or refresh a channel; it also installs or refreshes the peer's permission (RFC 8656 11.2)."""
        now = time.monotonic() if now is None else now
        self.channels[number] = (peer, now + channel_lifetime_s)
        self.permit(peer[0], permission_lifetime_s, now)

    def sweep(self, now: float) -> None:
        """Forget expired permissions and channels."""
        changed = False
        for ip in [ip for ip, expiry in self.permissions.items() if expiry <= now]:
            del self.permissions[ip]
            changed = True
        for number in [n for n, (_, expiry) in self.channels.items() if expiry <= now]:
            del self.channels[number]
            changed = True
        if changed:
            self._sync()

    def _sync(self) -> None:
        now = time.monotonic()
        live = {number: peer for number, (peer, expiry) in self.channels.items()
                if expiry > now and self.has_permission(peer[0], now)}
        permitted = [ip for ip, expiry in self.permissions.items() if expiry > now]
        self.relay.set_channels(live, permitted)

    # ------------------------------------------------------------------------- slow relay paths
    def send_to_peer(self, peer: tuple[str, int], data: bytes) -> bool:
        """A Send indication's payload (RFC 8656 10.2): relayed only with a live permission."""
        self.send_indications_in += 1
        if not self.has_permission(peer[0]):
            self.drop_no_permission += 1
            return False
        return self.relay.send_to(data, peer[0], peer[1])

    def _from_unbound_peer(self, data: bytes, addr: tuple) -> None:
        """A datagram from a peer without a channel: a Data indication if permitted (RFC 8656 10.3)."""
        peer = (addr[0], addr[1])
        if not self.has_permission(peer[0]):
            self.drop_no_permission += 1
            return
        if self.relay.client_paused:
            self.relay.drop_client_slow += 1
            return
        if not self.relay.bucket.take(len(data)):
            self.relay.drop_bandwidth += 1
            return
        txid = os.urandom(12)
        message = build(DATA, INDICATION, txid,
                        [(XOR_PEER_ADDRESS, encode_xor_address(peer, txid)), (DATA_ATTR, data)],
                        fingerprint=False)
        self.client_send(message)
        self.data_indications_out += 1
        self.relay.to_client_packets += 1
        self.relay.to_client_bytes += len(data)

    def close(self) -> None:
        self.relay.close()

    def stats(self, now: float | None = None) -> dict:
        now = time.monotonic() if now is None else now
        return {
            "user": self.identity.user, "client": f"{self.client_addr[0]}:{self.client_addr[1]}",
            "transport": self.transport_kind,
            "relayed": f"{self.relayed_addr[0]}:{self.relayed_addr[1]}" if self.relayed_addr else None,
            "expires_in_s": round(self.expires - now, 1),
            "permissions": len(self.permissions), "channels": len(self.channels),
            "data_indications_out": self.data_indications_out,
            "send_indications_in": self.send_indications_in,
            "drop_no_permission": self.drop_no_permission + self.relay.drop_no_permission,
            **self.relay.stats(),
        }
