# cython: language_level=3
"""The adaptive jitter buffer: reorders one stream's RTP packets and decides, once per frame
tick, what to play (see `JitterBuffer`).
"""
from libc.stdint cimport int32_t, int64_t, uint32_t
from libc.stdlib cimport free, calloc
from libc.math cimport ceil

from mixer._rtp cimport RtpPacket, c_seq_diff

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
# catch_up() acts only on playout this far behind its target (ms): less is left to SHRINK_AFTER.
cdef double CATCH_UP_EXCESS_MS = 60.0
# With loss_headroom, the extra frame is kept this long after the last loss (ms).
cdef double LOSS_HEADROOM_MS = 10000.0


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
    cdef readonly int64_t played, stale
    cdef double _wait_sum
    # shrinking by time-scale modification: the caller removes the audio, the buffer only asks
    cdef readonly bint drop_to_shrink
    cdef readonly int64_t shrink_requests
    cdef int _pending_shrinks
    # one frame more while packets get lost, for in-band FEC
    cdef readonly bint loss_headroom
    cdef double _loss_until_ms

    def __cinit__(self, int clock_rate=48000, double frame_ms=20.0, double min_delay_ms=20.0,
                  double max_delay_ms=200.0, int capacity=128, bint drop_to_shrink=True,
                  bint loss_headroom=False):
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
        self.drop_to_shrink = drop_to_shrink
        self.loss_headroom = loss_headroom
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

    cdef void _on_loss(self, double now_ms):
        """A packet was lost (not late): with `loss_headroom`, hold one frame more for a while, so
        that the packet after the next loss is here in time to rebuild it (Opus in-band FEC)."""
        if self.loss_headroom:
            self._loss_until_ms = now_ms + LOSS_HEADROOM_MS
            self._target = self._compute_target()

    cpdef int target_frames(self):
        """Frames to hold before playing: one plus the delay-variation peak, within the limits."""
        return self._target

    cdef int _compute_target(self):
        cdef double target = self.frame_ms + max(0.0, self._peak - JITTER_SLACK_MS)
        if self._loss_until_ms > self._last_heard_ms:
            target += self.frame_ms
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
        d = c_seq_diff(packet.sequence_number, <int>(self._next & 0xFFFF))
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
        d = c_seq_diff(seq, self._prev_seq)
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
        cdef int skip
        if not self._has_base:
            return _IDLE_NONE
        if not self._playing:
            if self._count == 0:
                if self._advanced:
                    self._stalled += 1
                return _BUFFERING_NONE
            occupancy = self._highest - self._next + 1
            # slots already concealed while stalled and still missing will be passed over: they
            # hold no audio, so they do not count towards the delay being rebuilt
            skip = 0
            while skip < self._stalled and skip < occupancy \
                    and self._slots[<int>((self._next + skip) & self._mask)] is None:
                skip += 1
            occupancy -= skip
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
                self._on_loss(now_ms)
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
        self._on_loss(now_ms)
        return _LOSS_NONE

    cpdef int catch_up(self, double now_ms):
        """Skip what is too old to play, after the caller stalled (the process was paused or
        starved of CPU and did not pop for a while, while packets kept arriving): when the head of
        the queue has waited more than CATCH_UP_EXCESS_MS beyond the target delay, drop frames (and
        pass over missing ones) until the head has waited no longer than the target, keeping at
        least one packet. Returns how many packets were dropped (counted in `stale`).

        Only the caller knows it stalled, so it asks; a burst released by the network is left to
        the gradual shrink. With the packets' real (kernel) arrival times a stall does not look
        like network jitter either: the target stays where the network put it, and playout resumes
        there, not at the stall's delay."""
        cdef double target_ms = self._target * self.frame_ms
        cdef int idx
        cdef bint catching = False
        cdef object packet
        cdef int64_t before = self.stale
        if not self._has_base:
            return 0
        while self._count > 1:
            idx = <int>(self._next & self._mask)
            packet = self._slots[idx]
            if packet is None:
                if not catching:
                    break
                self._next += 1
                self.lost += 1
                continue
            if now_ms - self._arrival[idx] <= (target_ms + CATCH_UP_EXCESS_MS if not catching else target_ms):
                break
            catching = True
            self._slots[idx] = None
            self._count -= 1
            self._next += 1
            self._advanced = True
            self.stale += 1
        return <int>(self.stale - before)

    cdef void _maybe_shrink(self, double waited_ms):
        cdef int idx
        if waited_ms > (self.target_frames() + 1) * self.frame_ms:
            self._over += 1
        else:
            self._over = 0
        if self._over >= SHRINK_AFTER:
            self._over = 0
            if not self.drop_to_shrink:
                # the caller shortens the audio itself (time-scale modification, see
                # mixer.playout): it pops as many packets more than usual as the excess
                self.shrink_requests += 1
                self._pending_shrinks = max(1, min(self._count - 1, <int>(
                    (waited_ms - self.target_frames() * self.frame_ms) / self.frame_ms)))
                return
            idx = <int>(self._next & self._mask)
            if self._slots[idx] is not None and self._count > 1:
                self._slots[idx] = None
                self._count -= 1
                self._next += 1
                self.discarded += 1

    def take_shrink(self) -> int:
        """How many frames more than it needs the buffer decided it holds, once (only when built
        with drop_to_shrink=False; else 0): the caller should play that much audio faster."""
        cdef int frames = self._pending_shrinks
        self._pending_shrinks = 0
        return frames

    @property
    def stalled(self) -> bool:
        """Playout ran dry mid-stream and is waiting for packets (BUFFERING after an UNDERRUN):
        the caller may conceal these ticks (the buffer counts them as played)."""
        return self._stalled > 0 and self._advanced

    @property
    def waiting(self) -> int:
        """Packets held now (the next to play included)."""
        return self._count

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
            "shrink_requests": self.shrink_requests,
            "stale": self.stale,
            "resets": self.resets,
            "buffered_ms": self.buffered_ms,
            "target_delay_ms": self.target_delay_ms,
            "mean_wait_ms": self._wait_sum / self.played if self.played else 0.0,
            "jitter_ms": round(self._jitter, 3),
            "delay_peak_ms": round(self._peak, 3),
        }
