"""Sequence arithmetic and per-source receive statistics (RFC 3550 appendix A.1, A.3, A.8)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer._rtp_source import MAX_DROPOUT, MAX_MISORDER, MIN_SEQUENTIAL, RtpSource
from mixer._rtp import RTP_SEQ_MOD, seq_diff, seq_newer, timestamp_diff


def test_constants_are_the_rfc_values():
    assert (MAX_DROPOUT, MAX_MISORDER, MIN_SEQUENTIAL, RTP_SEQ_MOD) == (3000, 100, 2, 65536)


# --------------------------------------------------------------------------------------------------
# seq_diff / seq_newer / timestamp_diff
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a,b,d", [
    (0, 0, 0),
    (1, 0, 1),
    (0, 1, -1),
    (0, 65535, 1),          # wrap forward
    (65535, 0, -1),
    (5, 65530, 11),
    (65530, 5, -11),
    (32767, 0, 32767),
    (0, 32767, -32767),
    (32768, 0, -32768),     # exactly half the space: the signed 16-bit value is -32768 both ways
    (0, 32768, -32768),
])
def test_seq_diff_vectors(a, b, d):
    assert seq_diff(a, b) == d


def test_seq_newer_across_wrap():
    assert seq_newer(0, 65535)
    assert not seq_newer(65535, 0)
    assert seq_newer(100, 65500)
    assert not seq_newer(7, 7)
    # half-way is ambiguous (RFC 1982): neither is newer
    assert not seq_newer(32768, 0) and not seq_newer(0, 32768)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 65535), st.integers(-32767, 32767))
def test_seq_diff_inverts_modular_addition(a, d):
    b = (a + d) & 0xFFFF
    assert seq_diff(b, a) == d
    assert seq_diff(a, b) == -d
    assert seq_newer(b, a) == (d > 0)
    assert seq_newer(a, b) == (d < 0)


@pytest.mark.parametrize("a,b,d", [
    (0, 0, 0),
    (0, 0xFFFFFFFF, 1),
    (0xFFFFFFFF, 0, -1),
    (959, 0xFFFFFFFF - 960, 1920),
    (0x7FFFFFFF, 0, 0x7FFFFFFF),
    (0x80000000, 0, -0x80000000),
])
def test_timestamp_diff_vectors(a, b, d):
    assert timestamp_diff(a, b) == d


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(-(2**31) + 1, 2**31 - 1))
def test_timestamp_diff_inverts_modular_addition(a, d):
    assert timestamp_diff((a + d) % 2**32, a) == d


# --------------------------------------------------------------------------------------------------
# RtpSource: A.1 probation, extended sequence, resync
# --------------------------------------------------------------------------------------------------

def feed(src: RtpSource, seqs) -> list:
    return [src.update_seq(s & 0xFFFF) for s in seqs]


def test_probation_needs_min_sequential_packets():
    src = RtpSource(1000)
    assert src.probation == MIN_SEQUENTIAL
    assert src.update_seq(1000) is False
    assert src.probation == 1
    assert src.received == 0
    assert src.update_seq(1001) is True
    assert src.probation == 0
    # A.1: init_seq() on the packet that ends probation, which is then counted
    assert (src.base_seq, src.max_seq, src.received, src.cycles) == (1001, 1001, 1, 0)
    assert src.expected == 1
    assert src.cumulative_lost == 0


def test_probation_restarts_on_a_gap():
    src = RtpSource(1000)
    assert feed(src, [1000, 1005]) == [False, False]
    # the gap restarted probation with MIN_SEQUENTIAL - 1 packets still to go, from 1005
    assert src.probation == MIN_SEQUENTIAL - 1
    assert src.max_seq == 1005
    assert src.update_seq(1006) is True
    assert (src.base_seq, src.received) == (1006, 1)


def test_probation_longer_than_default():
    src = RtpSource(10, probation=3)
    assert feed(src, [10, 11, 12, 13]) == [False, False, True, True]
    assert (src.base_seq, src.received, src.expected) == (12, 2, 2)


def test_probation_across_wrap():
    src = RtpSource(65535)
    assert feed(src, [65535, 0, 1]) == [False, True, True]
    assert (src.base_seq, src.cycles, src.extended_max, src.expected) == (0, 0, 1, 2)


def test_probation_zero_is_valid_from_the_first_packet():
    src = RtpSource(500, probation=0)
    assert src.update_seq(500) is True
    assert (src.base_seq, src.max_seq, src.received, src.expected) == (500, 500, 1, 1)


def test_in_order_stream_crossing_the_wrap_twice():
    start = 65000
    src = RtpSource(start, probation=0)
    n = 2 * 65536 + 1000
    for i in range(n):
        assert src.update_seq((start + i) & 0xFFFF)
        seq = (start + i) & 0xFFFF
        if i in (535, 536, 536 + 65535, 536 + 65536, n - 1):  # around each wrap, and the end
            cycles = (start + i) // 65536
            assert src.cycles == cycles * 65536
            assert src.extended_max == cycles * 65536 + seq
    assert src.extended_max == start + n - 1
    assert src.expected == n
    assert src.received == n
    assert src.cumulative_lost == 0
    assert src.fraction_lost() == 0


def test_drop_every_tenth_packet():
    src = RtpSource(0, probation=0)
    for s in range(1001):
        if s % 10 != 9:  # 9, 19, ..., 999 never arrive
            src.update_seq(s)
    assert src.expected == 1001
    assert src.received == 901
    assert src.cumulative_lost == 100
    assert src.fraction_lost() == (100 << 8) // 1001 == 25  # ~ 10% of 256
    # A.3: each call starts a new interval
    for s in range(1001, 2001):
        src.update_seq(s)
    assert src.fraction_lost() == 0
    assert src.cumulative_lost == 100
    for s in range(2001, 3001, 2):  # every other packet lost
        src.update_seq(s)
    assert src.fraction_lost() == 128 - 1  # 499 lost of 999 expected in this interval
    assert src.fraction_lost() == 0  # nothing expected since the last call


def test_loss_across_wrap():
    src = RtpSource(65530, probation=0)
    for s in [65530, 65531, 65535, 1, 2]:  # 65532..65534 and 0 lost
        src.update_seq(s)
    assert src.extended_max == 65536 + 2
    assert src.expected == 9
    assert src.cumulative_lost == 4
    assert src.fraction_lost() == (4 << 8) // 9


def test_duplicates_make_loss_negative_and_fraction_zero():
    # A.3: duplicates are counted as received, so cumulative loss can go negative; the fraction
    # is clamped at zero.
    src = RtpSource(0, probation=0)
    for s in [0, 1, 2, 2, 2, 3]:
        assert src.update_seq(s)
    assert src.expected == 4
    assert src.received == 6
    assert src.cumulative_lost == -2
    assert src.fraction_lost() == 0


def test_reordering_within_max_misorder_counts_and_keeps_max():
    src = RtpSource(100, probation=0)
    feed(src, [100, 101, 103, 102, 104])
    assert src.max_seq == 104
    assert src.received == 5
    assert src.cumulative_lost == 0
    # 99 behind is still "reordered"; 101 behind (beyond MAX_MISORDER) is a big jump backwards
    assert src.update_seq(104 - 99) is True
    assert src.update_seq((104 - 101) & 0xFFFF) is False
    assert src.max_seq == 104


def test_reordered_packet_across_wrap_does_not_add_a_cycle():
    src = RtpSource(65533, probation=0)
    feed(src, [65533, 65535, 0, 1])
    assert src.cycles == 65536
    assert src.update_seq(65534) is True  # late, from the previous cycle
    assert src.cycles == 65536
    assert src.extended_max == 65537
    assert src.cumulative_lost == 0


def test_max_dropout_boundary():
    src = RtpSource(0, probation=0)
    src.update_seq(0)
    assert src.update_seq(MAX_DROPOUT - 1) is True  # a gap just inside the limit is loss
    assert src.cumulative_lost == MAX_DROPOUT - 2
    assert src.update_seq(2 * MAX_DROPOUT - 1) is False  # exactly MAX_DROPOUT ahead: a jump
    assert src.max_seq == MAX_DROPOUT - 1


def test_big_jump_then_two_sequential_packets_resyncs():
    src = RtpSource(1000, probation=0)
    feed(src, range(1000, 1011))
    assert src.received == 11
    src.fraction_lost()
    assert src.update_seq(9000) is False  # > MAX_DROPOUT: remembered as a possible restart
    assert (src.max_seq, src.received) == (1010, 11)
    assert src.update_seq(9001) is True  # the next sequential packet: the source restarted
    assert (src.base_seq, src.max_seq, src.cycles, src.received) == (9001, 9001, 0, 1)
    assert src.expected == 1
    assert src.cumulative_lost == 0
    assert src.fraction_lost() == 0
    assert feed(src, range(9002, 9010)) == [True] * 8
    assert src.received == 9


def test_big_jump_resync_needs_the_packet_right_after_it():
    src = RtpSource(1000, probation=0)
    feed(src, range(1000, 1005))
    assert src.update_seq(20000) is False
    assert src.update_seq(20005) is False  # not 20001: a new candidate, bad_seq is now 20006
    assert src.update_seq(20006) is True
    assert src.base_seq == 20006


def test_single_stray_packet_does_not_disturb_the_stream():
    src = RtpSource(1000, probation=0)
    feed(src, range(1000, 1005))
    assert src.update_seq(40000) is False
    assert src.update_seq(1005) is True
    assert (src.base_seq, src.max_seq, src.received) == (1000, 1005, 6)


def test_cumulative_lost_clamps_to_24_bits():
    src = RtpSource(0, probation=0)
    seq = 0
    src.update_seq(0)
    for _ in range(2900):  # each step loses MAX_DROPOUT - 2 packets but keeps the stream valid
        seq += MAX_DROPOUT - 1
        assert src.update_seq(seq & 0xFFFF)
    assert src.expected - src.received > 0x7FFFFF
    assert src.cumulative_lost == 0x7FFFFF


# --------------------------------------------------------------------------------------------------
# RtpSource: A.8 interarrival jitter
# --------------------------------------------------------------------------------------------------

def paced(src: RtpSource, n: int, offsets_ms, clock_rate=8000, ts0=0, arrival0=0):
    """Packets every 20 ms; arrival (in clock units) = nominal + offsets_ms[i % len] ms."""
    step = clock_rate * 20 // 1000
    for i in range(n):
        ts = (ts0 + i * step) % 2**32
        offset = offsets_ms[i % len(offsets_ms)] * clock_rate // 1000
        arrival = (arrival0 + i * step + offset) % 2**32
        src.update_jitter(ts, arrival)


def test_jitter_zero_for_perfect_pacing():
    src = RtpSource(0, clock_rate=8000, probation=0)
    paced(src, 500, [0], arrival0=123456)
    assert src.jitter == 0
    assert src.jitter_ms == 0.0


def test_jitter_zero_across_timestamp_and_clock_wrap():
    src = RtpSource(0, clock_rate=48000, probation=0)
    paced(src, 100, [0], clock_rate=48000, ts0=2**32 - 10 * 960, arrival0=2**32 - 3 * 960)
    assert src.jitter == 0


def test_jitter_first_step_is_one_sixteenth():
    src = RtpSource(0, clock_rate=8000, probation=0)
    src.update_jitter(0, 1000)
    assert src.jitter == 0  # one packet: no difference yet
    src.update_jitter(160, 1160 + 320)  # D = 320
    assert src.jitter == 320 // 16
    assert src.jitter_ms == pytest.approx(20 / 8)


@pytest.mark.parametrize("clock_rate", [8000, 48000])
@pytest.mark.parametrize("d_ms", [2, 5, 30])
def test_jitter_converges_for_alternating_transit(clock_rate, d_ms):
    # Transit alternates between T and T + d: every |D(i-1, i)| = d (in clock units), and
    # J(i) = J(i-1) + (d - J(i-1)) / 16 converges geometrically to d.
    src = RtpSource(0, clock_rate=clock_rate, probation=0)
    paced(src, 400, [0, d_ms], clock_rate=clock_rate)
    d_units = d_ms * clock_rate // 1000
    assert abs(src.jitter - d_units) <= 1  # reported as an integer (truncated)
    assert src.jitter_ms == pytest.approx(d_ms, rel=1e-6)


def test_jitter_for_plus_minus_d_is_two_d():
    # Transit alternating T + d and T - d differs by 2d between consecutive packets.
    src = RtpSource(0, clock_rate=8000, probation=0)
    paced(src, 400, [5, -5], arrival0=1000)
    assert src.jitter_ms == pytest.approx(10, rel=1e-6)


def test_jitter_decays_after_jitter_stops():
    src = RtpSource(0, clock_rate=8000, probation=0)
    paced(src, 200, [0, 10])
    high = src.jitter_ms
    assert high == pytest.approx(10, rel=1e-3)
    for i in range(200, 264):  # 64 packets with the same transit as the last one (T + 10 ms)
        src.update_jitter(i * 160, i * 160 + 10 * 8)
    # (15/16) ** 64 ~= 0.016
    assert src.jitter_ms == pytest.approx(high * (15 / 16) ** 64, rel=0.05)
