"""The controller's TLS certificate: configured, or self-signed on first start.

The certificate code is shared with the engine's control API (`mixer.certificates`); the
controller's files are `controller-cert.pem` and `controller-key.pem` in its data directory.
"""
from __future__ import annotations

from pathlib import Path

from mixer.certificates import fingerprint_sha256
from mixer.certificates import self_signed as _self_signed

__all__ = ["CERT_FILE", "KEY_FILE", "fingerprint_sha256", "self_signed"]

CERT_FILE = "controller-cert.pem"
KEY_FILE = "controller-key.pem"


def self_signed(data_dir: Path, hosts: list[str]) -> tuple[Path, Path, bool]:
    """The controller's self-signed certificate in `data_dir`, created if absent; returns
    (cert, key, created)."""
    return _self_signed(data_dir, hosts, "controller", "voicemix controller")
