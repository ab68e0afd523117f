"""Random identifiers for SIP: tags, branches, Call-IDs (RFC 3261 19.3: globally unique and
cryptographically random, at least 32 bits).

The bytes come from the OS's CSPRNG, fetched 4 KB at a time: one `getrandom` per few hundred
identifiers instead of one each (each call placed or answered needs several, and under load a
system call is what costs).
"""
from __future__ import annotations

import os
import threading

_POOL_BYTES = 4096
_lock = threading.Lock()
_pool = b""
_offset = 0


def random_hex(nbytes: int) -> str:
    global _pool, _offset
    with _lock:
        if _offset + nbytes > len(_pool):
            _pool = os.urandom(_POOL_BYTES)
            _offset = 0
        chunk = _pool[_offset:_offset + nbytes]
        _offset += nbytes
    return chunk.hex()
