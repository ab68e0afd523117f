# cython: language_level=3
"""The SFU's per-packet path in C: renumber a packet for each subscriber slot, rebuild it, protect it
with the subscriber's SRTP key, and queue it on the subscriber's socket.

`StreamRewriter` keeps one slot's outgoing stream continuous whatever source fills it; `SlotSender`
is one slot of one subscriber (its rewriter, wire settings, SRTP calls, send queue and the counters
its RTCP sender reports need); `fan_out` sends one incoming packet through a list of them. Python
handles who is forwarded to whom; this module handles the packets.
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE

from mixer._srtp cimport SessionCalls
from mixer._wire cimport _put16, _put32

DEF RTP_HEADER = 12
DEF LEVEL_EXTENSION = 8          # RFC 8285 one-byte header (4) + one element with padding (4)
DEF MAX_OUT = 1500 - 144         # what SRTP can protect (see mixer._srtp)


cdef inline int _seq_diff(int a, int b) noexcept nogil:
    cdef int d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


# --------------------------------------------------------------------------------------------------
# SFU stream rewriting: one outgoing stream per subscriber slot, whatever source currently fills it
# --------------------------------------------------------------------------------------------------

# A source packet this far behind the newest one forwarded from it is too old to be worth sending.
DEF REWRITE_WINDOW = 1024


cdef class StreamRewriter:
    """Maps packets of whichever source fills one SFU slot onto one continuous outgoing stream.

    Within a source, numbering keeps the source's own gaps and order (a loss upstream is a loss the
    receiver should see and conceal; a reordered packet stays reordered). When the slot switches
    source, the next outgoing sequence number is the last one plus one, so the receiver counts no loss,
    and the timestamp advances by the wall-clock time since the slot's last packet (at least
    `min_step`, one frame), so the receiver's playout and jitter estimate stay right. Packets of the
    new source older than the switch point, and anything more than REWRITE_WINDOW packets behind its
    source's newest, are dropped: they would land in the past of the outgoing stream.
    """

    cdef readonly uint32_t ssrc
    cdef readonly int64_t source
    cdef readonly int last_seq
    cdef readonly uint32_t last_timestamp
    cdef readonly int64_t switches, forwarded, dropped
    cdef int _seq_offset
    cdef uint32_t _ts_offset
    cdef int _base_seq, _newest_seq
    cdef double _last_ms
    cdef bint _started
    cdef int _clock_khz
    cdef uint32_t _min_step

    def __init__(self, uint32_t ssrc, int first_seq, uint32_t first_timestamp, int clock_rate=48000,
                 uint32_t min_step=960):
        if not 0 <= first_seq <= 0xFFFF:
            raise ValueError("first_seq must be 0..65535")
        if clock_rate < 1000:
            raise ValueError("clock_rate must be at least 1000 Hz")
        self.ssrc = ssrc
        self.source = -1
        self.last_seq = (first_seq - 1) & 0xFFFF
        self.last_timestamp = first_timestamp - min_step
        self._clock_khz = clock_rate // 1000
        self._min_step = min_step
        self._started = False

    cpdef tuple rewrite(self, int64_t source, int seq, uint32_t timestamp, double now_ms):
        """(out_seq, out_timestamp, switched) for this packet, or None to drop it. `source` is any
        id unique per incoming stream (it changes when the sender's SSRC changes)."""
        cdef int d, out_seq
        cdef uint32_t out_ts, step
        cdef double elapsed
        if source != self.source or not self._started:
            return self._switch(source, seq, timestamp, now_ms)
        d = _seq_diff(seq, self._newest_seq)
        if d < -REWRITE_WINDOW or d > 0x7FFF - REWRITE_WINDOW:
            return self._switch(source, seq, timestamp, now_ms)  # the source restarted its numbering
        if _seq_diff(seq, self._base_seq) < 0:
            self.dropped += 1
            return None
        out_seq = (seq + self._seq_offset) & 0xFFFF
        out_ts = timestamp + self._ts_offset
        if d > 0:
            self._newest_seq = seq
            if _seq_diff(self._newest_seq, self._base_seq) > REWRITE_WINDOW:
                self._base_seq = (self._newest_seq - REWRITE_WINDOW) & 0xFFFF
            self.last_seq = out_seq
            self.last_timestamp = out_ts
            self._last_ms = now_ms
        elif d == 0:
            self.dropped += 1  # a duplicate of the newest: the receiver has it
            return None
        self.forwarded += 1
        return (out_seq, out_ts, False)

    cdef tuple _switch(self, int64_t source, int seq, uint32_t timestamp, double now_ms):
        cdef uint32_t step = self._min_step
        cdef double elapsed
        cdef int out_seq = (self.last_seq + 1) & 0xFFFF
        if self._started:
            elapsed = (now_ms - self._last_ms) * self._clock_khz
            if elapsed > step:
                step = <uint32_t>min(elapsed, 4.0e9)
            self.switches += 1
        cdef uint32_t out_ts = self.last_timestamp + step
        self._started = True
        self.source = source
        self._seq_offset = (out_seq - seq) & 0xFFFF
        self._ts_offset = out_ts - timestamp
        self._base_seq = seq
        self._newest_seq = seq
        self.last_seq = out_seq
        self.last_timestamp = out_ts
        self._last_ms = now_ms
        self.forwarded += 1
        return (out_seq, out_ts, True)

    cpdef void release(self):
        """The slot's source stops being forwarded here: whatever comes next, even the same source
        again, starts a new stretch right after the last packet sent (no gap for what was not
        forwarded in between)."""
        self.source = -1

    def original_seq(self, int out_seq):
        """The current source's sequence number behind outgoing `out_seq` (for NACK), or None when
        `out_seq` lies before the current source's first packet in this slot."""
        cdef int seq = (out_seq - self._seq_offset) & 0xFFFF
        if not self._started or _seq_diff(seq, self._base_seq) < 0 or _seq_diff(seq, self._newest_seq) > 0:
            return None
        return seq

    cpdef uint32_t map_timestamp(self, uint32_t timestamp):
        """The outgoing timestamp of the current source's `timestamp` (for a retransmission)."""
        return timestamp + self._ts_offset

    def stats(self) -> dict:
        return {"ssrc": self.ssrc, "switches": self.switches, "forwarded": self.forwarded,
                "dropped": self.dropped}


cdef class SlotSender:
    """One subscriber slot: the outgoing stream's numbering, wire form, SRTP and send queue.

    `queue` and `addresses` are the subscriber socket's own send lists (UdpEndpoint), so a packet
    queued here leaves with that socket's next sendmmsg; `schedule` is called when the queue goes
    from empty to non-empty. `packets`, `octets`, `last_rtp_timestamp` and `last_send_s` are what
    an RTCP sender report for this stream needs (the same names as mixer.rtp.stats.SendStatistics).
    """

    cdef public StreamRewriter rewriter
    cdef public int payload_type
    cdef public int level_ext_id       # 0: the subscriber did not negotiate RFC 6464
    cdef public bint enabled
    cdef object _srtp                  # SessionCalls, or any object with protect(bytes) -> bytes|int
    cdef public list queue
    cdef public list addresses
    cdef public bytes address
    cdef public object schedule
    cdef public int64_t packets, octets, protect_failures
    cdef public uint32_t last_rtp_timestamp
    cdef public double last_send_s
    cdef SessionCalls _direct
    cdef uint8_t _wire[1500]

    def __init__(self, StreamRewriter rewriter, int payload_type, int level_ext_id, srtp,
                 list queue, list addresses, bytes address, schedule):
        self.rewriter = rewriter
        self.payload_type = payload_type & 0x7F
        self.level_ext_id = level_ext_id if 1 <= level_ext_id <= 14 else 0
        self.enabled = True
        self.srtp = srtp
        self.queue = queue
        self.addresses = addresses
        self.address = address
        self.schedule = schedule

    @property
    def ssrc(self) -> int:
        return self.rewriter.ssrc

    @property
    def srtp(self):
        """The outbound SRTP calls (None: plain RTP). Settable: a WebRTC leg's keys arrive with
        its DTLS handshake, after the slot exists (or change with a new handshake)."""
        return self._srtp

    @srtp.setter
    def srtp(self, value):
        self._srtp = value
        self._direct = value if isinstance(value, SessionCalls) else None

    cdef int send(self, bytes payload, bint marker, int seq, uint32_t timestamp, int level,
                  bint voice, double wall_s) except -1:
        """Build, protect and queue one packet; 1 if queued, 0 if dropped (counted)."""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(payload)
        cdef Py_ssize_t offset = RTP_HEADER
        cdef uint8_t *p = self._wire
        cdef int length, status
        cdef bint with_level
        cdef object out
        if size + RTP_HEADER + LEVEL_EXTENSION > MAX_OUT:
            self.protect_failures += 1
            return 0
        with_level = self.level_ext_id != 0 and level >= 0
        p[0] = 0x90 if with_level else 0x80
        p[1] = (0x80 if marker else 0) | self.payload_type
        _put16(p + 2, seq)
        _put32(p + 4, timestamp)
        _put32(p + 8, self.rewriter.ssrc)
        if with_level:
            _put16(p + 12, 0xBEDE)
            _put16(p + 14, 1)
            p[16] = self.level_ext_id << 4        # length field 0: one byte of data
            p[17] = (0x80 if voice else 0) | (level & 0x7F)
            p[18] = 0
            p[19] = 0
            offset += LEVEL_EXTENSION
        memcpy(p + offset, PyBytes_AS_STRING(payload), size)
        length = <int>(offset + size)
        if self._direct is not None:
            status = self._direct._protect(self._direct._ctx, p, &length)
            if status != 0:
                self.protect_failures += 1
                return 0
            out = PyBytes_FromStringAndSize(<char *>p, length)
        elif self._srtp is not None:
            out = self._srtp.protect(PyBytes_FromStringAndSize(<char *>p, length))
            if out.__class__ is int:
                self.protect_failures += 1
                return 0
        else:
            out = PyBytes_FromStringAndSize(<char *>p, length)
        if not self.queue:
            self.schedule()
        self.queue.append(out)
        self.addresses.append(self.address)
        self.packets += 1
        self.octets += size
        self.last_rtp_timestamp = timestamp
        self.last_send_s = wall_s
        return 1


def fan_out(list senders, int64_t source, int seq, uint32_t timestamp, bint marker, bytes payload,
            double now_ms, double wall_s, int level=-1, bint voice=False) -> int:
    """Send one incoming packet through every SlotSender in `senders`; returns how many were
    queued. `level` is its RFC 6464 level (-1: none)."""
    cdef SlotSender slot
    cdef int sent = 0
    cdef tuple mapped
    for slot in senders:
        if not slot.enabled:
            continue
        mapped = slot.rewriter.rewrite(source, seq, timestamp, now_ms)
        if mapped is None:
            continue
        sent += slot.send(payload, marker or <bint>mapped[2], <int>mapped[0], <uint32_t>mapped[1],
                          level, voice, wall_s)
    return sent


def resend(SlotSender slot, int seq, uint32_t timestamp, bint marker, bytes payload,
           double wall_s) -> int:
    """Send a cached packet again with numbering already decided (an answer to a NACK)."""
    if not slot.enabled:
        return 0
    return slot.send(payload, marker, seq, timestamp, -1, False, wall_s)
