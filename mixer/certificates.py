"""Self-signed TLS certificates made on first start, and their fingerprints (`cryptography`).

The controller's HTTPS API and an engine's control API on a non-loopback address use one: the
certificate names every host it serves plus localhost and the loopback addresses, and is a CA of
itself, so a client can trust exactly this one file, or pin its SHA-256 fingerprint (the
controller pins its engines'). The private key is written 0600 in a 0700 data directory
(`mixer.datadir`).
"""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mixer.datadir import narrow_secret_file, private_directory, write_secret

SELF_SIGNED_DAYS = 825  # the longest validity browsers still accept for a leaf certificate


def fingerprint_of(der: bytes) -> str:
    """SHA-256 of a DER certificate as colon-separated upper-case hex (what `openssl x509` shows)."""
    cert = x509.load_der_x509_certificate(der)
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def fingerprint_sha256(cert_path: Path) -> str:
    """The PEM certificate's SHA-256 fingerprint, colon-separated hex."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def normalize_fingerprint(text: str) -> str:
    """'sha256:ab:cd...' / 'AB CD ...' / 'abcd...' -> 'AB:CD:...'; ValueError if not 32 bytes."""
    value = text.strip()
    if value.lower().startswith("sha256:") or value.lower().startswith("sha-256:"):
        value = value.split(":", 1)[1]
    digits = "".join(c for c in value if c not in ": ").upper()
    if len(digits) != 64 or any(c not in "0123456789ABCDEF" for c in digits):
        raise ValueError("a SHA-256 fingerprint is 32 bytes of hex (AB:CD:...)")
    return ":".join(digits[i:i + 2] for i in range(0, 64, 2))


def self_signed(data_dir: Path, hosts: list[str], name: str = "controller",
                common_name: str = "voicemix controller") -> tuple[Path, Path, bool]:
    """`<name>-cert.pem` and `<name>-key.pem` in `data_dir`, created if absent; returns
    (cert, key, created). The certificate names every host given (IP addresses and DNS names)
    plus localhost and the loopback addresses."""
    data_dir = private_directory(Path(data_dir))
    cert_path, key_path = data_dir / f"{name}-cert.pem", data_dir / f"{name}-key.pem"
    if cert_path.exists() and key_path.exists():
        narrow_secret_file(key_path)
        return cert_path, key_path, False
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for host in sorted({*hosts, "127.0.0.1", "::1"}):
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if host and host != "localhost":
                names.append(x509.DNSName(host))
            continue
        if not address.is_unspecified:  # 0.0.0.0 names no host a client connects to
            names.append(x509.IPAddress(address))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_secret(key_path, key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path, True
