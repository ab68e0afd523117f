# cython: language_level=3
"""The compiled hot paths of the media tier.

Everything here is a pure function or a small class over bytes and numpy buffers: RTP header parse and
build (RFC 3550 section 5.1, RFC 8285 header extensions), sequence arithmetic (RFC 3550 appendix A.1)
and interarrival jitter (A.8), the adaptive jitter buffer, G.711 tables, 8 <-> 48 kHz resampling, the
mix-minus kernel and RFC 6464 audio levels. No sockets, no asyncio. Loops over samples run without the
GIL.
"""
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.stdlib cimport malloc, free, calloc
from libc.string cimport memcpy, memset
from libc.math cimport sqrt, log10, ceil, lround
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize

import numpy as np
cimport numpy as cnp

from mixer._wire cimport _u16, _u32, _put16, _put32

cnp.import_array()

# RFC 3550 section 5.1
RTP_VERSION = 2
RTP_HEADER_SIZE = 12
RTP_MAX_CSRC = 15
# RFC 8285 section 4.2 (one-byte) and 4.3 (two-byte) header extension profiles
EXTENSION_PROFILE_ONE_BYTE = 0xBEDE
EXTENSION_PROFILE_TWO_BYTE = 0x1000
# RFC 3550 appendix A.1
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
RTP_SEQ_MOD = 1 << 16
# RFC 6464 section 3: levels are 0..127 in -dBov, 127 meaning silence
AUDIO_LEVEL_SILENT = 127

cdef int C_RTP_SEQ_MOD = 1 << 16
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

    cdef public bint marker
    cdef public int payload_type
    cdef public int sequence_number
    cdef public uint32_t timestamp
    cdef public uint32_t ssrc
    cdef public tuple csrc
    cdef public int extension_profile
    cdef public bytes extension_data
    cdef public bytes payload
    cdef public int padding_size

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

cpdef inline int seq_diff(int a, int b):
    """a - b as a signed 16-bit distance: positive when `a` is newer, across wrap-around."""
    cdef int d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


cpdef inline bint seq_newer(int a, int b):
    """True when sequence number `a` comes after `b` (RFC 1982 serial arithmetic on 16 bits)."""
    return seq_diff(a, b) > 0


cpdef inline int64_t timestamp_diff(uint32_t a, uint32_t b):
    """a - b as a signed 32-bit distance in RTP clock units, across wrap-around."""
    return <int32_t>(a - b)


cdef class RtpSource:
    """Per-SSRC receive state of RFC 3550 appendix A.1 (sequence validity, extended highest
    sequence), A.3 (expected and lost counts, loss fraction) and A.8 (interarrival jitter)."""

    cdef readonly int max_seq
    cdef readonly uint32_t cycles
    cdef readonly uint32_t base_seq
    cdef readonly uint32_t bad_seq
    cdef readonly int probation
    cdef readonly uint32_t received
    cdef uint32_t expected_prior
    cdef uint32_t received_prior
    cdef readonly int clock_rate
    cdef int64_t transit
    cdef bint have_transit
    cdef double _jitter

    def __init__(self, int seq, int clock_rate=48000, int probation=MIN_SEQUENTIAL):
        """`seq` is the first packet's sequence number; pass it to update_seq() too. With
        probation=0 (e.g. an SRTP-authenticated leg) the source is valid from its first packet."""
        self.clock_rate = clock_rate
        self._init_seq(seq)
        if probation:
            self.max_seq = (seq - 1) & 0xFFFF
        self.probation = probation
        self._jitter = 0.0
        self.have_transit = False

    cdef void _init_seq(self, int seq):
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = C_RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    cpdef bint update_seq(self, int seq):
        """Account one packet; False while on probation or when the packet is invalid (A.1)."""
        cdef int udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == ((self.max_seq + 1) & 0xFFFF):
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        elif udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += C_RTP_SEQ_MOD
            self.max_seq = seq
        elif udelta <= C_RTP_SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                # Two sequential packets after a big jump: the source restarted; resync (A.1).
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet, counted below
        self.received += 1
        return True

    cpdef void update_jitter(self, uint32_t rtp_timestamp, uint32_t arrival):
        """A.8: `arrival` is the arrival time in the same clock units as the RTP timestamps."""
        cdef int64_t transit = <int32_t>(arrival - rtp_timestamp)
        cdef int64_t d
        if self.have_transit:
            d = transit - self.transit
            if d < 0:
                d = -d
            self._jitter += (d - self._jitter) / 16.0
        self.transit = transit
        self.have_transit = True

    @property
    def extended_max(self) -> int:
        """Extended highest sequence number received (cycles + max_seq)."""
        return self.cycles + self.max_seq

    @property
    def jitter(self) -> int:
        """Interarrival jitter in RTP clock units, as carried in report blocks."""
        return <uint32_t>self._jitter

    @property
    def jitter_ms(self) -> float:
        return self._jitter * 1000.0 / self.clock_rate

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        """A.3, clamped to the signed 24-bit field of a report block."""
        cdef int64_t lost = <int64_t>self.expected - self.received
        return max(-0x800000, min(0x7FFFFF, lost))

    def fraction_lost(self) -> int:
        """A.3 loss fraction since the previous call, in 1/256 (0..255); starts a new interval."""
        cdef int64_t expected = self.expected
        cdef int64_t expected_interval = expected - self.expected_prior
        cdef int64_t received_interval = <int64_t>self.received - self.received_prior
        cdef int64_t lost_interval = expected_interval - received_interval
        self.expected_prior = expected
        self.received_prior = self.received
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)


# --------------------------------------------------------------------------------------------------
# Adaptive jitter buffer
# --------------------------------------------------------------------------------------------------

# Outcomes of JitterBuffer.put()
PUT_OK = 0
PUT_DUPLICATE = 1
PUT_LATE = 2
PUT_RESET = 3
# Outcomes of JitterBuffer.pop(): what the caller should do for this 20 ms slot
FRAME = 0       # a packet: decode it
LOSS = 1        # the expected packet is lost and later ones are here: conceal (PLC, or FEC from peek())
UNDERRUN = 2    # the buffer ran dry mid-stream: conceal once, the buffer rebuilds its delay
BUFFERING = 3   # filling up to the target delay (talk-spurt start): nothing to play yet
IDLE = 4        # nothing received yet

cdef enum:
    C_PUT_OK = 0
    C_PUT_DUPLICATE = 1
    C_PUT_LATE = 2
    C_PUT_RESET = 3
# pop() answers without a packet are shared tuples: no allocation per tick
cdef tuple _LOSS_NONE = (LOSS, None)
cdef tuple _UNDERRUN_NONE = (UNDERRUN, None)
cdef tuple _BUFFERING_NONE = (BUFFERING, None)
cdef tuple _IDLE_NONE = (IDLE, None)
# Consecutive frames that must wait longer than needed before one is dropped to shrink the delay.
cdef int SHRINK_AFTER = 25
# The delay-variation peak halves every ~2 s of 20 ms packets (0.5 ** (1 / 100)).
cdef double PEAK_DECAY = 0.9930925
# Delay variation up to this much is absorbed by the tick phase without an extra frame of delay:
# a packet arrives somewhere inside the 20 ms between ticks, and after at most one underrun the
# playout settles where such small jitter no longer reaches the tick (ms).
cdef double JITTER_SLACK_MS = 5.0
# The minimum transit follows slow clock drift upward by this much per packet (ms).
cdef double TRANSIT_LEAK_MS = 0.02


cdef class JitterBuffer:
    """Reorders one stream's packets and decides, once per frame tick, what to play.

    Playout follows sequence numbers: `put()` files packets into a ring of `capacity` slots, `pop()`
    is called once per frame (every `frame_ms`) and answers FRAME (with the packet), LOSS, UNDERRUN,
    BUFFERING or IDLE. The target delay adapts to measured delay variation: it is one frame plus the
    decaying peak of (transit - minimum transit), clamped to [min_delay_ms, max_delay_ms]. The buffer
    grows its delay by rebuilding after an underrun (at talk-spurt starts, where it is inaudible) and
    shrinks it by dropping one frame when frames have waited longer than needed for a while.
    Times are the caller's monotonic clock in milliseconds, which keeps it deterministic to test.
    """

    cdef list _slots
    cdef double *_arrival
    cdef readonly int capacity
    cdef int _mask
    cdef readonly int clock_rate
    cdef readonly double frame_ms
    cdef readonly double min_delay_ms
    cdef readonly double max_delay_ms
    cdef int64_t _next
    cdef int64_t _highest
    cdef bint _has_base
    cdef bint _playing
    cdef bint _advanced      # past the first fill (played, lost or restarted): never rewind _next
    cdef int _bad_seq        # RFC 3550 A.1 style: a far-behind packet expected next after a restart
    cdef double _last_heard_ms      # last arrival of a packet of the current stream, late or not
    cdef int _prev_seq       # where the stream before the last restart was (16-bit), or -1
    cdef double _prev_until_ms  # its stragglers are expected until then
    cdef int _count
    cdef int _over
    cdef int _stalled        # ticks answered UNDERRUN/BUFFERING since playout ran dry mid-stream
    cdef double _buffering_since
    # delay estimation
    cdef bint _have_ref
    cdef double _ref_arrival
    cdef uint32_t _ref_ts
    cdef double _min_transit
    cdef double _peak
    cdef int _target
    cdef double _last_transit
    cdef double _jitter
    # stats
    cdef readonly int64_t received, lost, late, duplicates, reordered, underruns, discarded, resets
    cdef readonly int64_t played
    cdef double _wait_sum

    def __cinit__(self, int clock_rate=48000, double frame_ms=20.0, double min_delay_ms=20.0,
                  double max_delay_ms=200.0, int capacity=128):
        cdef int cap = 1
        if frame_ms <= 0 or min_delay_ms < 0 or max_delay_ms < min_delay_ms:
            raise ValueError("need frame_ms > 0 and 0 <= min_delay_ms <= max_delay_ms")
        while cap < capacity:
            cap <<= 1
        self.capacity = cap
        self._mask = cap - 1
        self._slots = [None] * cap
        self._arrival = <double *>calloc(cap, sizeof(double))
        if self._arrival == NULL:
            raise MemoryError()
        self.clock_rate = clock_rate
        self.frame_ms = frame_ms
        self.min_delay_ms = min_delay_ms
        self.max_delay_ms = max_delay_ms
        self._bad_seq = -1
        self._prev_seq = -1
        self._target = self._compute_target()

    def __dealloc__(self):
        free(self._arrival)

    cdef void _clear(self):
        cdef int i
        self._stalled = 0
        for i in range(self.capacity):
            self._slots[i] = None
        self._count = 0
        self._playing = False
        self._over = 0

    cdef void _observe_timing(self, uint32_t ts, double arrival_ms):
        cdef double transit, variation
        if not self._have_ref:
            # Transit is measured relative to the first packet, so only its variation matters.
            self._have_ref = True
            self._ref_arrival = arrival_ms
            self._ref_ts = ts
            self._last_transit = 0.0
            self._min_transit = 0.0
            return
        transit = (arrival_ms - self._ref_arrival) \
            - (<int32_t>(ts - self._ref_ts)) * 1000.0 / self.clock_rate
        # RFC 3550 A.8 style smoothed jitter, in ms, for stats
        variation = transit - self._last_transit
        if variation < 0:
            variation = -variation
        self._jitter += (variation - self._jitter) / 16.0
        self._last_transit = transit
        self._min_transit = min(self._min_transit + TRANSIT_LEAK_MS, transit)
        self._peak = max(transit - self._min_transit, self._peak * PEAK_DECAY)
        self._target = self._compute_target()

    cpdef int target_frames(self):
        """Frames to hold before playing: one plus the delay-variation peak, within the limits."""
        return self._target

    cdef int _compute_target(self):
        cdef double target = self.frame_ms + max(0.0, self._peak - JITTER_SLACK_MS)
        if target < self.min_delay_ms:
            target = self.min_delay_ms
        if target > self.max_delay_ms:
            target = self.max_delay_ms
        return max(1, <int>ceil(target / self.frame_ms - 1e-9))

    cpdef int put(self, RtpPacket packet, double arrival_ms):
        """File one packet; returns PUT_OK, PUT_DUPLICATE, PUT_LATE or PUT_RESET."""
        cdef int d
        cdef int64_t ext
        cdef int idx
        if not self._has_base:
            self._has_base = True
            self._next = packet.sequence_number
            self._highest = self._next
            self._buffering_since = arrival_ms
            return self._store(packet, self._next, arrival_ms)
        d = seq_diff(packet.sequence_number, <int>(self._next & 0xFFFF))
        ext = self._next + d
        if -self.capacity < d < self.capacity:
            self._last_heard_ms = arrival_ms  # the current stream is alive, even if this is late
        if d < 0:
            if not self._playing and not self._advanced and self._highest - ext < self.capacity:
                # Still filling for the first time: an earlier packet arrived after a later one.
                if self._count == 0:
                    self._highest = ext
                    self._buffering_since = arrival_ms
                self._next = ext
            elif (d <= -self.capacity and packet.sequence_number == self._bad_seq
                  and self._stream_quiet(arrival_ms)
                  and not self._near_previous_stream(packet.sequence_number, arrival_ms)):
                # Two sequential packets far behind playout while the current stream has gone
                # quiet: the sender restarted with lower sequence numbers (RFC 3550 A.1 treats a
                # big jump the same way). Stragglers of a live stream do not qualify. Start over.
                return self._restart(packet, ext, arrival_ms)
            else:
                if d <= -self.capacity:
                    self._bad_seq = (packet.sequence_number + 1) & 0xFFFF
                self.late += 1
                return C_PUT_LATE
        elif ext - self._next >= self.capacity:
            if self._near_previous_stream(packet.sequence_number, arrival_ms):
                self.late += 1  # a straggler of the stream we restarted away from
                return C_PUT_LATE
            if packet.sequence_number != self._bad_seq or not self._stream_quiet(arrival_ms):
                # One packet far ahead: the sender jumped (restart, long outage), or it is a
                # stray of an earlier stream that only looks ahead. As RFC 3550 A.1 does, believe
                # a jump when the next packet follows it, and (as for jumps back) only once the
                # current stream has gone quiet; until then such packets are dropped.
                self._bad_seq = (packet.sequence_number + 1) & 0xFFFF
                self.late += 1
                return C_PUT_LATE
            # Two sequential packets far beyond the window, the current stream quiet: start over.
            return self._restart(packet, ext, arrival_ms)
        idx = <int>(ext & self._mask)
        if self._slots[idx] is not None:
            self.duplicates += 1
            return C_PUT_DUPLICATE
        return self._store(packet, ext, arrival_ms)

    cdef bint _stream_quiet(self, double arrival_ms):
        """The current stream has sent nothing, not even late packets, for `max_delay_ms`: the
        most delay this buffer is built to absorb. Sooner, packets that jump could be stragglers
        of an earlier stream overtaken by the current one, and no field of theirs says which
        stream is newer (sequence numbers and timestamps both restart at random)."""
        return arrival_ms - self._last_heard_ms >= self.max_delay_ms

    cdef bint _near_previous_stream(self, int seq, double arrival_ms):
        """A straggler of the stream we restarted away from: near where it was, and soon after the
        restart (twice the maximum delay; later, a source returning there is a new stream)."""
        cdef int d
        if self._prev_seq < 0 or arrival_ms > self._prev_until_ms:
            return False
        d = seq_diff(seq, self._prev_seq)
        return -self.capacity <= d <= self.capacity

    cdef int _restart(self, RtpPacket packet, int64_t ext, double arrival_ms):
        """A new stream in the same buffer: forget slots, playout position and timing reference.

        Rewinding stays off, and the old stream's position is remembered: its stragglers must not
        pull playout back."""
        self._prev_seq = <int>(self._next & 0xFFFF)
        self._prev_until_ms = arrival_ms + 2 * self.max_delay_ms
        self.resets += 1
        self._clear()
        self._advanced = True
        self._bad_seq = -1
        self._have_ref = False
        self._peak = 0.0
        self._target = self._compute_target()
        self._next = ext
        self._highest = ext
        self._buffering_since = arrival_ms
        self._store(packet, ext, arrival_ms)
        return C_PUT_RESET

    cdef int _store(self, RtpPacket packet, int64_t ext, double arrival_ms):
        cdef int idx = <int>(ext & self._mask)
        if self._count == 0 and not self._playing:
            self._buffering_since = arrival_ms
        if ext < self._highest:
            self.reordered += 1
        else:
            self._highest = ext
            self._observe_timing(packet.timestamp, arrival_ms)
        self._slots[idx] = packet
        self._arrival[idx] = arrival_ms
        self._last_heard_ms = arrival_ms
        self._count += 1
        self.received += 1
        return C_PUT_OK

    cpdef tuple pop(self, double now_ms):
        """Decide this frame tick: returns (status, packet or None)."""
        cdef int idx
        cdef object packet
        cdef int64_t occupancy
        cdef int target
        if not self._has_base:
            return _IDLE_NONE
        if not self._playing:
            if self._count == 0:
                if self._advanced:
                    self._stalled += 1
                return _BUFFERING_NONE
            occupancy = self._highest - self._next + 1
            target = self.target_frames()
            if occupancy < target and now_ms - self._buffering_since < target * self.frame_ms:
                if self._advanced:
                    self._stalled += 1
                return _BUFFERING_NONE
            self._playing = True
            self._over = 0
            # Slots that passed while stalled were already concealed (or silent): a packet missing
            # at the head for one of them is lost, not a reason to conceal once more and play
            # everything a frame later. Without this every lost packet would add a frame of delay.
            while self._stalled > 0 and self._count > 0 \
                    and self._slots[<int>(self._next & self._mask)] is None:
                self._next += 1
                self.lost += 1
                self._stalled -= 1
            self._stalled = 0
        idx = <int>(self._next & self._mask)
        packet = self._slots[idx]
        if packet is not None:
            self._slots[idx] = None
            self._count -= 1
            self._next += 1
            self._advanced = True
            self.played += 1
            self._wait_sum += now_ms - self._arrival[idx]
            self._maybe_shrink(now_ms - self._arrival[idx])
            return (FRAME, packet)
        if self._count == 0:
            # Ran dry: wait for the next packet and rebuild the target delay before playing again.
            self._playing = False
            self._stalled = 1
            self.underruns += 1
            return _UNDERRUN_NONE
        self._next += 1
        self._advanced = True
        self.lost += 1
        return _LOSS_NONE

    cdef void _maybe_shrink(self, double waited_ms):
        cdef int idx
        if waited_ms > (self.target_frames() + 1) * self.frame_ms:
            self._over += 1
        else:
            self._over = 0
        if self._over >= SHRINK_AFTER:
            self._over = 0
            idx = <int>(self._next & self._mask)
            if self._slots[idx] is not None and self._count > 1:
                self._slots[idx] = None
                self._count -= 1
                self._next += 1
                self.discarded += 1

    def peek(self):
        """The packet that the next pop() would return, if it is here (for Opus FEC after LOSS)."""
        if not self._has_base:
            return None
        return self._slots[<int>(self._next & self._mask)]

    @property
    def buffered_ms(self) -> float:
        """Audio held, counted from the next packet to play to the newest one received."""
        if not self._has_base or self._count == 0:
            return 0.0
        return (self._highest - self._next + 1) * self.frame_ms

    @property
    def target_delay_ms(self) -> float:
        return self.target_frames() * self.frame_ms

    @property
    def jitter_ms(self) -> float:
        return self._jitter

    def stats(self) -> dict:
        return {
            "received": self.received,
            "played": self.played,
            "lost": self.lost,
            "late": self.late,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "underruns": self.underruns,
            "discarded": self.discarded,
            "resets": self.resets,
            "buffered_ms": self.buffered_ms,
            "target_delay_ms": self.target_delay_ms,
            "mean_wait_ms": self._wait_sum / self.played if self.played else 0.0,
            "jitter_ms": round(self._jitter, 3),
            "delay_peak_ms": round(self._peak, 3),
        }


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


# --------------------------------------------------------------------------------------------------
# Resampling by an integer factor (8 kHz telephony <-> 48 kHz mix rate): stateful polyphase FIR
# --------------------------------------------------------------------------------------------------

cdef extern from "dsp_kernel.h" nogil:
    float vm_dot(const float *w, const float *x, int n)


def _design_lowpass(int factor, int taps_per_phase, double cutoff_hz, double high_rate,
                    double beta):
    """Kaiser-windowed sinc low-pass at the high rate, `factor * taps_per_phase` taps."""
    n = factor * taps_per_phase
    t = np.arange(n) - (n - 1) / 2.0
    fc = cutoff_hz / high_rate
    h = 2 * fc * np.sinc(2 * fc * t) * np.kaiser(n, beta)
    return h / h.sum()


cdef class Resampler:
    """Streams int16 audio between `in_rate` and `out_rate` whose ratio is an integer (e.g. 8000 and
    48000). Keeps filter history across calls, so consecutive 20 ms frames join without clicks.

    The low-pass (48 taps per phase, Kaiser beta 6) is centred at 0.4625 x the lower rate: for
    telephony the pass band is flat (within 0.5 dB) up to 3.4 kHz, the top of the telephone band,
    and everything from 4.4 kHz up is attenuated by more than 60 dB. Filter banks are stored
    reversed per phase, so every output sample is one contiguous dot product.
    """

    cdef readonly int in_rate
    cdef readonly int out_rate
    cdef readonly int factor
    cdef bint _up
    cdef float[::1] _bank     # up: per phase, reversed; down: the whole filter, reversed
    cdef int _tpp             # taps per phase
    cdef int _ntaps
    cdef float[::1] _hist     # previous input samples, newest last
    cdef int _hist_len

    def __cinit__(self, int in_rate, int out_rate, int taps_per_phase=48, double beta=6.0):
        cdef int low = min(in_rate, out_rate), high = max(in_rate, out_rate), p
        if low <= 0 or high % low:
            raise ValueError("rates must be positive with an integer ratio")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.factor = high // low
        self._up = out_rate > in_rate
        h = _design_lowpass(self.factor, taps_per_phase, 0.4625 * low, high, beta)
        self._tpp = taps_per_phase
        self._ntaps = len(h)
        if self._up:
            # phase p uses h[p], h[p + L], h[p + 2L], ... applied to x[i], x[i-1], ...: reversed
            bank = np.stack([h[p::self.factor][::-1] for p in range(self.factor)]) * self.factor
            self._bank = np.ascontiguousarray(bank.ravel(), dtype=np.float32)
            self._hist_len = taps_per_phase
        else:
            self._bank = np.ascontiguousarray(h[::-1], dtype=np.float32)
            self._hist_len = self._ntaps
        self._hist = np.zeros(self._hist_len, dtype=np.float32)

    def output_length(self, int n_in) -> int:
        return n_in * self.factor if self._up else n_in // self.factor

    @property
    def group_delay(self) -> float:
        """Delay of the linear-phase filter, in output samples (1.5 ms for telephony)."""
        delay = (self._ntaps - 1) / 2.0
        return delay if self._up else delay / self.factor

    def process_into(self, const int16_t[::1] pcm, int16_t[::1] out) -> int:
        """Resample `pcm` into `out`; returns samples written. Input length for downsampling must
        be a multiple of the factor (20 ms frames always are)."""
        cdef Py_ssize_t n_in = pcm.shape[0]
        cdef Py_ssize_t n_out = n_in * self.factor if self._up else n_in // self.factor
        cdef Py_ssize_t i, p, k, m, hl = self._hist_len, L = self.factor, taps = self._ntaps
        cdef Py_ssize_t tpp = self._tpp
        cdef float *buf
        cdef const float *x
        cdef const float *w
        cdef float acc
        cdef float[::1] bank = self._bank
        cdef float[::1] hist = self._hist
        cdef long v
        if out.shape[0] < n_out:
            raise ValueError("output buffer too small")
        if not self._up and n_in % L:
            raise ValueError("downsampling input must be a multiple of the factor")
        buf = <float *>malloc((hl + n_in) * sizeof(float))
        if buf == NULL:
            raise MemoryError()
        with nogil:
            for i in range(hl):
                buf[i] = hist[i]
            for i in range(n_in):
                buf[hl + i] = pcm[i]
            if self._up:
                for i in range(n_in):
                    x = buf + hl + i - (tpp - 1)
                    for p in range(L):
                        acc = vm_dot(&bank[p * tpp], x, <int>tpp)
                        v = lround(acc)
                        out[i * L + p] = <int16_t>(32767 if v > 32767 else (-32768 if v < -32768 else v))
            else:
                w = &bank[0]
                for m in range(n_out):
                    x = buf + hl + m * L + L - taps
                    acc = vm_dot(w, x, <int>taps)
                    v = lround(acc)
                    out[m] = <int16_t>(32767 if v > 32767 else (-32768 if v < -32768 else v))
            for i in range(hl):
                hist[i] = buf[n_in + i]
        free(buf)
        return n_out

    def process(self, const int16_t[::1] pcm) -> cnp.ndarray:
        out = np.empty(self.output_length(pcm.shape[0]), dtype=np.int16)
        self.process_into(pcm, out)
        return out

    def reset(self):
        self._hist[:] = 0


# --------------------------------------------------------------------------------------------------
# Mixing kernel and audio level
# --------------------------------------------------------------------------------------------------

cdef extern from "mix_kernel.h" nogil:
    void vm_mix(const int16_t *frames, size_t n, size_t s, int32_t *acc, int16_t *total,
                int16_t *minus, size_t minus_stride)
    int vm_force_path(int path)
    const char *vm_mix_path_name()

MIX_PATHS = ("c", "sse2", "avx2")


def mix_kernel_path() -> str:
    """Which mix kernel this CPU runs: avx2, sse2 or c."""
    return vm_mix_path_name().decode()


def set_mix_kernel_path(str name) -> str:
    """Force a kernel path (tests compare them); a path the CPU lacks falls back. Returns the path."""
    return MIX_PATHS[vm_force_path(MIX_PATHS.index(name))]


cdef int32_t *_scratch = NULL
cdef Py_ssize_t _scratch_len = 0


cdef int32_t *_accumulator(Py_ssize_t s) except NULL:
    """One int32 scratch row, grown on demand (mixing runs on the engine's one thread)."""
    global _scratch, _scratch_len
    cdef int32_t *grown
    if s > _scratch_len:
        grown = <int32_t *>malloc(max(s, 1) * sizeof(int32_t))
        if grown == NULL:
            raise MemoryError()
        free(_scratch)
        _scratch = grown
        _scratch_len = s
    return _scratch


cdef int _mix(const int16_t[:, ::1] frames, int16_t[::1] total, int16_t *minus,
              Py_ssize_t minus_stride) except -1:
    """Shared body of mix_minus and mix_total (output sizes already checked)."""
    cdef Py_ssize_t n = frames.shape[0], s = frames.shape[1]
    cdef int32_t *acc
    if s == 0:
        return 0
    if n == 0:
        memset(&total[0], 0, s * sizeof(int16_t))
        return 0
    acc = _accumulator(s)
    with nogil:
        vm_mix(&frames[0, 0], n, s, acc, &total[0], minus, minus_stride)
    return 0


def mix_minus(const int16_t[:, ::1] frames, int16_t[::1] total, int16_t[:, ::1] minus) -> None:
    """Mix N frames: `total` = saturate(sum of all), `minus[i]` = saturate(sum - frames[i]).

    One int32 accumulation pass plus one narrowing pass per output: O(N * samples), not O(N^2).
    Each speaker hears everyone but themselves; listeners hear `total`. SIMD in mix_kernel.h.
    """
    cdef Py_ssize_t n = frames.shape[0], s = frames.shape[1]
    if total.shape[0] < s or minus.shape[0] < n or (n and minus.shape[1] < s):
        raise ValueError("output buffers too small")
    _mix(frames, total, &minus[0, 0] if n and s else NULL, minus.shape[1])


def mix_total(const int16_t[:, ::1] frames, int16_t[::1] total) -> None:
    """Only the saturated sum (when nobody in the mix needs a mix-minus)."""
    if total.shape[0] < frames.shape[1]:
        raise ValueError("output buffer too small")
    _mix(frames, total, NULL, 0)


def audio_level(const int16_t[::1] pcm) -> int:
    """RFC 6464 level of a frame: -dBov of its RMS, 0 (loudest) .. 127 (silence)."""
    cdef Py_ssize_t i, n = pcm.shape[0]
    cdef double energy = 0, rms, db
    if n == 0:
        return AUDIO_LEVEL_SILENT
    with nogil:
        for i in range(n):
            energy += <double>pcm[i] * pcm[i]
    rms = sqrt(energy / n)
    if rms < 1e-9:
        return AUDIO_LEVEL_SILENT
    db = -20.0 * log10(rms / 32768.0)
    if db < 0:
        return 0
    if db > AUDIO_LEVEL_SILENT:
        return AUDIO_LEVEL_SILENT
    return <int>lround(db)
