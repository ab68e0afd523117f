"""ICE-lite for one leg (RFC 8445 section 2.5 and the lite procedures): answer checks, take
nominations, keep consent.

The engine has a public (or at least reachable) address, so it runs the lite implementation: it
gathers only host candidates (the leg's port on each advertised address), never sends checks, and
is always the controlled agent. The full agent (the browser) checks its candidate pairs against
ours; every Binding request that authenticates with our short-term credentials (RFC 8489 9.1.3,
`mixer.turn.stun.check_short_term`) validates the address it came from, and one carrying
USE-CANDIDATE nominates it. Media goes to the newest nominated address (a peer whose network
changes nominates a new pair). The peer's address is learnt from its checks, never from the
candidates in its offer: browsers hide their host addresses behind mDNS `.local` names, and a
lite agent needs no candidates to answer checks.

Consent (RFC 7675): the full agent keeps sending checks (every 5 s or so, randomised); when no
valid check has come from the selected address for `consent_timeout_s` (30 s, section 5.1), we
stop sending to it. A later valid check restores consent.

ICE restart (RFC 8445 section 9): a re-offer with new remote credentials gets new local ones;
checks under the old ones fail from then on, and media keeps flowing to the old selected address
until the restarted checks nominate one.
"""
from __future__ import annotations

import secrets
import string
from collections import OrderedDict
from dataclasses import dataclass

import mixer.turn.stun as stun
from mixer.turn.errors import StunError

# RFC 8839 section 5.4: ice-char = ALPHA / DIGIT / "+" / "/"; ufrag 4..256, pwd 22..256 of them.
ICE_CHARS = string.ascii_letters + string.digits + "+/"
ICE_UFRAG_MIN, ICE_PWD_MIN, ICE_CREDENTIAL_MAX = 4, 22, 256
LOCAL_UFRAG_LENGTH = 8
LOCAL_PWD_LENGTH = 24          # 144 bits of entropy, above RFC 8445's 128
# RFC 7675 section 5.1: consent expires 30 s after the last successful check.
CONSENT_TIMEOUT_S = 30.0
# Addresses validated by a check, kept for DTLS from them; the oldest is forgotten beyond this.
MAX_VALIDATED_ADDRESSES = 8
SOFTWARE = b"voicemix"


# why a Binding request was refused or ignored (the keys of `IceLiteAgent.errors`)
CHECK_ERRORS = ("malformed", "bad_request", "unauthorized", "unknown_attribute", "role_conflict",
                "not_a_request")

class IceError(Exception):
    """ICE credentials that do not follow RFC 8839 section 5.4."""


@dataclass(frozen=True)
class IceCredentials:
    """One side's `a=ice-ufrag` / `a=ice-pwd`."""

    ufrag: str
    pwd: str

    @classmethod
    def generate(cls) -> IceCredentials:
        pick = secrets.choice
        return cls("".join(pick(ICE_CHARS) for _ in range(LOCAL_UFRAG_LENGTH)),
                   "".join(pick(ICE_CHARS) for _ in range(LOCAL_PWD_LENGTH)))

    def validate(self) -> IceCredentials:
        """Raise IceError unless both are ice-chars of RFC 8839's lengths."""
        for value, minimum, name in ((self.ufrag, ICE_UFRAG_MIN, "ice-ufrag"),
                                     (self.pwd, ICE_PWD_MIN, "ice-pwd")):
            if not minimum <= len(value) <= ICE_CREDENTIAL_MAX or value.strip(ICE_CHARS):
                raise IceError(f"{name} must be {minimum}..{ICE_CREDENTIAL_MAX} characters of "
                               f"ALPHA / DIGIT / '+' / '/' (RFC 8839 section 5.4)")
        return self


class IceLiteAgent:
    """The lite, controlled side of ICE for one component (RTP and RTCP muxed on one port).

    `receive(data, addr, now)` takes one STUN datagram and returns the response to send back to
    `addr` (or None); `selected` is where media goes, `consent(now)` whether we may send there.
    Times are time.monotonic() seconds, passed in by the caller.
    """

    def __init__(self, local: IceCredentials, remote: IceCredentials,
                 consent_timeout_s: float = CONSENT_TIMEOUT_S) -> None:
        self.local = local
        self.remote = remote
        self.consent_timeout_s = consent_timeout_s
        self.validated: OrderedDict[tuple, float] = OrderedDict()  # address -> last valid check
        self.selected: tuple | None = None
        self.checks = 0            # valid Binding requests answered with success
        self.nominations = 0
        self.selected_changes = 0
        self.restarts = 0
        self.indications = 0       # Binding indications (RFC 8445 section 11 keep-alives)
        self.consent_losses = 0
        self._consent_lost = False
        self.errors = dict.fromkeys(CHECK_ERRORS, 0)

    # ------------------------------------------------------------------------------------ checks
    def receive(self, data: bytes, addr: tuple, now: float) -> bytes | None:
        try:
            message = stun.parse(data)
        except StunError:
            self.errors["malformed"] += 1
            return None
        if message.method == stun.BINDING and message.cls == stun.INDICATION:
            self.indications += 1
            return None
        if message.cls != stun.REQUEST:
            # a lite agent sends no requests, so a response is someone else's (or a reflection)
            self.errors["not_a_request"] += 1
            return None
        if message.method != stun.BINDING:
            self.errors["bad_request"] += 1
            return self._error(message, stun.BAD_REQUEST, None)
        failure = stun.check_short_term(message, self.local.ufrag, self.local.pwd)
        if failure is None and not self._from_our_peer(message):
            failure = stun.UNAUTHORIZED
        if failure is not None:
            self.errors["bad_request" if failure == stun.BAD_REQUEST else "unauthorized"] += 1
            return self._error(message, failure, None)  # RFC 8489 9.1.3: no integrity on 400/401
        key = self.local.pwd.encode("ascii")
        unknown = message.unknown_required(stun.ICE_UNDERSTOOD)
        if unknown:
            self.errors["unknown_attribute"] += 1
            return self._error(message, stun.UNKNOWN_ATTRIBUTE, key, unknown)
        if message.get(stun.ICE_CONTROLLED) is not None:
            # RFC 8445 7.3.1.1: both sides claim the controlled role. A lite agent is always
            # controlled (section 6.1.1), so the full agent must switch: 487.
            self.errors["role_conflict"] += 1
            return self._error(message, stun.ROLE_CONFLICT, key)
        self._validate(addr, now)
        if message.get(stun.USE_CANDIDATE) is not None:
            self._nominate(addr)
        self.checks += 1
        return stun.build(stun.BINDING, stun.SUCCESS, message.transaction_id,
                          [(stun.XOR_MAPPED_ADDRESS, stun.encode_xor_address(addr, message.transaction_id)),
                           (stun.SOFTWARE, SOFTWARE)], key=key)

    def _from_our_peer(self, message: stun.StunMessage) -> bool:
        """USERNAME is "<our ufrag>:<their ufrag>": the second half must be the peer's current
        ufrag too (after an ICE restart, checks under the old credentials no longer count)."""
        username = message.get(stun.USERNAME) or b""
        return username.partition(b":")[2] == self.remote.ufrag.encode("ascii", "replace")

    def _error(self, message: stun.StunMessage, code: int, key: bytes | None,
               unknown: list[int] | None = None) -> bytes:
        attributes = [stun.error_attribute(code)]
        if unknown:
            attributes.append((stun.UNKNOWN_ATTRIBUTES,
                               b"".join(kind.to_bytes(2, "big") for kind in unknown)))
        return stun.build(message.method, stun.ERROR, message.transaction_id, attributes, key=key)

    def _validate(self, addr: tuple, now: float) -> None:
        self.validated.pop(addr, None)
        self.validated[addr] = now
        while len(self.validated) > MAX_VALIDATED_ADDRESSES:
            oldest = next(iter(self.validated))
            if oldest == self.selected:  # never forget where media goes
                self.validated.move_to_end(oldest)
                oldest = next(iter(self.validated))
            del self.validated[oldest]
        if addr == self.selected and self._consent_lost:
            self._consent_lost = False

    def _nominate(self, addr: tuple) -> None:
        self.nominations += 1
        if addr != self.selected:
            if self.selected is not None:
                self.selected_changes += 1
            self.selected = addr

    # ----------------------------------------------------------------------------------- state
    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def is_validated(self, addr: tuple) -> bool:
        """Whether a valid check came from `addr` (DTLS is accepted only from such addresses)."""
        return addr in self.validated

    def consent(self, now: float) -> bool:
        """RFC 7675: may we send to the selected address? (a valid check from it within the
        consent timeout). Counts each loss once."""
        if self.selected is None:
            return False
        last = self.validated.get(self.selected)
        alive = last is not None and now - last < self.consent_timeout_s
        if not alive and not self._consent_lost:
            self._consent_lost = True
            self.consent_losses += 1
        return alive

    def restart(self, local: IceCredentials, remote: IceCredentials) -> None:
        """RFC 8445 section 9: new credentials on both sides; validations under the old ones are
        forgotten except the selected address, where media continues until a new nomination."""
        self.local = local
        self.remote = remote
        self.restarts += 1
        kept = self.validated.get(self.selected) if self.selected is not None else None
        self.validated.clear()
        if kept is not None:
            self.validated[self.selected] = kept

    def state(self, now: float) -> str:
        """new (no valid check yet), checking (validated, nothing nominated), connected, or
        disconnected (consent expired)."""
        if self.selected is not None:
            return "connected" if self.consent(now) else "disconnected"
        return "checking" if self.validated else "new"

    def stats(self, now: float) -> dict:
        selected = self.selected
        return {
            "state": self.state(now),
            "selected": f"{selected[0]}:{selected[1]}" if selected else None,
            "validated_addresses": len(self.validated),
            "checks": self.checks,
            "nominations": self.nominations,
            "selected_changes": self.selected_changes,
            "indications": self.indications,
            "consent_losses": self.consent_losses,
            "restarts": self.restarts,
            "errors": dict(self.errors),
        }
