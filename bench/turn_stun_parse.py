"""STUN parsing: ours (attribute split in Cython, values on demand) vs aioice.stun, in one run.

The issue allowed aioice's parser "only if it is fast enough"; this is the measurement behind the
choice. Messages: a Binding request (20 bytes), an authenticated Allocate (USERNAME, REALM, NONCE,
REQUESTED-TRANSPORT, LIFETIME, MESSAGE-INTEGRITY, FINGERPRINT) and a Send indication with a 100-byte
payload. Each side parses and reads the attributes a TURN server reads, and checks integrity where
there is one.

    python bench/turn_stun_parse.py
"""
from __future__ import annotations

import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aioice.stun as aioice_stun  # noqa: E402

from mixer.turn import stun  # noqa: E402

KEY = stun.long_term_key("alice", "voicemix", "pw")
TXID = os.urandom(12)
MESSAGES = {
    "binding request": stun.build(stun.BINDING, stun.REQUEST, TXID, [], fingerprint=False),
    "authenticated allocate": stun.build(stun.ALLOCATE, stun.REQUEST, TXID, [
        stun.uint32_attribute(stun.REQUESTED_TRANSPORT, 17 << 24), stun.uint32_attribute(stun.LIFETIME, 600),
        (stun.USERNAME, b"1760000000:identity-1"), (stun.REALM, b"voicemix"), (stun.NONCE, b"0" * 32)], key=KEY),
    "send indication (100 B)": stun.build(stun.SEND, stun.INDICATION, TXID, [
        (stun.XOR_PEER_ADDRESS, stun.encode_xor_address(("192.0.2.1", 5000), TXID)),
        (stun.DATA_ATTR, os.urandom(100))], fingerprint=False),
}


def ours(raw: bytes) -> None:
    message = stun.parse(raw)
    message.unknown_required()
    if message.method == stun.SEND:
        message.xor_address(stun.XOR_PEER_ADDRESS), message.get(stun.DATA_ATTR)
    elif message.method == stun.ALLOCATE:
        message.text(stun.USERNAME), message.text(stun.NONCE), message.uint32(stun.LIFETIME)
        stun.check_integrity(message, KEY)


def theirs(raw: bytes) -> None:
    message = aioice_stun.parse_message(raw)
    attributes = message.attributes
    if message.message_method == aioice_stun.Method.SEND:
        attributes["XOR-PEER-ADDRESS"], attributes["DATA"]
    elif message.message_method == aioice_stun.Method.ALLOCATE:
        attributes["USERNAME"], attributes["NONCE"], attributes["LIFETIME"]
        # aioice's own check (it raises on mismatch)
        aioice_stun.message_integrity(message._integrity_data, KEY) == attributes["MESSAGE-INTEGRITY"]


def per_call_us(function, raw: bytes) -> float:
    timer = timeit.Timer(lambda: function(raw))
    loops, _ = timer.autorange()
    return min(timer.repeat(5, loops)) / loops * 1e6


def main() -> int:
    print("STUN parse + the reads a TURN server does, per message (best of 5)")
    for name, raw in MESSAGES.items():
        a, b = per_call_us(ours, raw), per_call_us(theirs, raw)
        print(f"  {name:26s} voicemix {a:6.2f} us   aioice {b:6.2f} us   aioice/voicemix {b / a:4.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
