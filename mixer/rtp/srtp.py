"""SRTP/SRTCP for one call leg (RFC 3711), on libsrtp through pylibsrtp.

Sessions are made by pylibsrtp; each packet goes straight to libsrtp through `mixer._srtp` (about
three times cheaper than pylibsrtp's per-packet Python path), falling back to pylibsrtp's methods if
its binding ever changes shape.

A leg has two directions with two master keys (RFC 4568 section 6.1: each side
declares the key it sends with), so :class:`SrtpContext` holds two libsrtp
sessions: an outbound one keyed with our key for any SSRC we send, and an
inbound one keyed with the peer's key for any SSRC the peer sends. Keeping them
apart means a peer that happens to pick our SSRC cannot disturb our own stream.

Inbound failures are not exceptions: a packet that does not authenticate, is a
replay, or is not SRTP at all is dropped (None) and counted by reason, because
on a public port that is routine traffic, not a bug.
"""

from __future__ import annotations

import secrets

import pylibsrtp
from pylibsrtp import Policy, Session

from mixer import _srtp

#: Crypto suite names (RFC 4568 section 6.2, RFC 7714 for AEAD) -> libsrtp profiles.
SRTP_PROFILES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,  # RFC 4568 section 6.2.1
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,  # RFC 4568 section 6.2.2
}
#: Master key + master salt octets per suite (RFC 4568 section 6.2, RFC 7714).
MASTER_KEY_LENGTHS: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 16 + 14,
    "AES_CM_128_HMAC_SHA1_32": 16 + 14,
}
for _suite, _profile_name, _length in (
    ("AEAD_AES_128_GCM", "SRTP_PROFILE_AEAD_AES_128_GCM", 16 + 12),
    ("AEAD_AES_256_GCM", "SRTP_PROFILE_AEAD_AES_256_GCM", 32 + 12),
):
    if hasattr(Policy, _profile_name):  # older pylibsrtp builds lack GCM
        SRTP_PROFILES[_suite] = getattr(Policy, _profile_name)
        MASTER_KEY_LENGTHS[_suite] = _length

#: libsrtp's default SRTP replay window, in packets (RFC 3711 section 3.3.2).
SRTP_DEFAULT_REPLAY_WINDOW = 128
#: libsrtp accepts RTP replay windows in this range; SRTCP always uses 128.
SRTP_MIN_REPLAY_WINDOW = 64
SRTP_MAX_REPLAY_WINDOW = 0x7FFF

#: libsrtp status codes (srtp_err_status_t) that decide how a failure is counted.
SRTP_ERR_STATUS_AUTH_FAIL = 7
SRTP_ERR_STATUS_REPLAY_FAIL = 9  # index already seen
SRTP_ERR_STATUS_REPLAY_OLD = 10  # index left of the replay window

#: pylibsrtp raises Error(ERRORS[status]): map its messages back to reasons.
_MESSAGES = getattr(pylibsrtp, "ERRORS", None) or []


def _message(status: int, fallback: str) -> str:
    return _MESSAGES[status] if 0 <= status < len(_MESSAGES) else fallback


_RTP_HEADER_LENGTH = 12  # RFC 3550 section 5.1
_RTCP_HEADER_LENGTH = 8  # RFC 3711 section 3.4: SRTCP leaves header + SSRC in clear
_BUFFERS = (bytearray, memoryview)


class SrtpError(Exception):
    """Unusable suite or key, or an outbound packet libsrtp refuses to protect."""


def generate_master_key(suite: str) -> bytes:
    """A fresh random master key + salt for ``suite`` (RFC 4568 section 6.1)."""
    try:
        return secrets.token_bytes(MASTER_KEY_LENGTHS[suite])
    except KeyError:
        raise SrtpError(f"unknown SRTP crypto suite {suite!r}") from None


class SrtpContext:
    """Both directions of SRTP and SRTCP for one leg.

    ``local_key`` protects what we send; ``remote_key`` authenticates and decrypts
    what the peer sends. Each is the concatenated master key and master salt.
    ``replay_window`` sizes the inbound SRTP replay window (64..32767 packets);
    ``allow_repeat_tx`` lets us protect the same RTP sequence number twice (e.g.
    a retransmission), which libsrtp otherwise refuses as a replay.

    pylibsrtp works in a 1500-byte buffer: RTP up to 1356 bytes and RTCP up to
    1352 bytes can be protected; longer inbound datagrams count as malformed.
    """

    __slots__ = (
        "suite",
        "_outbound",
        "_inbound",
        "_out",
        "_in",
        "_protected",
        "_unprotected",
        "_auth_failures",
        "_replays",
        "_malformed",
        "_protect_errors",
        "_rtcp_protected",
        "_rtcp_unprotected",
        "_rtcp_auth_failures",
        "_rtcp_replays",
        "_rtcp_malformed",
        "_rtcp_protect_errors",
    )

    def __init__(
        self,
        suite: str,
        local_key: bytes,
        remote_key: bytes,
        *,
        replay_window: int = SRTP_DEFAULT_REPLAY_WINDOW,
        allow_repeat_tx: bool = False,
    ) -> None:
        profile = SRTP_PROFILES.get(suite)
        if profile is None:
            raise SrtpError(f"unknown SRTP crypto suite {suite!r}")
        if not SRTP_MIN_REPLAY_WINDOW <= replay_window <= SRTP_MAX_REPLAY_WINDOW:
            raise SrtpError(
                f"replay window must be {SRTP_MIN_REPLAY_WINDOW}..{SRTP_MAX_REPLAY_WINDOW}, "
                f"got {replay_window}"
            )
        self.suite = suite
        self._outbound = self._session(
            suite, profile, local_key, Policy.SSRC_ANY_OUTBOUND, replay_window, allow_repeat_tx
        )
        self._inbound = self._session(
            suite, profile, remote_key, Policy.SSRC_ANY_INBOUND, replay_window, False
        )
        # per-packet calls: straight into libsrtp where possible, else pylibsrtp's methods
        self._out = _calls(self._outbound)
        self._in = _calls(self._inbound)
        self._protected = self._unprotected = 0
        self._auth_failures = self._replays = self._malformed = self._protect_errors = 0
        self._rtcp_protected = self._rtcp_unprotected = 0
        self._rtcp_auth_failures = self._rtcp_replays = 0
        self._rtcp_malformed = self._rtcp_protect_errors = 0

    @staticmethod
    def _session(
        suite: str, profile: int, key: bytes, ssrc_type: int, window: int, repeat_tx: bool
    ) -> Session:
        if not isinstance(key, (bytes, bytearray, memoryview)):
            raise SrtpError("SRTP master key must be bytes")
        key = bytes(key)
        if len(key) != MASTER_KEY_LENGTHS[suite]:
            raise SrtpError(
                f"{suite} needs a {MASTER_KEY_LENGTHS[suite]}-byte master key + salt, "
                f"got {len(key)}"
            )
        policy = Policy(key=key, ssrc_type=ssrc_type, srtp_profile=profile)
        policy.window_size = window
        policy.allow_repeat_tx = repeat_tx
        try:
            return Session(policy)
        except pylibsrtp.Error as exc:
            raise SrtpError(f"libsrtp refused the {suite} policy: {exc}") from exc

    def forget_inbound(self, ssrc: int) -> None:
        """Drop libsrtp's state for a peer SSRC no longer in use. The inbound session accepts any
        SSRC and keeps a stream per SSRC it has seen (never pruned, searched linearly), so a peer
        that cycles SSRCs would otherwise grow it without bound."""
        try:
            self._inbound.remove_stream(ssrc)
        except (pylibsrtp.Error, OverflowError, ValueError):
            pass  # not there: nothing to forget

    @property
    def outbound_calls(self):
        """The per-packet protect path itself (bytes in, bytes or a libsrtp status out), for a
        caller that protects in bulk and counts its own failures (the SFU's slots)."""
        return self._out

    def protect(self, rtp: bytes) -> bytes:
        """RTP -> SRTP (RFC 3711 section 3.3). Raises SrtpError for bad input."""
        if rtp.__class__ is not bytes:
            rtp = self._as_bytes(rtp, rtcp=False)
        if len(rtp) < _RTP_HEADER_LENGTH or rtp[0] >> 6 != 2:
            self._protect_errors += 1
            raise SrtpError("not an RTP packet")
        srtp = self._out.protect(rtp)
        if srtp.__class__ is int:
            self._protect_errors += 1
            raise SrtpError(f"SRTP protect failed: {_status_text(srtp)}")
        self._protected += 1
        return srtp

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        """RTCP -> SRTCP (RFC 3711 section 3.4). Raises SrtpError for bad input."""
        if rtcp.__class__ is not bytes:
            rtcp = self._as_bytes(rtcp, rtcp=True)
        if len(rtcp) < _RTCP_HEADER_LENGTH or rtcp[0] >> 6 != 2:
            self._rtcp_protect_errors += 1
            raise SrtpError("not an RTCP packet")
        srtcp = self._out.protect_rtcp(rtcp)
        if srtcp.__class__ is int:
            self._rtcp_protect_errors += 1
            raise SrtpError(f"SRTCP protect failed: {_status_text(srtcp)}")
        self._rtcp_protected += 1
        return srtcp

    def unprotect(self, srtp: bytes) -> bytes | None:
        """SRTP -> RTP, or None (counted) if it fails authentication, replays or is garbage."""
        if srtp.__class__ is not bytes:
            if not isinstance(srtp, _BUFFERS):
                self._malformed += 1
                return None
            srtp = bytes(srtp)
        if len(srtp) < _RTP_HEADER_LENGTH or srtp[0] >> 6 != 2:
            self._malformed += 1
            return None
        rtp = self._in.unprotect(srtp)
        if rtp.__class__ is int:
            if rtp == SRTP_ERR_STATUS_AUTH_FAIL:
                self._auth_failures += 1
            elif rtp == SRTP_ERR_STATUS_REPLAY_FAIL or rtp == SRTP_ERR_STATUS_REPLAY_OLD:
                self._replays += 1
            else:
                self._malformed += 1
            return None
        self._unprotected += 1
        return rtp

    def unprotect_rtcp(self, srtcp: bytes) -> bytes | None:
        """SRTCP -> RTCP, or None (counted) if it fails authentication, replays or is garbage."""
        if srtcp.__class__ is not bytes:
            if not isinstance(srtcp, _BUFFERS):
                self._rtcp_malformed += 1
                return None
            srtcp = bytes(srtcp)
        if len(srtcp) < _RTCP_HEADER_LENGTH or srtcp[0] >> 6 != 2:
            self._rtcp_malformed += 1
            return None
        rtcp = self._in.unprotect_rtcp(srtcp)
        if rtcp.__class__ is int:
            if rtcp == SRTP_ERR_STATUS_AUTH_FAIL:
                self._rtcp_auth_failures += 1
            elif rtcp == SRTP_ERR_STATUS_REPLAY_FAIL or rtcp == SRTP_ERR_STATUS_REPLAY_OLD:
                self._rtcp_replays += 1
            else:
                self._rtcp_malformed += 1
            return None
        self._rtcp_unprotected += 1
        return rtcp

    def _as_bytes(self, packet: bytes, rtcp: bool) -> bytes:
        if isinstance(packet, _BUFFERS):
            return bytes(packet)
        if rtcp:
            self._rtcp_protect_errors += 1
        else:
            self._protect_errors += 1
        raise SrtpError(f"packet must be bytes, got {type(packet).__name__}")

    def stats(self) -> dict[str, int]:
        """Packet counters; failures by reason (auth, replay, malformed)."""
        return {
            "protected": self._protected,
            "unprotected": self._unprotected,
            "auth_failures": self._auth_failures,
            "replays": self._replays,
            "malformed": self._malformed,
            "protect_errors": self._protect_errors,
            "rtcp_protected": self._rtcp_protected,
            "rtcp_unprotected": self._rtcp_unprotected,
            "rtcp_auth_failures": self._rtcp_auth_failures,
            "rtcp_replays": self._rtcp_replays,
            "rtcp_malformed": self._rtcp_malformed,
            "rtcp_protect_errors": self._rtcp_protect_errors,
        }


def _status_text(status: int) -> str:
    if status == _srtp.STATUS_TOO_LONG:
        return "packet too long"
    return _message(status, f"libsrtp status {status}")


class _SessionMethods:
    """pylibsrtp's own per-packet methods with the same contract as `_srtp.SessionCalls`: bytes
    out, or libsrtp's status code. Used when the direct calls are not available."""

    __slots__ = ("_session",)

    def __init__(self, session: Session) -> None:
        self._session = session

    @staticmethod
    def _run(method, packet: bytes):
        try:
            return method(packet)
        except pylibsrtp.Error as exc:
            reason = exc.args[0] if exc.args else ""
            return _MESSAGES.index(reason) if reason in _MESSAGES else 1
        except ValueError:  # longer than pylibsrtp's buffer
            return _srtp.STATUS_TOO_LONG

    def protect(self, packet: bytes):
        return self._run(self._session.protect, packet)

    def protect_rtcp(self, packet: bytes):
        return self._run(self._session.protect_rtcp, packet)

    def unprotect(self, packet: bytes):
        return self._run(self._session.unprotect, packet)

    def unprotect_rtcp(self, packet: bytes):
        return self._run(self._session.unprotect_rtcp, packet)


def _calls(session: Session):
    if _srtp.available():
        return _srtp.SessionCalls(session)
    return _SessionMethods(session)
