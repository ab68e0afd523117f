"""STIR/SHAKEN verification (RFC 8224, 8225, 8588) with real ES256 keys and X.509 certificates
made here by `cryptography`: verified claims and their attestation; every way a claim fails
(unknown certificate, another CA, bad signature, stale iat, numbers that are not the call's,
wrong algorithm); and an inbound call whose verified A attestation shows in its record."""
from __future__ import annotations

import asyncio
import datetime
import sys
import time
from pathlib import Path

import jwt
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from controller.pstn.stir import StirVerifier, canonical_tn  # noqa: E402
from tests.controller.pstn.kit import Carrier  # noqa: E402
from tests.controller.pstn.test_pstn_service import NUMBER, new_call, pstn_controller  # noqa: E402

CALLER = "+15550100199"
X5U = "https://certs.carrier.test/shaken/sp1.pem"


def certificate(subject: str, key, issuer_name: str | None = None, issuer_key=None, ca: bool = False,
                days: int = 30) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name or subject)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=days)))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(issuer_key or key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def passport(key, *, orig: str = CALLER, dest: str = NUMBER, attest: str = "A", iat: float | None = None,
             x5u: str = X5U, alg: str = "ES256", ppt: str = "shaken") -> str:
    claims = {"attest": attest, "dest": {"tn": [canonical_tn(dest)]}, "iat": int(iat or time.time()),
              "orig": {"tn": canonical_tn(orig)}, "origid": "123e4567-e89b-12d3-a456-426655440000"}
    token = jwt.encode(claims, key, algorithm=alg, headers={"ppt": ppt, "typ": "passport", "x5u": x5u})
    return f"{token};info=<{x5u}>;alg={alg};ppt={ppt}"


@pytest.fixture
def pki(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("SHAKEN test CA", ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate("SP 1", key, "SHAKEN test CA", ca_key)
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "root.pem").write_bytes(pem(ca))
    (tmp_path / "sp1.pem").write_bytes(pem(leaf))
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue_ca_key = ec.generate_private_key(ec.SECP256R1())
    rogue = certificate("SP 2", rogue_key, "Someone else", rogue_ca_key)
    (tmp_path / "sp2.pem").write_bytes(pem(rogue))
    return {"dir": tmp_path, "key": key, "rogue_key": rogue_key}


pytestmark = pytest.mark.store_independent


def test_verified_claims_give_their_attestation(pki):
    verifier = StirVerifier(pki["dir"])
    for attest in ("A", "B", "C"):
        result = verifier.verify([passport(pki["key"], attest=attest)], CALLER, NUMBER)
        assert (result.status, result.attestation) == ("verified", attest), result.reason
    # numbers written with visual separators are the same numbers (RFC 8224 8.3)
    assert verifier.verify([passport(pki["key"])], "+1 (555) 010-0199", NUMBER).status == "verified"
    assert verifier.verify([], CALLER, NUMBER).status == "absent"
    assert verifier.stats()["verified"] == 4


@pytest.mark.parametrize("case, expected", [
    ("unknown_x5u", "no configured certificate"),
    ("other_ca", "not issued by a configured CA"),
    ("tampered", "signature does not verify"),
    ("stale", "iat is not within"),
    ("orig", "orig.tn is not the calling number"),
    ("dest", "dest.tn does not name the called number"),
    ("attest", "attest"),
    ("alg", "is not ES256"),
    ("garbage", "not a JWS"),
])
def test_unverifiable_claims_fail_with_their_reason(pki, case, expected):
    verifier = StirVerifier(pki["dir"])
    key = pki["key"]
    header = {
        "unknown_x5u": lambda: passport(key, x5u="https://elsewhere.test/sp9.pem"),
        "other_ca": lambda: passport(pki["rogue_key"], x5u="https://certs.carrier.test/sp2.pem"),
        "tampered": lambda: _tamper(passport(key)),
        "stale": lambda: passport(key, iat=time.time() - 300),
        "orig": lambda: passport(key, orig="+15550100222"),
        "dest": lambda: passport(key, dest="+15550100333"),
        "attest": lambda: passport(key, attest="Z"),
        "alg": lambda: passport(ec.generate_private_key(ec.SECP384R1()), alg="ES384"),
        "garbage": lambda: "not-a-token;info=<https://x.test/a.pem>",
    }[case]()
    result = verifier.verify([header], CALLER, NUMBER)
    assert result.status == "failed" and result.attestation is None
    assert expected in result.reason


def _tamper(header: str) -> str:
    token, _, params = header.partition(";")
    head, payload, signature = token.split(".")
    import base64
    import json
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["attest"] = "A" if claims["attest"] != "A" else "B"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{signature};{params}"


def test_an_inbound_call_records_its_verified_attestation(pki, tmp_path):
    async def main():
        carrier = await Carrier().start()
        async with pstn_controller(tmp_path / "c", stir_certs_dir=pki["dir"]) as c:
            call_id, alice = await new_call(c)
            await c.client.post("/v1/numbers", json={"number": NUMBER, "route": {"call": call_id}},
                                headers=c.admin)
            good, _ = await carrier.call(c.sip_port, NUMBER, caller=CALLER,
                                         extra=[("Identity", passport(pki["key"]))])
            await asyncio.wait_for(good.answered, 5)
            bad, _ = await carrier.call(c.sip_port, NUMBER, caller=CALLER,
                                        extra=[("Identity", passport(pki["key"], orig="+15550100222"))])
            await asyncio.wait_for(bad.answered, 5)   # unverifiable: logged, not trusted, not refused
            call = (await c.client.get(f"/v1/calls/{call_id}", headers=alice)).json()
            screenings = sorted((p["pstn"]["screening"]["stir"]["status"], p["pstn"]["screening"]["attestation"])
                                for p in call["participants"])
            await good.bye()
            await bad.bye()
            stats = c.server.pstn.stats()["stir"]
        await carrier.stop()
        return screenings, stats

    screenings, stats = uvloop.run(main())
    assert screenings == [("failed", None), ("verified", "A")]
    assert stats["verified"] == 1 and stats["failed"] == 1
