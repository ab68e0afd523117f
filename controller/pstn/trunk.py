"""The carrier trunk: where outbound calls go, who may send inbound ones, and whether it is up.

`Trunk.parse` takes `host`, `host:port` or a SIP URI (`sip:trunk.example.net:5061;transport=tls`).
Inbound INVITEs are accepted from the configured addresses/CIDRs only (403 otherwise); with none
configured, from loopback and the trunk's own address. `TrunkMonitor` sends OPTIONS every
interval (RFC 3261 section 11): any response, even 401/404/405, means the trunk is alive; a
timeout means down. The state is in `stats()`.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass

from controller.sip import SipError, UserAgent
from controller.sip.auth import Credentials
from controller.sip.uri import SipUri, parse_uri

log = logging.getLogger("voicemix.pstn")

LOOPBACK = ("127.0.0.0/8", "::1/128")


class TrunkError(ValueError):
    """A trunk setting that cannot be used."""


@dataclass
class Trunk:
    uri: SipUri
    credentials: Credentials | None = None
    domain: str | None = None

    @classmethod
    def parse(cls, text: str, username: str | None = None, password: str | None = None,
              domain: str | None = None) -> Trunk:
        text = text.strip()
        if not text.lower().startswith(("sip:", "sips:")):
            text = "sip:" + text
        try:
            uri = parse_uri(text)
        except SipError as exc:
            raise TrunkError(f"VOICEMIX_SIP_TRUNK {text!r} is not host[:port] or a SIP URI: {exc}") from None
        if not isinstance(uri, SipUri) or uri.user:
            raise TrunkError(f"VOICEMIX_SIP_TRUNK {text!r} must name a host, not a user")
        credentials = Credentials(username, password or "") if username else None
        return cls(uri, credentials, domain or uri.host)

    @property
    def transport(self) -> str:
        if self.uri.secure:
            return "TLS"
        return (self.uri.transport or "udp").upper()

    @property
    def port(self) -> int:
        return self.uri.port or (5061 if self.transport == "TLS" else 5060)

    def request_uri(self, number: str) -> SipUri:
        """`sip:+15550100@trunk;user=phone` (RFC 3261 19.1.6: a telephone number in a SIP URI)."""
        params = {"user": "phone"}
        if self.uri.transport:
            params["transport"] = self.uri.transport
        return SipUri(host=self.uri.host, user=number, port=self.uri.port, params=params,
                      scheme=self.uri.scheme)

    async def address(self, ua: UserAgent) -> tuple[str, int]:
        return await ua.resolve(self.uri.host), self.port


class TrunkAccess:
    """Which source addresses may send INVITEs."""

    def __init__(self, networks: list[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks if ip.version == network.version)


class TrunkMonitor:
    """OPTIONS keepalive towards the trunk."""

    def __init__(self, ua: UserAgent, trunk: Trunk, interval_s: float) -> None:
        self.ua = ua
        self.trunk = trunk
        self.interval_s = interval_s
        self.state = "unknown"
        self.last_status: int | None = None
        self.last_rtt_ms: float | None = None
        self.last_ok: float | None = None
        self.failures = 0
        self.probes = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def probe(self) -> bool:
        self.probes += 1
        began = time.monotonic()
        try:
            address = await self.trunk.address(self.ua)
            response = await self.ua.request("OPTIONS", self.trunk.uri.copy(params={}, user=None),
                                             address=address, transport=self.trunk.transport)
        except (SipError, OSError) as exc:
            self.failures += 1
            self._set("down", f"{exc}")
            return False
        self.last_status = response.status
        self.last_rtt_ms = round((time.monotonic() - began) * 1000, 1)
        self.last_ok = time.time()
        self._set("up", f"{response.status}")
        return True

    def _set(self, state: str, detail: str) -> None:
        if state != self.state:
            log.info("SIP trunk %s is %s (%s)", self.trunk.uri, state, detail)
        self.state = state

    async def _run(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(self.interval_s)

    def stats(self) -> dict:
        return {"uri": str(self.trunk.uri), "state": self.state, "last_status": self.last_status,
                "last_rtt_ms": self.last_rtt_ms, "probes": self.probes, "failures": self.failures}
