"""SIP dialogs (RFC 3261 section 12): the peer-to-peer state two UAs keep for one call.

A dialog is identified by Call-ID, local tag and remote tag, and holds what requests inside it
need: CSeq numbers, the remote target (the peer's Contact), the route set (Record-Route), and the
local and remote URIs. `Dialog.request()` builds a request within the dialog (12.2.1.1),
including the strict-routing rewrite for a route set whose first element lacks `lr`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from controller.sip.ids import random_hex
from controller.sip.message import Headers, SipRequest, SipResponse
from controller.sip.uri import NameAddress, SipUri, Uri, parse_name_address


def new_tag() -> str:
    return random_hex(6)


def new_call_id(host: str) -> str:
    return f"{random_hex(12)}@{host}"


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddress          # From of our requests
    remote_uri: NameAddress         # To of our requests
    remote_target: Uri              # Request-URI of our requests
    route_set: list[str] = field(default_factory=list)   # Route values, in order
    local_seq: int = 0
    remote_seq: int | None = None
    secure: bool = False
    state: str = "early"            # early / confirmed / terminated

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    # -------------------------------------------------------------------------- creation
    @classmethod
    def as_uas(cls, request: SipRequest, local_tag: str) -> Dialog:
        """Section 12.1.1: from the request and the response we are sending."""
        contacts = request.contacts
        target = contacts[0].uri if contacts else request.from_.uri
        return cls(call_id=request.call_id, local_tag=local_tag, remote_tag=request.from_.tag or "",
                   local_uri=request.to.with_tag(local_tag), remote_uri=request.from_,
                   remote_target=target, route_set=list(request.headers.values("Record-Route")),
                   local_seq=0, remote_seq=request.cseq.number,
                   secure=isinstance(request.uri, SipUri) and request.uri.secure)

    @classmethod
    def as_uac(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """Section 12.1.2: from our request and the response that established the dialog."""
        contacts = response.contacts
        target = contacts[0].uri if contacts else request.uri
        routes = list(reversed(response.headers.values("Record-Route")))
        return cls(call_id=request.call_id, local_tag=request.from_.tag or "",
                   remote_tag=response.to.tag or "", local_uri=request.from_,
                   remote_uri=response.to, remote_target=target, route_set=routes,
                   local_seq=request.cseq.number, remote_seq=None,
                   secure=isinstance(request.uri, SipUri) and request.uri.secure)

    def update_target(self, message: SipRequest | SipResponse) -> None:
        """A target refresh (re-INVITE or its 2xx) replaces the remote target (12.2)."""
        contacts = message.contacts
        if contacts and not contacts[0].wildcard:
            self.remote_target = contacts[0].uri

    # -------------------------------------------------------------------------- requests
    def next_seq(self) -> int:
        self.local_seq += 1
        return self.local_seq

    def request(self, method: str, body: bytes = b"", content_type: str | None = None,
                extra: list[tuple[str, str]] | None = None, cseq: int | None = None) -> SipRequest:
        """A request within the dialog (12.2.1.1); Via is added by the UA when sent."""
        headers = Headers()
        uri = self.remote_target
        routes = list(self.route_set)
        if routes:
            first = parse_name_address(routes[0]).uri
            if isinstance(first, SipUri) and "lr" not in first.params:
                # strict router: it gets the Request-URI, the remote target goes last
                uri = first.copy(params={k: v for k, v in first.params.items()
                                         if k not in ("method", "maddr", "ttl", "transport", "lr")},
                                 headers={})
                routes = routes[1:] + [f"<{self.remote_target.text}>"]
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", str(self.local_uri))
        headers.add("To", str(self.remote_uri))
        headers.add("Call-ID", self.call_id)
        number = cseq if cseq is not None else (self.local_seq if method in ("ACK", "CANCEL") else self.next_seq())
        headers.add("CSeq", f"{number} {method}")
        for name, value in extra or ():
            headers.add(name, value)
        if body:
            headers.add("Content-Type", content_type or "application/sdp")
        return SipRequest(method, uri, headers, body)

    def accept_remote_seq(self, request: SipRequest) -> bool:
        """Section 12.2.2: a request with a lower CSeq than the last one is out of order."""
        number = request.cseq.number
        if self.remote_seq is not None and number < self.remote_seq:
            return False
        if self.remote_seq is None or number > self.remote_seq:
            self.remote_seq = number
        return True

    def next_hop_uri(self) -> Uri:
        """Where a request in this dialog goes first: the first route, else the remote target."""
        if self.route_set:
            return parse_name_address(self.route_set[0]).uri
        return self.remote_target
