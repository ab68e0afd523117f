"""STUN/TURN settings in one typed place; every field can come from a `VOICEMIX_TURN_<NAME>` variable.

The names follow the shared contract (`VOICEMIX_TURN_SECRET`, `VOICEMIX_TURN_ENABLED`,
`VOICEMIX_TURN_ALLOW_LOOPBACK_PEERS`); defaults run embedded on loopback. Lifetimes default to the
RFC 8656 values and are settings so tests can use seconds instead of minutes.
"""
from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def split_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` -> (host, port)."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.strip("[]") or default_host, int(port)


class TurnSettings(BaseSettings):
    """STUN binding and TURN relay settings (VOICEMIX_TURN_LISTEN, VOICEMIX_TURN_SECRET, ...)."""

    model_config = SettingsConfigDict(env_prefix="VOICEMIX_TURN_", extra="ignore")

    enabled: bool = Field(True, description="false: TURN requests get no answer (STUN binding still runs)")
    listen: str = Field("127.0.0.1:3478", description="HOST:PORT for UDP and TCP (port 0: ephemeral)")
    listen_udp: bool = Field(True, description="serve STUN/TURN over UDP on listen")
    listen_tcp: bool = Field(True, description="serve STUN/TURN over TCP on listen")
    tls_listen: str | None = Field(None, description="HOST:PORT for TURN over TLS (needs tls_cert/tls_key)")
    metrics_listen: str | None = Field(
        None, description="`voicemix turn`: HOST:PORT of a plain-HTTP GET /metrics without "
                          "authentication (keep it on loopback); unset = none")
    tls_cert: str | None = Field(None, description="PEM certificate for tls_listen")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert")
    realm: str = Field("voicemix", description="REALM of the long-term credentials (RFC 8489 9.2)")
    software: str = Field("voicemix-turn", description="SOFTWARE attribute in responses")
    # Credentials: REST-API (time-limited, HMAC of a shared secret) and/or a static long-term list.
    secret: str | None = Field(None, description="shared secret of the REST-API credentials")
    static_users: dict[str, str] = Field(default_factory=dict, description="user -> password")
    nonce_lifetime_s: float = Field(600.0, gt=0, description="a NONCE older than this gets 438")
    # Relay
    relay_ip: str = Field("127.0.0.1", description="IPv4 address the relayed UDP sockets bind to")
    relay_ports: str = Field("50000-59999", description="UDP port range of relayed addresses, LOW-HIGH")
    allocation_lifetime_s: float = Field(600.0, gt=0, description="RFC 8656 default allocation lifetime")
    max_allocation_lifetime_s: float = Field(
        3600.0, gt=0, description="longest allocation lifetime granted (RFC 8656: 3600)")
    permission_lifetime_s: float = Field(300.0, gt=0, description="RFC 8656 9: fixed 300 s")
    channel_lifetime_s: float = Field(600.0, gt=0, description="RFC 8656 12: 10 minutes")
    sweep_interval_s: float = Field(1.0, gt=0, description="how often expired state is removed")
    # Quotas and protection
    user_quota: int = Field(10, ge=0, description="concurrent allocations per user (0: none allowed)")
    max_allocations: int = Field(10000, ge=0, description="all users together; beyond it 508")
    bandwidth_bytes_s: int = Field(0, ge=0, description="per-user relay cap, both directions (0: none)")
    allow_loopback_peers: bool = Field(False, description="relay to 127.0.0.0/8 and ::1 (tests)")
    allowed_peer_ips: list[str] = Field(
        default_factory=list, description="CIDRs allowed even if private (e.g. the media engines' net)")
    max_tcp_connections: int = Field(10000, ge=1, description="client TCP/TLS connections at once")
    tcp_idle_s: float = Field(30.0, gt=0, description="a TCP client with no allocation is closed after this")
    max_tcp_buffer: int = Field(1 << 20, ge=4096, description="unsent bytes to a TCP client before drops")

    @field_validator("relay_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        low, _, high = value.partition("-")
        if not (low.isdigit() and high.isdigit() and 1024 <= int(low) < int(high) <= 65535):
            raise ValueError("relay_ports must look like 50000-59999 (1024..65535)")
        return value

    @field_validator("relay_ip")
    @classmethod
    def _ipv4(cls, value: str) -> str:
        if ipaddress.ip_address(value).version != 4:
            raise ValueError("relay_ip must be IPv4 (the compiled relay speaks IPv4; see docs/turn.md)")
        return value

    @field_validator("allowed_peer_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    @field_validator("listen", "tls_listen")
    @classmethod
    def _hostport(cls, value: str | None) -> str | None:
        if value is not None:
            split_hostport(value)
        return value

    @property
    def port_range(self) -> tuple[int, int]:
        low, _, high = self.relay_ports.partition("-")
        return int(low), int(high)
