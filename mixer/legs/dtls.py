"""DTLS-SRTP for one leg (RFC 5763, RFC 5764): the handshake that keys a WebRTC leg's SRTP.

The handshake itself is OpenSSL's, through pyOpenSSL, over memory BIOs: datagrams the leg's
socket receives are written into the connection, and what OpenSSL wants to send is read back out
and sent from the leg's own socket (no extra socket, no task per packet). Retransmission follows
OpenSSL's DTLS timer (`DTLSv1_get_timeout` / `DTLSv1_handle_timeout`) on one loop timer, armed only
while a handshake is in flight.

Identity is the certificate fingerprint from the SDP (RFC 8122), not a CA: each engine makes one
ECDSA P-256 certificate (`DtlsCertificate`), puts its SHA-256 fingerprint in every answer, and
checks the peer's certificate against the fingerprints of the peer's offer during the handshake (a
mismatch aborts it with a bad_certificate alert). Once connected, the SRTP master keys are
exported with the `EXTRACTOR-dtls_srtp` label (RFC 5764 section 4.2) into the leg's ordinary
`SrtpContext`, so a WebRTC leg's per-packet cost is an SDES leg's.

Records are kept whole: OpenSSL writes handshake messages fragmented to the 1200-byte MTU, the
memory BIO concatenates what it writes, and `_flush` splits that back into records and packs
whole records into datagrams of at most the MTU.
"""
from __future__ import annotations

import asyncio
import binascii
import datetime
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from mixer.rtp.srtp import SRTP_PROFILES as SRTP_SUITES

DTLS_MTU = 1200                      # what fits any path with IPv6 + UDP + TURN framing
DTLS_RECORD_HEADER = 13              # RFC 6347 4.1: type, version, epoch, sequence, length
CONTENT_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"  # RFC 5764 section 4.2
CERTIFICATE_VALIDITY = datetime.timedelta(days=30)
CIPHERS = (b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
           b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-SHA")


@dataclass(frozen=True)
class SrtpProfile:
    """One DTLS-SRTP protection profile (RFC 5764 section 4.1.2, RFC 7714 section 14.2)."""

    openssl_name: bytes
    suite: str            # the mixer.rtp.srtp suite name it keys
    key_length: int
    salt_length: int


_PROFILES = (
    SrtpProfile(b"SRTP_AES128_CM_SHA1_80", "AES_CM_128_HMAC_SHA1_80", 16, 14),
    SrtpProfile(b"SRTP_AEAD_AES_128_GCM", "AEAD_AES_128_GCM", 16, 12),
)
#: profiles this build can run (GCM needs a libsrtp built with it), by OpenSSL name
SRTP_PROFILES: dict[str, SrtpProfile] = {p.openssl_name.decode(): p for p in _PROFILES
                                         if p.suite in SRTP_SUITES}

# RFC 8122 section 5 hash names -> cryptography's hashes
HASHES = {"sha-1": hashes.SHA1, "sha-224": hashes.SHA224, "sha-256": hashes.SHA256,
          "sha-384": hashes.SHA384, "sha-512": hashes.SHA512}

FAILURE_REASONS = ("fingerprint_mismatch", "handshake_error", "no_srtp_profile", "timeout",
                   "peer_closed")


class DtlsError(Exception):
    """A DTLS-SRTP setting this engine cannot use (an unknown profile name)."""


def fingerprint(certificate: x509.Certificate, algorithm: str = "sha-256") -> str:
    """RFC 8122 section 5: upper-case hex pairs joined by colons."""
    digest = certificate.fingerprint(HASHES[algorithm]())
    return ":".join(f"{byte:02X}" for byte in digest)


class DtlsCertificate:
    """The engine's DTLS identity: an ECDSA P-256 key and a self-signed certificate, made once per
    engine (ECDSA is what browsers use and costs a fraction of RSA per handshake)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate
        self.fingerprint = fingerprint(certificate, "sha-256")
        self._contexts: dict[bytes, SSL.Context] = {}

    @classmethod
    def generate(cls, validity: datetime.timedelta = CERTIFICATE_VALIDITY) -> DtlsCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                             f"voicemix-{binascii.hexlify(secrets.token_bytes(8)).decode()}")])
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                       .public_key(key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(days=1))
                       .not_valid_after(now + validity)
                       .sign(key, hashes.SHA256()))
        return cls(key, certificate)

    @property
    def expires_at(self) -> datetime.datetime:
        return self.certificate.not_valid_after_utc

    def context(self, profiles: tuple[str, ...]) -> SSL.Context:
        """One OpenSSL context per profile list, shared by every leg (the role is set per
        connection). The peer must present a certificate; whether it is the right one is decided
        by the fingerprint check in `_verify`, not by a CA."""
        wanted = ":".join(profiles).encode()
        context = self._contexts.get(wanted)
        if context is None:
            context = SSL.Context(SSL.DTLS_METHOD)
            context.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU)
            context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify)
            context.use_certificate(self.certificate)
            context.use_privatekey(self.key)
            context.set_cipher_list(CIPHERS)
            context.set_tlsext_use_srtp(wanted)
            self._contexts[wanted] = context
        return context


def _verify(connection: SSL.Connection, certificate, error: int, depth: int, ok: int) -> bool:
    """OpenSSL's verify callback: the end-entity certificate must match the offer's fingerprints
    (its chain is not judged: WebRTC certificates are self-signed)."""
    if depth != 0:
        return True
    transport = connection.get_app_data()
    return transport is not None and transport._fingerprint_matches(certificate.to_cryptography())


def parse_profiles(value: str) -> tuple[str, ...]:
    """A colon-separated preference list of OpenSSL profile names, checked against this build."""
    names = tuple(name.strip() for name in value.split(":") if name.strip())
    unknown = [name for name in names if name not in SRTP_PROFILES]
    if not names or unknown:
        raise DtlsError(f"unusable DTLS-SRTP profiles {unknown or value!r}; this build runs "
                        f"{', '.join(SRTP_PROFILES)}")
    return names


def split_records(data: bytes) -> list[bytes] | None:
    """The DTLS records of one datagram, each whole (RFC 6347 section 4.1), or None when the
    datagram is not a sequence of well-framed records."""
    records = []
    offset = 0
    size = len(data)
    while offset < size:
        if size - offset < DTLS_RECORD_HEADER or data[offset + 1] != 0xFE:
            return None  # too short for a header, or not a DTLS version (254.x)
        length = (data[offset + 11] << 8) | data[offset + 12]
        end = offset + DTLS_RECORD_HEADER + length
        if end > size:
            return None
        records.append(data[offset:end])
        offset = end
    return records


def is_client_hello(record: bytes) -> bool:
    """A handshake record of epoch 0 carrying a ClientHello (a new handshake's first flight)."""
    return (len(record) > DTLS_RECORD_HEADER and record[0] == CONTENT_HANDSHAKE
            and record[3] == 0 and record[4] == 0 and record[DTLS_RECORD_HEADER] == HANDSHAKE_CLIENT_HELLO)


def pack_datagrams(records: list[bytes], mtu: int = DTLS_MTU) -> list[bytes]:
    """Whole records packed in order into datagrams of at most `mtu` bytes (a record larger than
    the MTU goes alone: it cannot be split)."""
    datagrams: list[bytes] = []
    current = b""
    for record in records:
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams


@dataclass(frozen=True)
class SrtpKeys:
    """What the handshake gave SRTP: the suite and each direction's master key + salt."""

    profile: str
    suite: str
    local_key: bytes = b""     # what we protect with
    remote_key: bytes = b""    # what the peer protects with

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        return f"SrtpKeys(profile={self.profile!r}, suite={self.suite!r})"


class DtlsSrtpTransport:
    """One DTLS association over a leg's datagrams: `receive()` what came from the peer, `send`
    is called with each datagram to send back; `on_state(transport)` on connected/failed/closed.

    `server`: our role (RFC 5763 section 5: the answerer of an `actpass` offer is passive, i.e.
    the DTLS server). `remote_fingerprints`: (hash name, value) pairs from the offer; the peer's
    certificate must match every one whose hash we know, and at least one.
    """

    def __init__(self, certificate: DtlsCertificate, *, server: bool,
                 remote_fingerprints: list[tuple[str, str]], send: Callable[[bytes], None],
                 on_state: Callable[[DtlsSrtpTransport], None] | None = None,
                 profiles: tuple[str, ...] = ("SRTP_AES128_CM_SHA1_80",), mtu: int = DTLS_MTU,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.server = server
        self.remote_fingerprints = [(alg.lower(), value.upper()) for alg, value in remote_fingerprints]
        self.send = send
        self.on_state = on_state
        self.mtu = mtu
        self.state = "new"
        self.failure: str | None = None
        self.keys: SrtpKeys | None = None
        self._loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._ssl = SSL.Connection(certificate.context(profiles), None)
        self._ssl.set_app_data(self)
        self._ssl.set_ciphertext_mtu(mtu)
        if server:
            self._ssl.set_accept_state()
        else:
            self._ssl.set_connect_state()
        self.started_at: float | None = None
        self.handshake_ms: float | None = None
        self.datagrams_in = 0
        self.records_in = 0
        self.datagrams_out = 0
        self.retransmissions = 0
        self.malformed = 0
        self.client_hellos_refused = 0
        self.after_close = 0
        self.application_data = 0
        self.alerts = 0
        self.protocol: str | None = None

    # ---------------------------------------------------------------------------------- driving
    def start(self) -> None:
        """Begin: a client sends its ClientHello now; a server waits for one."""
        if self.state != "new":
            return
        self.state = "connecting"
        self.started_at = time.monotonic()
        if not self.server:
            self._handshake()

    def receive(self, data: bytes) -> None:
        """One datagram from the peer (already known to come from an ICE-validated address)."""
        self.datagrams_in += 1
        if self.state in ("failed", "closed"):
            self.after_close += 1
            return
        records = split_records(data)
        if not records:  # None: not framed as records; []: empty
            self.malformed += 1
            return
        self.records_in += len(records)
        if self.state == "connected" and any(is_client_hello(r) for r in records):
            # a new handshake on an established association: refused (RFC 5764 gives no way to
            # re-key in place; a peer that wants new keys sends a re-offer with a new fingerprint)
            self.client_hellos_refused += 1
            return
        if self.state == "new":
            self.start()
        try:
            self._ssl.bio_write(data)
        except SSL.Error:
            self.malformed += 1
            return
        if self.state == "connecting":
            self._handshake()
        else:
            self._read()

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            self._flush()
            self._arm_timer()
            return
        except SSL.Error as exc:
            self._flush()  # the alert OpenSSL queued, so the peer learns why
            self._fail("fingerprint_mismatch" if _is_certificate_failure(exc) else "handshake_error")
            return
        self._flush()
        self._connected()

    def _connected(self) -> None:
        self._cancel_timer()
        name = self._ssl.get_selected_srtp_profile()
        profile = SRTP_PROFILES.get(name.decode("ascii", "replace")) if name else None
        if profile is None:
            self._fail("no_srtp_profile")
            return
        length = profile.key_length + profile.salt_length
        material = self._ssl.export_keying_material(EXPORTER_LABEL, 2 * length)
        key, salt = profile.key_length, profile.salt_length
        client = material[:key] + material[2 * key:2 * key + salt]
        server = material[key:2 * key] + material[2 * key + salt:2 * key + 2 * salt]
        local, remote = (server, client) if self.server else (client, server)
        self.keys = SrtpKeys(profile.openssl_name.decode(), profile.suite, local, remote)
        self.protocol = self._ssl.get_protocol_version_name()
        self.handshake_ms = (time.monotonic() - (self.started_at or time.monotonic())) * 1000.0
        self.state = "connected"
        if self.on_state is not None:
            self.on_state(self)

    def _read(self) -> None:
        """After the handshake: let OpenSSL see the records (it answers a peer's retransmitted
        last flight by retransmitting ours, and reports close_notify); DTLS application data has
        no use on a voice leg (no data channels) and is discarded."""
        while True:
            try:
                self._ssl.recv(2048)
                self.application_data += 1
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._flush()
                self._close("peer_closed")
                return
            except SSL.Error:
                self.alerts += 1
                self._flush()
                self._close("peer_closed")
                return
        self._flush()

    def _flush(self) -> None:
        chunks = []
        while True:
            try:
                chunks.append(self._ssl.bio_read(65536))
            except SSL.WantReadError:
                break
        if not chunks:
            return
        data = b"".join(chunks)
        records = split_records(data)
        for datagram in pack_datagrams(records if records is not None else [data], self.mtu):
            self.datagrams_out += 1
            self.send(datagram)

    # ------------------------------------------------------------------------------ retransmits
    def _arm_timer(self) -> None:
        self._cancel_timer()
        if self.state != "connecting":
            return
        timeout = self._ssl.DTLSv1_get_timeout()
        if timeout is None:
            return
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # driven without an event loop (a fuzzer): no retransmissions
                return
        self._timer = loop.call_later(max(timeout, 0.001), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.state != "connecting":
            return
        try:
            if self._ssl.DTLSv1_handle_timeout():
                self.retransmissions += 1
        except SSL.Error:
            self._fail("timeout")  # OpenSSL gave up after its retransmission limit
            return
        self._flush()
        self._arm_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------------------------------- end
    def _fingerprint_matches(self, certificate: x509.Certificate) -> bool:
        known = [(alg, value) for alg, value in self.remote_fingerprints if alg in HASHES]
        return bool(known) and all(fingerprint(certificate, alg) == value for alg, value in known)

    def _fail(self, reason: str) -> None:
        if self.state in ("failed", "closed"):
            return
        self._cancel_timer()
        self.state = "failed"
        self.failure = reason
        if self.on_state is not None:
            self.on_state(self)

    def _close(self, reason: str) -> None:
        self._cancel_timer()
        self.state = "closed"
        self.failure = reason
        if self.on_state is not None:
            self.on_state(self)

    def fail(self, reason: str) -> None:
        """Give up on this association (e.g. the leg's connect timeout)."""
        self._fail(reason)

    def close(self) -> None:
        """Send close_notify (when connected) and stop."""
        self._cancel_timer()
        if self.state == "connected":
            try:
                self._ssl.shutdown()
            except SSL.Error:
                pass
            self._flush()
        if self.state not in ("failed",):
            self.state = "closed"

    def stats(self) -> dict:
        return {
            "state": self.state,
            "role": "server" if self.server else "client",
            "failure": self.failure,
            "protocol": self.protocol,
            "srtp_profile": self.keys.profile if self.keys else None,
            "handshake_ms": round(self.handshake_ms, 3) if self.handshake_ms is not None else None,
            "datagrams_in": self.datagrams_in,
            "records_in": self.records_in,
            "datagrams_out": self.datagrams_out,
            "retransmissions": self.retransmissions,
            "malformed": self.malformed,
            "client_hellos_refused": self.client_hellos_refused,
            "after_close": self.after_close,
            "application_data": self.application_data,
            "alerts": self.alerts,
        }


def _is_certificate_failure(exc: SSL.Error) -> bool:
    text = str(exc).lower()
    return "certificate" in text
