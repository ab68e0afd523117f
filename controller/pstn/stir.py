"""STIR/SHAKEN: verifying the `Identity` header of an inbound INVITE (RFC 8224, PASSporT RFC 8225,
SHAKEN RFC 8588).

The header carries a signed JWT (ES256) naming the calling and called numbers (`orig.tn`,
`dest.tn`), its issue time (`iat`), and, for SHAKEN, how well the originating carrier knows the
caller (`attest`: A full, B partial, C gateway). The certificate is named by `x5u`; this
verifier never fetches it (an attacker-chosen URL from inbound signalling is no place to go):
certificates are configured, a directory of PEM files named as the last path segment of their
`x5u` URL, optionally with CA certificates the signing certificates must be issued by.

A claim that cannot be verified (unknown certificate, bad signature, stale `iat`, numbers that
do not match the call) is logged and recorded with its reason and is not trusted (no
attestation); the call is not refused for it, as RFC 8224 section 6.2.2 leaves to policy.
"""
from __future__ import annotations

import base64
import datetime
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

log = logging.getLogger("voicemix.pstn")

# RFC 8224 section 6.2.1: a verifier should refuse an iat older than this (freshness)
MAX_AGE_S = 60
ATTESTATIONS = ("A", "B", "C")
_TN_VISUAL = re.compile(r"[\s\-.()+]")


@dataclass(frozen=True)
class StirResult:
    status: str                    # verified / failed / absent
    attestation: str | None = None  # A / B / C, only when verified
    reason: str | None = None
    origid: str | None = None
    x5u: str | None = None

    def to_json(self) -> dict:
        return {"status": self.status, "attestation": self.attestation, "reason": self.reason,
                "origid": self.origid}


def canonical_tn(text: str) -> str:
    """RFC 8224 section 8.3: digits only (no '+', no visual separators)."""
    return _TN_VISUAL.sub("", text or "")


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class StirVerifier:
    def __init__(self, certs_dir: Path | None = None, max_age_s: float = MAX_AGE_S) -> None:
        self.max_age_s = max_age_s
        self.certs: dict[str, x509.Certificate] = {}
        self.cas: list[x509.Certificate] = []
        self.counts = {"verified": 0, "failed": 0, "absent": 0}
        if certs_dir is not None:
            self.load(certs_dir)

    def load(self, certs_dir: Path) -> None:
        """`*.pem` / `*.crt` signing certificates by file name; `ca/*.pem` issuers."""
        certs_dir = Path(certs_dir)
        for path in sorted(certs_dir.glob("*")):
            if path.is_file() and path.suffix in (".pem", ".crt", ".cer"):
                try:
                    self.certs[path.name] = x509.load_pem_x509_certificate(path.read_bytes())
                except ValueError as exc:
                    log.warning("STIR: %s is not a PEM certificate (%s)", path, exc)
        ca_dir = certs_dir / "ca"
        if ca_dir.is_dir():
            for path in sorted(ca_dir.glob("*")):
                if path.is_file():
                    try:
                        self.cas.extend(x509.load_pem_x509_certificates(path.read_bytes()))
                    except ValueError as exc:
                        log.warning("STIR: %s holds no PEM certificates (%s)", path, exc)

    def verify(self, identity_headers: list[str], caller: str | None, callee: str | None,
               now: float | None = None) -> StirResult:
        if not identity_headers:
            self.counts["absent"] += 1
            return StirResult("absent")
        result = StirResult("failed", reason="no Identity header could be read")
        for header in identity_headers:   # several may come (e.g. div PASSporTs): one good is enough
            result = self._verify_one(header, caller, callee, now or time.time())
            if result.status == "verified":
                break
        self.counts[result.status] += 1
        if result.status == "failed":
            log.info("STIR: unverifiable Identity for %s -> %s: %s", caller, callee, result.reason)
        return result

    def _verify_one(self, header: str, caller: str | None, callee: str | None, now: float) -> StirResult:
        token, _, param_text = header.strip().partition(";")
        token = token.strip()
        params = {}
        for item in param_text.split(";"):
            name, _, value = item.strip().partition("=")
            params[name.lower()] = value.strip().strip('"').strip("<>")
        parts = token.split(".")
        if len(parts) != 3:
            return StirResult("failed", reason="not a JWS compact serialisation")
        if not parts[1]:
            return StirResult("failed", reason="compact-form PASSporT (no payload) is not supported")
        try:
            jose = json.loads(_b64(parts[0]))
            claims = json.loads(_b64(parts[1]))
        except (ValueError, TypeError):
            return StirResult("failed", reason="the PASSporT is not base64url JSON")
        if not isinstance(jose, dict) or not isinstance(claims, dict):
            return StirResult("failed", reason="the PASSporT is not JSON objects")
        if jose.get("alg") != "ES256" or (params.get("alg") and params["alg"] != "ES256"):
            return StirResult("failed", reason=f"alg {jose.get('alg')!r} is not ES256 (RFC 8588)")
        if jose.get("typ") not in (None, "passport") or jose.get("ppt") != "shaken":
            return StirResult("failed", reason="not a SHAKEN PASSporT (ppt)")
        x5u = jose.get("x5u")
        if not isinstance(x5u, str) or (params.get("info") and params["info"] != x5u):
            return StirResult("failed", reason="x5u missing or different from the info parameter")
        cert = self.certs.get(Path(urlparse(x5u).path).name)
        if cert is None:
            return StirResult("failed", reason=f"no configured certificate for {x5u}", x5u=x5u)
        problem = self._check_cert(cert, now)
        if problem:
            return StirResult("failed", reason=problem, x5u=x5u)
        try:
            jwt.decode(token, key=cert.public_key(), algorithms=["ES256"],
                       options={"verify_exp": False, "verify_iat": False, "verify_aud": False,
                                "verify_nbf": False, "verify_iss": False})
        except jwt.InvalidTokenError as exc:
            return StirResult("failed", reason=f"signature does not verify ({exc})", x5u=x5u)
        iat = claims.get("iat")
        if not isinstance(iat, (int, float)) or abs(now - iat) > self.max_age_s:
            return StirResult("failed", reason=f"iat is not within {self.max_age_s:g} s of now", x5u=x5u)
        orig = (claims.get("orig") or {}).get("tn") if isinstance(claims.get("orig"), dict) else None
        dest = claims.get("dest") if isinstance(claims.get("dest"), dict) else {}
        dests = dest.get("tn") or []
        if isinstance(dests, str):
            dests = [dests]
        if caller is None or not isinstance(orig, str) or canonical_tn(orig) != canonical_tn(caller):
            return StirResult("failed", reason="orig.tn is not the calling number", x5u=x5u)
        if callee is None or canonical_tn(callee) not in {canonical_tn(d) for d in dests if isinstance(d, str)}:
            return StirResult("failed", reason="dest.tn does not name the called number", x5u=x5u)
        attest = claims.get("attest")
        if attest not in ATTESTATIONS:
            return StirResult("failed", reason=f"attest {attest!r} is not A, B or C", x5u=x5u)
        origid = claims.get("origid") if isinstance(claims.get("origid"), str) else None
        return StirResult("verified", attestation=attest, origid=origid, x5u=x5u)

    def _check_cert(self, cert: x509.Certificate, now: float) -> str | None:
        moment = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
            return "the signing certificate is not valid now"
        if not isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
            return "the signing certificate's key is not EC (ES256)"
        if not self.cas:
            return None   # the certificate itself was configured as trusted
        for ca in self.cas:
            if ca.subject != cert.issuer:
                continue
            try:
                key = ca.public_key()
                if isinstance(key, ec.EllipticCurvePublicKey):
                    key.verify(cert.signature, cert.tbs_certificate_bytes,
                               ec.ECDSA(cert.signature_hash_algorithm))
                elif isinstance(key, rsa.RSAPublicKey):
                    key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                               cert.signature_hash_algorithm)
                else:
                    continue
            except InvalidSignature:
                continue
            if ca.not_valid_before_utc <= moment <= ca.not_valid_after_utc:
                return None
        return "the signing certificate is not issued by a configured CA"

    def stats(self) -> dict:
        return {**self.counts, "certificates": len(self.certs), "cas": len(self.cas)}
