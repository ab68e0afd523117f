# cython: language_level=3
"""G.711 (ITU-T G.711) mu-law and A-law by table, bit-exact with the ITU reference.
"""
from libc.stdint cimport int16_t, uint8_t, uint16_t
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

import numpy as np
cimport numpy as cnp

cnp.import_array()

# --------------------------------------------------------------------------------------------------
# G.711 (ITU-T G.711): table-based mu-law and A-law
# --------------------------------------------------------------------------------------------------

cdef int16_t ULAW_DECODE[256]
cdef int16_t ALAW_DECODE[256]
cdef uint8_t ULAW_ENCODE[65536]
cdef uint8_t ALAW_ENCODE[65536]

cdef int _segment(int value, const int *ends) noexcept nogil:
    cdef int i
    for i in range(8):
        if value <= ends[i]:
            return i
    return 8

cdef int SEG_UEND[8]
cdef int SEG_AEND[8]
SEG_UEND[:] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]
SEG_AEND[:] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]


cdef uint8_t _linear_to_ulaw(int pcm) noexcept nogil:
    """G.711 mu-law from a 16-bit sample, through the 14-bit magnitude of the reference encoder."""
    cdef int mask, seg
    pcm >>= 2
    if pcm < 0:
        pcm = -pcm
        mask = 0x7F
    else:
        mask = 0xFF
    if pcm > 8159:  # clip
        pcm = 8159
    pcm += 0x21  # bias
    seg = _segment(pcm, SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask


cdef uint8_t _linear_to_alaw(int pcm) noexcept nogil:
    """G.711 A-law from a 16-bit sample, through the 13-bit magnitude of the reference encoder."""
    cdef int mask, seg, aval
    pcm >>= 3
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = _segment(pcm, SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    if seg < 2:
        aval |= (pcm >> 1) & 0x0F
    else:
        aval |= (pcm >> seg) & 0x0F
    return aval ^ mask


cdef int16_t _ulaw_to_linear(uint8_t u) noexcept nogil:
    cdef int t
    u = ~u
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return (0x84 - t) if (u & 0x80) else (t - 0x84)


cdef int16_t _alaw_to_linear(uint8_t a) noexcept nogil:
    cdef int t, seg
    a ^= 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t += 0x108
        t <<= seg - 1
    return t if (a & 0x80) else -t


cdef void _build_g711_tables():
    cdef int i
    for i in range(256):
        ULAW_DECODE[i] = _ulaw_to_linear(i)
        ALAW_DECODE[i] = _alaw_to_linear(i)
    for i in range(65536):
        ULAW_ENCODE[i] = _linear_to_ulaw(<int16_t>i)
        ALAW_ENCODE[i] = _linear_to_alaw(<int16_t>i)


_build_g711_tables()


def ulaw_encode(const int16_t[::1] pcm) -> bytes:
    """PCMU payload (RFC 3551 section 4.5.14) from int16 samples."""
    cdef Py_ssize_t i, n = pcm.shape[0]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    with nogil:
        for i in range(n):
            o[i] = ULAW_ENCODE[<uint16_t>pcm[i]]
    return out


def alaw_encode(const int16_t[::1] pcm) -> bytes:
    """PCMA payload (RFC 3551 section 4.5.14) from int16 samples."""
    cdef Py_ssize_t i, n = pcm.shape[0]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t *o = <uint8_t *>PyBytes_AS_STRING(out)
    with nogil:
        for i in range(n):
            o[i] = ALAW_ENCODE[<uint16_t>pcm[i]]
    return out


def ulaw_decode_into(const uint8_t[::1] payload, int16_t[::1] out) -> int:
    """Decode PCMU into `out`; returns samples written (at most len(out))."""
    cdef Py_ssize_t i, n = min(payload.shape[0], out.shape[0])
    with nogil:
        for i in range(n):
            out[i] = ULAW_DECODE[payload[i]]
    return n


def alaw_decode_into(const uint8_t[::1] payload, int16_t[::1] out) -> int:
    """Decode PCMA into `out`; returns samples written (at most len(out))."""
    cdef Py_ssize_t i, n = min(payload.shape[0], out.shape[0])
    with nogil:
        for i in range(n):
            out[i] = ALAW_DECODE[payload[i]]
    return n


def ulaw_decode(payload) -> cnp.ndarray:
    out = np.empty(len(payload), dtype=np.int16)
    ulaw_decode_into(bytes(payload), out)
    return out


def alaw_decode(payload) -> cnp.ndarray:
    out = np.empty(len(payload), dtype=np.int16)
    alaw_decode_into(bytes(payload), out)
    return out
