# cython: language_level=3
"""Per-SSRC receive state of RFC 3550 appendix A: sequence validity and the extended highest
sequence number (A.1), expected and lost counts (A.3), interarrival jitter (A.8).
"""
from libc.stdint cimport int32_t, int64_t, uint32_t

# RFC 3550 appendix A.1
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2

cdef int C_RTP_SEQ_MOD = 1 << 16


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
