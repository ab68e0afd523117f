# The RTP packet class and sequence arithmetic, `cimport`ed by the compiled modules that hold packets
# (the jitter buffer) so they read fields without Python attribute lookups.
from libc.stdint cimport int32_t, int64_t, uint32_t


cdef class RtpPacket:
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


cdef inline int c_seq_diff(int a, int b) noexcept nogil:
    """a - b as a signed 16-bit distance: positive when `a` is newer, across wrap-around."""
    cdef int d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d
