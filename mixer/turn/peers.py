"""Which peers a relay may reach: the protection coturn documents against using TURN as a door
into the server's own network (RFC 8656 21.3.1: "the server MAY ... deny some peer addresses").

Loopback, private, link-local, multicast, unspecified and reserved ranges are refused (403) unless
the loopback setting or an explicitly allowed CIDR lets them through. An IPv4-mapped IPv6 address
is judged as the IPv4 address it carries.
"""
from __future__ import annotations

import ipaddress


class PeerFilter:
    def __init__(self, allow_loopback: bool, allowed_cidrs: list[str] | tuple[str, ...] = ()) -> None:
        self.allow_loopback = allow_loopback
        self.allowed = [ipaddress.ip_network(cidr, strict=False) for cidr in allowed_cidrs]

    def permits(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed):
            return True
        if address.is_loopback:
            return self.allow_loopback
        return not (address.is_private or address.is_link_local or address.is_multicast
                    or address.is_unspecified or address.is_reserved)
