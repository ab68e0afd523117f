# cython: language_level=3
"""RTP packets: header parse and build (RFC 3550 section 5.1) with RFC 8285 header extensions,
RFC 6464 audio-level elements, and 16/32-bit sequence and timestamp arithmetic (RFC 1982).

`parse()` checks every length before reading, so arbitrary bytes give a packet or RtpError.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize

from mixer._wire cimport _u16, _u32, _put16, _put32


# RFC 3550 section 5.1
RTP_VERSION = 2
RTP_HEADER_SIZE = 12
RTP_MAX_CSRC = 15
# RFC 8285 section 4.2 (one-byte) and 4.3 (two-byte) header extension profiles
EXTENSION_PROFILE_ONE_BYTE = 0xBEDE
EXTENSION_PROFILE_TWO_BYTE = 0x1000
RTP_SEQ_MOD = 1 << 16
# RFC 6464 section 3: levels are 0..127 in -dBov, 127 meaning silence
AUDIO_LEVEL_SILENT = 127

cdef enum:
    C_PROFILE_ONE_BYTE = 0xBEDE
    C_PROFILE_TWO_BYTE = 0x1000
cdef tuple EMPTY_TUPLE = ()
cdef bytes EMPTY_BYTES = b""


class RtpError(ValueError):
    """A byte string is not a well-formed RTP packet. The only exception RtpPacket.parse raises."""

# --------------------------------------------------------------------------------------------------
# RTP header: RFC 3550 section 5.1 and RFC 8285
# --------------------------------------------------------------------------------------------------

cdef inline bint _is_two_byte_profile(int profile) noexcept nogil:
    return (profile & 0xFFF0) == C_PROFILE_TWO_BYTE


cdef int _next_element(const uint8_t *p, Py_ssize_t n, int profile, Py_ssize_t *pos,
                       int *ident, Py_ssize_t *data, int *length) noexcept nogil:
    """Step to the next RFC 8285 element at or after `pos[0]`.

    Returns 1 with (ident, data offset, length) set and `pos` moved past it, 0 at the end of the
    block (or at ID 15, which ends processing, section 4.2), -1 when an element runs past the block.
    Padding (ID 0) is skipped one byte at a time in both forms; in the one-byte form its length
    nibble is ignored, as libwebrtc does. Unknown profiles have no elements.
    """
    cdef Py_ssize_t i = pos[0]
    cdef int one_byte = profile == C_PROFILE_ONE_BYTE
    if not one_byte and not _is_two_byte_profile(profile):
        return 0
    while i < n and (p[i] >> 4 == 0 if one_byte else p[i] == 0):
        i += 1
    if i >= n:
        pos[0] = i
        return 0
    if one_byte:
        ident[0] = p[i] >> 4
        if ident[0] == 15:
            pos[0] = n
            return 0
        length[0] = (p[i] & 0x0F) + 1
        data[0] = i + 1
    else:
        if i + 2 > n:
            return -1
        ident[0] = p[i]
        length[0] = p[i + 1]
        data[0] = i + 2
    if data[0] + length[0] > n:
        return -1
    pos[0] = data[0] + length[0]
    return 1


cdef int _validate_extension(const uint8_t *p, Py_ssize_t n, int profile) noexcept nogil:
    """0 when every element fits in the block, -1 when one runs past it."""
    cdef Py_ssize_t pos = 0, data
    cdef int ident, length, found
    found = _next_element(p, n, profile, &pos, &ident, &data, &length)
    while found == 1:
        found = _next_element(p, n, profile, &pos, &ident, &data, &length)
    return found


cdef Py_ssize_t _find_extension(const uint8_t *p, Py_ssize_t n, int profile, int wanted,
                                int *out_len) noexcept nogil:
    """Offset of element `wanted`'s data inside an extension block, or -1."""
    cdef Py_ssize_t pos = 0, data
    cdef int ident, length
    while _next_element(p, n, profile, &pos, &ident, &data, &length) == 1:
        if ident == wanted:
            out_len[0] = length
            return data
    return -1


def encode_extensions(dict elements) -> tuple:
    """Pack {id: data} into an RFC 8285 block; returns (profile, block padded to 32 bits).

    Uses the one-byte form when every id is 1..14 and every element 1..16 bytes, else two-byte.
    """
    cdef bytearray block = bytearray()
    one_byte = all(1 <= k <= 14 and 1 <= len(v) <= 16 for k, v in elements.items())
    if one_byte:
        profile = EXTENSION_PROFILE_ONE_BYTE
        for ident, data in sorted(elements.items()):
            block.append((ident << 4) | (len(data) - 1))
            block += data
    else:
        profile = EXTENSION_PROFILE_TWO_BYTE
        for ident, data in sorted(elements.items()):
            if not 1 <= ident <= 255 or len(data) > 255:
                raise RtpError(f"header extension {ident} cannot be encoded")
            block.append(ident)
            block.append(len(data))
            block += data
    while len(block) % 4:
        block.append(0)
    return profile, bytes(block)


cdef class RtpPacket:
    """One RTP packet (RFC 3550 section 5.1) with its RFC 8285 header extensions kept raw.

    `parse()` validates every length field before reading, so arbitrary bytes produce either a packet
    or RtpError, never an out-of-bounds read.
    """


    def __init__(self, int payload_type=0, int sequence_number=0, uint32_t timestamp=0,
                 uint32_t ssrc=0, bytes payload=b"", bint marker=False, tuple csrc=(),
                 dict extensions=None, int padding_size=0):
        if not 0 <= payload_type <= 127:
            raise RtpError("payload type must be 0..127")
        if not 0 <= sequence_number <= 0xFFFF:
            raise RtpError("sequence number must be 0..65535")
        if len(csrc) > RTP_MAX_CSRC:
            raise RtpError("at most 15 CSRCs")
        if not 0 <= padding_size <= 255:
            raise RtpError("padding must be 0..255 bytes")
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
        self.marker = marker
        self.csrc = csrc
        self.padding_size = padding_size
        self.extension_profile = -1
        self.extension_data = EMPTY_BYTES
        if extensions:
            self.extension_profile, self.extension_data = encode_extensions(extensions)

    @staticmethod
    def parse(data) -> RtpPacket:
        """Parse one RTP packet; raises RtpError for anything malformed."""
        cdef bytes buf = data if type(data) is bytes else bytes(data)
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(buf)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
        cdef Py_ssize_t offset = RTP_HEADER_SIZE, end = n, ext_len
        cdef int cc, i, pad = 0, profile = -1
        cdef RtpPacket pkt
        if n < RTP_HEADER_SIZE:
            raise RtpError(f"packet too short for an RTP header ({n} bytes)")
        if (p[0] >> 6) != 2:
            raise RtpError(f"RTP version {p[0] >> 6} is not 2")
        cc = p[0] & 0x0F
        offset += 4 * cc
        if offset > n:
            raise RtpError("CSRC list runs past the packet")
        if p[0] & 0x20:
            pad = p[n - 1]
            if pad == 0:
                raise RtpError("padding bit set with a zero padding count")
            end = n - pad
            if end < offset:
                raise RtpError("padding count larger than the packet")
        pkt = RtpPacket.__new__(RtpPacket)
        if p[0] & 0x10:
            if offset + 4 > end:
                raise RtpError("extension header runs past the packet")
            profile = _u16(p + offset)
            ext_len = 4 * <Py_ssize_t>_u16(p + offset + 2)
            offset += 4
            if offset + ext_len > end:
                raise RtpError("extension runs past the packet")
            if _validate_extension(p + offset, ext_len, profile) < 0:
                raise RtpError("malformed RFC 8285 header extension element")
            pkt.extension_data = PyBytes_FromStringAndSize(<const char *>(p + offset), ext_len)
            offset += ext_len
        else:
            pkt.extension_data = EMPTY_BYTES
        pkt.extension_profile = profile
        pkt.marker = (p[1] & 0x80) != 0
        pkt.payload_type = p[1] & 0x7F
        pkt.sequence_number = _u16(p + 2)
        pkt.timestamp = _u32(p + 4)
        pkt.ssrc = _u32(p + 8)
        if cc:
            pkt.csrc = tuple([_u32(p + 12 + 4 * i) for i in range(cc)])
        else:
            pkt.csrc = EMPTY_TUPLE
        pkt.padding_size = pad
        pkt.payload = PyBytes_FromStringAndSize(<const char *>(p + offset), end - offset)
        return pkt

    def serialize(self) -> bytes:
        """Build the wire form (RFC 3550 section 5.1)."""
        cdef Py_ssize_t cc = len(self.csrc)
        cdef Py_ssize_t ext = len(self.extension_data) if self.extension_profile >= 0 else 0
        cdef Py_ssize_t size, offset
        cdef bytes out
        cdef uint8_t *p
        cdef int i
        if ext % 4:
            raise RtpError("extension data must be a multiple of 4 bytes")
        size = RTP_HEADER_SIZE + 4 * cc + (4 + ext if self.extension_profile >= 0 else 0) \
            + len(self.payload) + self.padding_size
        out = PyBytes_FromStringAndSize(NULL, size)
        p = <uint8_t *>PyBytes_AS_STRING(out)
        p[0] = 0x80 | cc | (0x20 if self.padding_size else 0) \
            | (0x10 if self.extension_profile >= 0 else 0)
        p[1] = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        _put16(p + 2, self.sequence_number)
        _put32(p + 4, self.timestamp)
        _put32(p + 8, self.ssrc)
        offset = RTP_HEADER_SIZE
        for i in range(cc):
            _put32(p + offset, self.csrc[i])
            offset += 4
        if self.extension_profile >= 0:
            _put16(p + offset, self.extension_profile)
            _put16(p + offset + 2, ext // 4)
            offset += 4
            memcpy(p + offset, PyBytes_AS_STRING(self.extension_data), ext)
            offset += ext
        memcpy(p + offset, PyBytes_AS_STRING(self.payload), len(self.payload))
        offset += len(self.payload)
        if self.padding_size:
            memset(p + offset, 0, self.padding_size - 1)
            p[size - 1] = self.padding_size
        return out

    @property
    def version(self) -> int:
        return RTP_VERSION

    @property
    def extensions(self) -> dict:
        """RFC 8285 elements as {id: data}."""
        cdef dict result = {}
        cdef Py_ssize_t pos = 0, data
        cdef int ident, length
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(self.extension_data)
        cdef Py_ssize_t n = len(self.extension_data)
        if self.extension_profile < 0:
            return result
        while _next_element(p, n, self.extension_profile, &pos, &ident, &data, &length) == 1:
            result[ident] = self.extension_data[data:data + length]
        return result

    def audio_level(self, int ext_id):
        """RFC 6464 client-to-mixer level as (voice_activity, level 0..127), or None if absent."""
        cdef int length = 0
        cdef Py_ssize_t at
        cdef uint8_t b
        if self.extension_profile < 0 or ext_id <= 0:
            return None
        at = _find_extension(<const uint8_t *>PyBytes_AS_STRING(self.extension_data),
                             len(self.extension_data), self.extension_profile, ext_id, &length)
        if at < 0 or length < 1:
            return None
        b = (<const uint8_t *>PyBytes_AS_STRING(self.extension_data))[at]
        return (b & 0x80) != 0, b & 0x7F

    def __repr__(self):
        return (f"RtpPacket(pt={self.payload_type}, seq={self.sequence_number}, ts={self.timestamp}, "
                f"ssrc={self.ssrc:#010x}, marker={self.marker}, payload={len(self.payload)}B)")


def build_rtp(int payload_type, int sequence_number, uint32_t timestamp, uint32_t ssrc,
              bytes payload, bint marker=False, int extension_profile=-1,
              bytes extension_data=None) -> bytes:
    """Fast path to the wire form without building an RtpPacket (the engine's send loop)."""
    cdef Py_ssize_t ext = len(extension_data) if extension_profile >= 0 and extension_data else 0
    cdef Py_ssize_t plen = len(payload)
    cdef Py_ssize_t size = RTP_HEADER_SIZE + plen + (4 + ext if extension_profile >= 0 else 0)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    cdef Py_ssize_t offset = RTP_HEADER_SIZE
    if ext % 4:
        raise RtpError("extension data must be a multiple of 4 bytes")
    p[0] = 0x80 | (0x10 if extension_profile >= 0 else 0)
    p[1] = (0x80 if marker else 0) | (payload_type & 0x7F)
    _put16(p + 2, sequence_number & 0xFFFF)
    _put32(p + 4, timestamp)
    _put32(p + 8, ssrc)
    if extension_profile >= 0:
        _put16(p + offset, extension_profile)
        _put16(p + offset + 2, ext // 4)
        offset += 4
        if ext:
            memcpy(p + offset, PyBytes_AS_STRING(extension_data), ext)
        offset += ext
    memcpy(p + offset, PyBytes_AS_STRING(payload), plen)
    return out


def audio_level_extension(int ext_id, int level, bint voice) -> bytes:
    """A one-byte-profile extension block carrying just the RFC 6464 level (for build_rtp)."""
    if not 1 <= ext_id <= 14:
        raise RtpError("one-byte extension ids are 1..14")
    level = min(max(level, 0), AUDIO_LEVEL_SILENT)
    return bytes(((ext_id << 4), (0x80 if voice else 0) | level, 0, 0))


# --------------------------------------------------------------------------------------------------
# Sequence arithmetic: RFC 3550 appendix A.1 (validity, extended sequence), A.8 (jitter)
# --------------------------------------------------------------------------------------------------

cpdef int seq_diff(int a, int b):
    """a - b as a signed 16-bit distance: positive when `a` is newer, across wrap-around."""
    cdef int d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


cpdef bint seq_newer(int a, int b):
    """True when sequence number `a` comes after `b` (RFC 1982 serial arithmetic on 16 bits)."""
    return seq_diff(a, b) > 0


cpdef int64_t timestamp_diff(uint32_t a, uint32_t b):
    """a - b as a signed 32-bit distance in RTP clock units, across wrap-around."""
    return <int32_t>(a - b)
