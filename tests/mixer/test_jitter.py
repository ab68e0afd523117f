"""The adaptive jitter buffer: unit tests of each pop()/put() outcome, and properties.

Packets carry their sender-side extended index in the payload, so a test can always tell exactly
which packet came out, whatever the 16-bit sequence number did.
"""

import struct

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from mixer._jitter import BUFFERING, FRAME, IDLE, LOSS, PUT_DUPLICATE, PUT_LATE, PUT_OK, PUT_RESET, UNDERRUN, JitterBuffer
from mixer._rtp import RtpPacket

FRAME_MS = 20
SAMPLES = 960  # 20 ms at 48 kHz


def packet(index: int, ts_base: int = 0, order: int = None) -> RtpPacket:
    """Packet number `index` of a sender: sequence index mod 2**16, timestamp 960 * index; the
    payload carries `order` (default: the index) to identify it when it comes out."""
    return RtpPacket(111, index & 0xFFFF, (ts_base + index * SAMPLES) % 2**32, 0x5EED,
                     struct.pack("!q", index if order is None else order))


def index_of(p: RtpPacket) -> int:
    return struct.unpack("!q", p.payload)[0]


def play(jb: JitterBuffer, now: float):
    status, p = jb.pop(now)
    return status, (index_of(p) if p is not None else None)


def steady(jb: JitterBuffer, first: int, count: int, t0: float = 0.0, ts_base: int = 0) -> list:
    """Each packet arrives on time and the 20 ms tick pops right after it."""
    out = []
    for k in range(count):
        now = t0 + k * FRAME_MS
        assert jb.put(packet(first + k, ts_base), now) in (PUT_OK, PUT_RESET)
        out.append(play(jb, now))
    return out


# --------------------------------------------------------------------------------------------------
# Construction
# --------------------------------------------------------------------------------------------------

def test_constructor_validates_and_rounds_capacity():
    assert JitterBuffer(capacity=100).capacity == 128
    assert JitterBuffer(capacity=128).capacity == 128
    assert JitterBuffer(capacity=1).capacity == 1
    for kwargs in ({"frame_ms": 0}, {"min_delay_ms": -1}, {"min_delay_ms": 80, "max_delay_ms": 40}):
        with pytest.raises(ValueError):
            JitterBuffer(**kwargs)


def test_idle_before_the_first_packet():
    jb = JitterBuffer()
    assert jb.pop(0) == (IDLE, None)
    assert jb.peek() is None
    stats = jb.stats()
    assert stats["received"] == 0 and stats["played"] == 0 and stats["buffered_ms"] == 0.0
    assert stats["target_delay_ms"] == 20.0


def test_stats_is_a_plain_dict_with_every_counter():
    stats = JitterBuffer().stats()
    assert type(stats) is dict
    assert set(stats) >= {"received", "played", "lost", "late", "duplicates", "reordered",
                          "underruns", "discarded", "resets", "buffered_ms", "target_delay_ms",
                          "mean_wait_ms", "jitter_ms", "delay_peak_ms"}


# --------------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------------

def test_in_order_stream_plays_every_packet():
    jb = JitterBuffer()
    out = steady(jb, 100, 200)
    assert out == [(FRAME, 100 + k) for k in range(200)]
    s = jb.stats()
    assert (s["received"], s["played"], s["lost"], s["late"], s["underruns"]) == (200, 200, 0, 0, 0)
    assert s["jitter_ms"] == 0.0 and s["delay_peak_ms"] == 0.0
    assert s["mean_wait_ms"] == 0.0


def test_in_order_stream_across_sequence_wrap():
    jb = JitterBuffer()
    out = steady(jb, 65536 - 50, 100)
    assert out == [(FRAME, 65536 - 50 + k) for k in range(100)]
    assert jb.stats()["lost"] == 0


def test_reordered_packets_play_in_sequence_order():
    jb = JitterBuffer(min_delay_ms=60)  # hold three frames
    arrivals = [0, 2, 1, 3, 5, 4, 6, 7, 9, 8]
    for k, i in enumerate(arrivals):
        assert jb.put(packet(i), k * FRAME_MS) == PUT_OK
    played = []
    for k in range(len(arrivals) + 5):
        status, i = play(jb, 200 + k * FRAME_MS)
        if status == FRAME:
            played.append(i)
    assert played == list(range(10))
    assert jb.stats()["reordered"] == 3


def test_packet_earlier_than_the_first_one_is_kept_while_buffering():
    jb = JitterBuffer(min_delay_ms=60)
    assert jb.put(packet(11), 0) == PUT_OK
    assert jb.put(packet(10), 5) == PUT_OK  # arrived after 11 but before playback started
    assert jb.put(packet(12), 10) == PUT_OK
    out = [play(jb, 60 + k * FRAME_MS) for k in range(3)]
    assert out == [(FRAME, 10), (FRAME, 11), (FRAME, 12)]


def test_duplicate():
    jb = JitterBuffer(min_delay_ms=60)
    assert jb.put(packet(5), 0) == PUT_OK
    assert jb.put(packet(5), 1) == PUT_DUPLICATE
    assert jb.put(packet(6), 20) == PUT_OK
    assert jb.put(packet(5), 21) == PUT_DUPLICATE
    s = jb.stats()
    assert (s["received"], s["duplicates"]) == (2, 2)


def test_loss_then_the_lost_packet_arrives_late():
    jb = JitterBuffer()
    assert steady(jb, 0, 5) == [(FRAME, k) for k in range(5)]
    # 5 is missing, 6 is here: the slot for 5 is a LOSS (conceal), then 6 plays
    assert jb.put(packet(6), 100) == PUT_OK
    assert play(jb, 100) == (LOSS, None)
    assert jb.put(packet(5), 110) == PUT_LATE
    assert play(jb, 120) == (FRAME, 6)
    # a packet that already played is late too
    assert jb.put(packet(3), 125) == PUT_LATE
    s = jb.stats()
    assert (s["played"], s["lost"], s["late"], s["received"]) == (6, 1, 2, 6)


def test_fec_path_peek_after_loss_returns_the_next_packet():
    jb = JitterBuffer()
    steady(jb, 0, 3)
    assert jb.peek() is None  # nothing buffered
    assert jb.put(packet(4), 60) == PUT_OK
    assert play(jb, 60) == (LOSS, None)  # 3 lost
    nxt = jb.peek()
    assert nxt is not None and index_of(nxt) == 4  # its in-band FEC recovers 3
    status, p = jb.pop(80)
    assert status == FRAME and p is nxt
    # two lost in a row: the first LOSS has nothing to peek at, the second has
    assert jb.put(packet(7), 100) == PUT_OK
    assert play(jb, 100) == (LOSS, None)
    assert jb.peek() is None
    assert play(jb, 120) == (LOSS, None)
    assert index_of(jb.peek()) == 7
    assert play(jb, 140) == (FRAME, 7)


def test_underrun_then_rebuffer():
    jb = JitterBuffer()
    steady(jb, 0, 10)
    assert play(jb, 200) == (UNDERRUN, None)
    assert jb.stats()["underruns"] == 1
    # dry: keep buffering (not another underrun) until packets come back
    assert [play(jb, 220 + k * FRAME_MS)[0] for k in range(5)] == [BUFFERING] * 5
    assert jb.stats()["underruns"] == 1
    # the stream resumes 130 ms later than it should have: the buffer rebuilds a deeper target
    statuses = []
    for k in range(10, 20):
        jb.put(packet(k), k * FRAME_MS + 130)
        if k == 10:
            target = jb.target_frames()
            assert target > 1
        statuses.append(play(jb, k * FRAME_MS + 140))
    frames = [i for status, i in statuses if status == FRAME]
    assert frames == list(range(10, 10 + len(frames)))
    waits = [status for status, _ in statuses[: statuses.index((FRAME, 10))]]
    assert set(waits) <= {BUFFERING} and len(waits) < target
    s = jb.stats()
    assert (s["lost"], s["underruns"], s["late"]) == (0, 1, 0)


def test_jump_beyond_capacity_resets():
    jb = JitterBuffer(capacity=64)
    steady(jb, 0, 5)
    jb.put(packet(5), 100)
    jb.put(packet(6), 100)
    # just inside the window: not a reset, the gap is loss
    assert jb.put(packet(5 + 63), 101) == PUT_OK
    # beyond the window: one packet alone is not believed (RFC 3550 A.1: it may be a stray)...
    assert jb.put(packet(5 + 64 + 1000), 301) == PUT_LATE
    assert jb.stats()["resets"] == 0
    # ...the next one, 20 ms on and with the old stream quiet for max_delay_ms (200), confirms
    # the jump: the buffered packets are dropped, playback restarts
    assert jb.put(packet(5 + 64 + 1001), 321) == PUT_RESET
    assert jb.stats()["resets"] == 1
    assert jb.stats()["buffered_ms"] == 20.0
    out = [play(jb, 321 + k * FRAME_MS) for k in range(3)]
    assert out[0] == (FRAME, 1070)
    assert jb.stats()["received"] == 5 + 3 + 1


def test_reset_keeps_working_across_the_wrap():
    jb = JitterBuffer()
    steady(jb, 65500, 60)  # crosses 65535 -> 0
    assert jb.put(packet(65560 + 20000), 1400) == PUT_LATE   # a jump is believed on the next one
    assert jb.put(packet(65560 + 20001), 1420) == PUT_RESET
    assert play(jb, 1420) == (FRAME, 65560 + 20001)
    assert steady(jb, 65560 + 20002, 5, t0=1440) == [(FRAME, 65560 + 20002 + k) for k in range(5)]


def bunched(jb: JitterBuffer, first: int, count: int, group: int) -> None:
    """Packets are held and released in groups: each arrives together with the last of its group
    (which is on time). Puts and 20 ms pops interleave in time order."""
    events = []
    for s in range(first, first + count):
        events.append((FRAME_MS * (s - s % group + group - 1), 0, s))
        events.append((FRAME_MS * s + 10, 1, None))
    for t, kind, s in sorted(events):
        if kind == 0:
            jb.put(packet(s), t)
        else:
            jb.pop(t)


def test_target_delay_grows_with_jitter_and_decays_back():
    jb = JitterBuffer()
    bunched(jb, 0, 200, 1)
    assert jb.target_delay_ms == 20.0
    bunched(jb, 200, 99, 3)  # up to 40 ms of delay variation
    assert jb.target_delay_ms == 60.0
    assert jb.stats()["delay_peak_ms"] == pytest.approx(40, abs=1)
    bunched(jb, 299, 100, 5)  # up to 80 ms
    assert jb.target_delay_ms == 100.0
    # steady again: the peak halves every ~100 packets and the target follows it down
    targets = []
    for start in range(399, 399 + 4000, 100):
        bunched(jb, start, 100, 1)
        targets.append(jb.target_delay_ms)
    assert targets == sorted(targets, reverse=True)
    assert targets[0] < 100.0
    assert targets[-1] == 20.0


def test_target_delay_is_clamped():
    jb = JitterBuffer(min_delay_ms=40, max_delay_ms=120)
    bunched(jb, 0, 50, 1)
    assert jb.target_delay_ms == 40.0
    bunched(jb, 50, 200, 20)  # 380 ms of variation
    assert jb.target_delay_ms == 120.0


def test_excess_delay_shrinks_by_discarding_frames():
    jb = JitterBuffer()
    # The first packet was held 220 ms and released with the next 11: a backlog of 12 frames,
    # while the delay variation of the stream (and so the target) is nil.
    for s in range(12):
        jb.put(packet(s), 11 * FRAME_MS)
    assert jb.target_frames() == 1
    played = []
    for k in range(11, 500):  # one frame dropped per 25 frames that waited too long
        now = k * FRAME_MS
        if k >= 12:
            jb.put(packet(k), now)
        status, i = play(jb, now)
        if status == FRAME:
            played.append(i)
    s = jb.stats()
    assert s["discarded"] >= 1
    assert s["buffered_ms"] < 12 * FRAME_MS
    assert played == sorted(played) and len(set(played)) == len(played)
    assert len(played) + s["discarded"] + s["buffered_ms"] / FRAME_MS == 500
    assert s["buffered_ms"] <= (jb.target_frames() + 1) * FRAME_MS
    assert s["lost"] == 0 and s["received"] == 500


# --------------------------------------------------------------------------------------------------
# Restarts, stragglers and regressions for bugs found in review
# --------------------------------------------------------------------------------------------------

def test_late_packet_after_underrun_is_late_not_played_out_of_order():
    """Regression (bug in the core as first reviewed): after an UNDERRUN the buffer is "not playing"
    again, and put() took the "still filling" branch for any packet older than the next one to
    play, rewinding `_next` to it: a lost-then-late packet played after newer ones, and every slot
    in between (already played) was reported as LOSS."""
    jb = JitterBuffer(min_delay_ms=40)  # one frame in reserve, so a missing packet is a LOSS
    for k in range(10):
        if k != 5:
            jb.put(packet(k), k * FRAME_MS)
        jb.pop(k * FRAME_MS)
    assert [play(jb, 200), play(jb, 220)] == [(FRAME, 9), (UNDERRUN, None)]
    assert jb.stats()["lost"] == 1 and jb.stats()["played"] == 9
    assert jb.put(packet(12), 240) == PUT_OK
    assert jb.put(packet(5), 241) == PUT_LATE  # declared lost long ago, older than what played
    frames = [i for status, i in (play(jb, 260 + 20 * k) for k in range(12)) if status == FRAME]
    assert frames == [12]
    assert jb.stats()["lost"] == 1 + 2  # 10 and 11


def test_duplicate_of_played_packet_after_underrun_is_not_replayed():
    """Regression (same root cause): a duplicate of a packet that already played, arriving while
    the buffer is dry after an UNDERRUN, was accepted (PUT_OK) and played a second time."""
    jb = JitterBuffer()
    steady(jb, 0, 5)
    assert play(jb, 100) == (UNDERRUN, None)
    assert jb.put(packet(3), 120) == PUT_LATE
    frames = [i for status, i in (play(jb, 120 + 20 * k) for k in range(10)) if status == FRAME]
    assert frames == []
    assert jb.stats()["played"] == 5


def test_backward_sequence_jump_resets():
    """Regression: put() used to reset only on a *forward* jump beyond the window. A sender restart
    whose new sequence number lands behind the old one (half of all random restarts: RFC 3550 says
    initial values are random) made every packet PUT_LATE until the new numbers caught up with the
    old ones, up to 32767 packets (~11 minutes of silence)."""
    jb = JitterBuffer()
    steady(jb, 30000, 50)
    results = [jb.put(packet(1000 + k, ts_base=7 * 2**20), 1000 + 20 * k) for k in range(50)]
    assert PUT_RESET in results, f"all {results.count(PUT_LATE)} restarted packets were late"
    # RFC 3550 A.1 style (two sequential packets), once the old stream (last packet at 980 ms)
    # has been quiet for max_delay_ms (200): at 1200 ms, the 11th packet of the new one
    assert results.index(PUT_RESET) <= 11
    first = 1000 + results.index(PUT_RESET)
    frames = [i for status, i in (play(jb, 2000 + 20 * k) for k in range(60)) if status == FRAME]
    assert frames[0] == first and frames == sorted(set(frames))
    assert len(frames) + jb.stats()["discarded"] == 1050 - first


def test_reset_restarts_the_delay_estimate():
    """Regression: PUT_RESET cleared the slots but kept the timing reference (`_ref_ts`, min
    transit, peak) of the old stream. When the restarted sender's timestamps were behind the old
    reference (here by 100000 units ~ 2 s at 48 kHz) the measured "transit" jumped by ~2 s, the
    target delay was pinned at max_delay_ms, and the minimum transit only leaks up 0.02 ms per
    packet, so a perfectly steady stream was held at 200 ms for ~35 minutes."""
    jb = JitterBuffer()
    steady(jb, 1000, 50)
    assert jb.target_delay_ms == 20.0
    # the new stream's timestamps are 100000 behind where the old stream's would be now
    ts_base = -(5000 - 1000) * SAMPLES - 100000
    assert jb.put(packet(5050, ts_base), 1200) == PUT_LATE
    assert jb.put(packet(5051, ts_base), 1220) == PUT_RESET
    steady(jb, 5052, 500, t0=1240, ts_base=ts_base)  # 10 s of perfectly paced packets
    assert jb.target_delay_ms == 20.0
    assert jb.stats()["buffered_ms"] <= 40.0


def test_single_stray_packet_far_behind_is_late():
    jb = JitterBuffer()
    steady(jb, 1000, 50)
    assert jb.put(packet(5, ts_base=777), 2000) == PUT_LATE
    assert jb.stats()["resets"] == 0


def test_single_stray_packet_with_sequence_zero_is_late():
    """Regression (an intermediate version of the core): `_bad_seq` was not initialised (C zero), so
    before any restart a *single* far-behind packet whose sequence number happened to be 0
    restarted the buffer, where any other number is PUT_LATE."""
    jb = JitterBuffer()
    steady(jb, 1000, 50)
    assert jb.put(packet(0, ts_base=777), 2000) == PUT_LATE
    assert jb.stats()["resets"] == 0


def test_stragglers_after_a_forward_restart_do_not_restart_playout():
    """Regression (an intermediate version of the core): after a forward restart, two sequential
    stragglers of the *old* stream arriving after a 60 ms gap in the new stream (jitter) passed the
    "quiet" test and restarted the buffer backwards: old audio played after new audio, then the
    new stream restarted it again."""
    jb = JitterBuffer()
    events = [(20 * k, 0, 100 + k) for k in range(50)]          # old stream 100..149, to 980 ms
    events += [(1200 + 20 * j, 0, 20000 + j) for j in range(4)]  # restarted at 20000 after 220 ms
    #                                           of quiet (confirmed by 20001: PUT_RESET there)
    events += [(1290, 0, 150), (1300, 0, 151)]                   # old 150, 151 delayed ~290 ms
    events += [(1350, 0, 20004), (1370, 0, 20005)]               # the new stream, after a gap
    events += [(t + 10, 1, None) for t in range(0, 1600, 20)]
    played = []
    for t, kind, index in sorted(events):
        if kind == 0:
            jb.put(packet(index), t)
        else:
            status, i = play(jb, t)
            if status == FRAME:
                played.append(i)
    assert played == list(range(100, 150)) + list(range(20001, 20006))
    assert jb.stats()["resets"] == 1


def test_stragglers_after_a_backward_restart_do_not_restart_playout():
    """Regression: the straggler guard (`_near_previous_stream`) only covers the
    backward-jump branch of put(). After a *backward* restart the old stream's stragglers are
    *ahead* of the new stream, so the forward-jump branch restarts to them: old audio plays after
    new audio, and then the new stream's packets (now "near the previous stream") are all late for
    up to `capacity` packets (2.56 s by default)."""
    jb = JitterBuffer()
    events = [(20 * k, 0, 30000 + k) for k in range(50)]         # old stream, on time to 980
    events += [(1200 + 20 * j, 0, 1000 + j) for j in range(20)]   # restarted lower, 220 ms later
    events += [(1260, 0, 30050), (1270, 0, 30051)]                # old, sent at 1000 and 1020
    events += [(t + 10, 1, None) for t in range(0, 1800, 20)]
    played = []
    for t, kind, index in sorted(events):
        if kind == 0:
            jb.put(packet(index), t)
        else:
            status, i = play(jb, t)
            if status == FRAME:
                played.append(i)
    # 1000 is PUT_LATE (the first of the two sequential packets), playout restarts at 1001
    assert played == list(range(30000, 30050)) + list(range(1001, 1020))
    assert jb.stats()["resets"] == 1


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------

@st.composite
def shuffled_window(draw):
    capacity = draw(st.sampled_from([8, 16, 64, 128]))
    n = draw(st.integers(1, capacity))
    start = draw(st.one_of(st.integers(0, 2**16 - 1), st.integers(2**16 - capacity, 2**16 - 1)))
    indices = list(range(start, start + n))
    extra = draw(st.lists(st.sampled_from(indices), max_size=n))
    order = draw(st.permutations(indices + extra))
    tick = draw(st.sampled_from([0, FRAME_MS]))
    return capacity, indices, order, len(extra), tick


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shuffled_window())
def test_any_permutation_with_duplicates_plays_once_in_order(case):
    capacity, indices, order, n_extra, tick = case
    jb = JitterBuffer(capacity=capacity)
    results = [jb.put(packet(i), 0.0) for i in order]
    assert results.count(PUT_OK) == len(indices)
    assert results.count(PUT_DUPLICATE) == n_extra
    played = []
    for k in range(4 * capacity + 20):
        status, i = play(jb, k * tick)
        if status == UNDERRUN:
            break
        assert status in (FRAME, BUFFERING)  # all packets are here: never a LOSS
        if status == FRAME:
            played.append(i)
    else:
        pytest.fail("never ran dry")
    s = jb.stats()
    assert s["received"] == len(indices)
    assert s["duplicates"] == n_extra
    assert s["late"] == 0 and s["lost"] == 0 and s["resets"] == 0
    assert s["played"] == len(played)
    # every packet played exactly once, in order, except those dropped to shrink the delay
    # (which only happens when frames have waited too long: never when popping at arrival time)
    assert played == sorted(set(played))
    assert set(played) <= set(indices)
    assert len(played) + s["discarded"] == len(indices)
    if tick == 0:
        assert played == indices


@st.composite
def network(draw):
    """A sender emitting every 20 ms through a network with delay, loss and duplication, with
    (optionally) one jump of its sequence numbers, forwards or backwards (a restart); the receiver
    pops on its own 20 ms clock."""
    n = draw(st.integers(1, 150))
    start = draw(st.integers(0, 2**16 - 1))
    if draw(st.booleans()):
        delays = draw(st.lists(st.integers(0, 250), min_size=n, max_size=n))
    else:
        # a backlog: the first packets are held and released together, then the path is quiet,
        # so frames wait longer than needed and the buffer has to shrink
        backlog = draw(st.integers(100, 400))
        jitter = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
        delays = [max(backlog - 20 * k, j) for k, j in enumerate(jitter)]
    dropped = draw(st.sets(st.integers(0, n - 1), max_size=n // 3))
    duplicated = draw(st.dictionaries(st.integers(0, n - 1), st.integers(0, 300), max_size=n // 4))
    jump_at = draw(st.one_of(st.none(), st.integers(0, n - 1)))
    jump_by = draw(st.one_of(st.integers(200, 30000), st.integers(-30000, -200)))
    phase = draw(st.floats(0, 19.9))
    capacity = draw(st.sampled_from([16, 64, 128]))
    return n, start, delays, dropped, duplicated, jump_at, jump_by, phase, capacity


def simulate(case, steer_clear_of_stragglers: bool):
    """Run the network case through a JitterBuffer and check the invariants as it goes.

    Packets are identified by their emission order k (in the payload); the sequence number is
    start + k, plus jump_by from k = jump_at on. Whatever the sequence numbers do, the sender's
    audio must come out in emission order, each packet at most once.

    steer_clear_of_stragglers: once a packet from after the sender's jump has been put, the harness
    itself drops the stragglers from before it (kept to narrow a failure down when debugging).
    """
    n, start, delays, dropped, duplicated, jump_at, jump_by, phase, capacity = case
    jb = JitterBuffer(capacity=capacity)
    if jump_at is not None:
        # Around a jump, no field of a packet says which stream is newer: the buffer tells them
        # apart by arrival, so it is specified for delays (duplicates included) within the most
        # it is built to absorb, `max_delay_ms`. Beyond that it must still never crash or
        # deliver a packet twice (the fuzz tests), but may let late stragglers of one stream in.
        delays = [min(d, jb.max_delay_ms) for d in delays]
        duplicated = {k: min(extra, jb.max_delay_ms - delays[k]) for k, extra in duplicated.items()}
    events = []
    for k in range(n):
        if k in dropped:
            continue
        events.append((20.0 * k + delays[k], 0, k))
        if k in duplicated:
            events.append((20.0 * k + delays[k] + duplicated[k], 0, k))
    horizon = 20.0 * n + 1000 + 20 * (capacity + 20)
    t = phase
    while t < horizon:
        events.append((t, 1, None))
        t += FRAME_MS
    events.sort()

    def sequence_index(k):
        return start + k + (jump_by if jump_at is not None and k >= jump_at else 0)

    held = set()           # accepted, not yet played, discarded or dropped by a reset
    gone = set()           # played, discarded or dropped: must never come out again
    counts = {PUT_OK: 0, PUT_DUPLICATE: 0, PUT_LATE: 0, PUT_RESET: 0}
    statuses = {FRAME: 0, LOSS: 0, UNDERRUN: 0}
    reset_dropped = 0
    skipped = 0
    lost_while_stalled = 0  # missing at the head when playout resumed after running dry
    stalled = False         # ran dry since the last frame played
    unseen_skips = False    # a reset came while stalled: skips on resuming could not be observed
    last_played = None
    next_slot = None       # the harness's model of the next k to play once playback started
    jumped = False         # a packet from after the jump has been put
    for now, kind, k in events:
        if kind == 0:
            if steer_clear_of_stragglers and jumped and k < jump_at:
                skipped += 1
                continue
            jumped = jumped or (jump_at is not None and k >= jump_at)
            result = jb.put(packet(sequence_index(k), order=k), now)
            counts[result] += 1
            if result == PUT_RESET:
                unseen_skips = unseen_skips or stalled
                reset_dropped += len(held)
                gone |= held
                held = set()
                next_slot = None
            if result in (PUT_OK, PUT_RESET):
                assert k not in held
                held.add(k)
        else:
            discarded_before = jb.discarded
            status, p = jb.pop(now)
            if status in statuses:
                statuses[status] += 1
            if status == FRAME:
                i = index_of(p)
                assert i in held, f"packet {i} delivered but not held (already out or never in)"
                assert last_played is None or i > last_played, f"{i} played after {last_played}"
                assert i not in gone
                if next_slot is not None and i > next_slot:
                    # skipped on resuming after an underrun: only packets that are not here
                    assert not any(j in held for j in range(next_slot, i))
                    lost_while_stalled += i - next_slot
                held.discard(i)
                gone.add(i)
                last_played = i
                next_slot = i + 1
                stalled = False
                if jb.discarded != discarded_before:
                    # a frame dropped to shrink the delay is the one right after the played one
                    assert i + 1 in held
                    held.discard(i + 1)
                    gone.add(i + 1)
                    next_slot = i + 2
            elif status == LOSS:
                assert next_slot is None or next_slot not in held
                next_slot = (next_slot + 1) if next_slot is not None else None
            elif status == UNDERRUN:
                assert not held
                stalled = True
            assert (jb.stats()["buffered_ms"] == 0) == (not held)
    s = jb.stats()
    assert not held, "ran dry at the end but packets are still held"
    assert s["received"] == counts[PUT_OK] + counts[PUT_RESET]
    assert s["duplicates"] == counts[PUT_DUPLICATE]
    assert s["late"] == counts[PUT_LATE]
    assert s["resets"] == counts[PUT_RESET]
    assert s["played"] == statuses[FRAME]
    if unseen_skips:
        # packets skipped on resuming are only visible to the harness at the next frame played;
        # a reset before it hides them, so only a lower bound can be checked
        assert s["lost"] >= statuses[LOSS] + lost_while_stalled
    else:
        assert s["lost"] == statuses[LOSS] + lost_while_stalled
    assert s["underruns"] == statuses[UNDERRUN]
    # each accepted packet was played, discarded or dropped by a reset; nothing is left
    assert s["received"] == s["played"] + s["discarded"] + reset_dropped
    return s, skipped


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: examples are small
@example((6, 100, [0, 0, 150, 150, 0, 0], set(), {}, 4, 5000, 10.0, 16))  # stragglers 2, 3
@example((6, 30000, [0, 0, 150, 150, 0, 0], set(), {}, 4, -29000, 10.0, 16))  # the same, backwards
@example((2, 0, [41, 0], set(), {}, None, 200, 0.0, 16))  # 1 plays, underrun, then 0 arrives late
@example((43, 8731, [226, 51, 162, 24, 92, 102, 174, 207, 164, 16, 7, 120, 150, 200, 175, 159, 25, 0,
                     214, 178, 8, 43, 0, 187, 65, 250, 200, 250, 15, 27, 250, 177, 223, 84, 163, 74,
                     120, 215, 150, 176, 154, 196, 117], {4, 36, 42, 11, 17, 19, 23, 27}, {38: 166}, 19,
          371, 8.556738690143055, 64))  # a skip on resuming, then a reset before any frame plays
@example((64, 11168, [47, 166, 43, 72, 77, 72, 209, 75, 69, 171, 116, 22, 141, 220, 192, 72, 217, 237,
                      230, 170, 20, 11, 97, 250, 176, 62, 74, 196, 178, 214, 176, 48, 146, 72, 53, 77,
                      107, 148, 231, 163, 108, 83, 215, 111, 50, 42, 147, 147, 207, 236, 94, 132, 136, 53,
                      205, 20, 80, 181, 25, 73, 18, 140, 163, 89], set(), {}, None, -1801, 0.99999, 64))
@example((109, 16, [250, 27, 136, 67, 11, 123, 240, 200, 90, 136, 91, 146, 90, 142, 228, 163, 250, 93,
                    186, 110, 227, 43, 103, 222, 1, 54, 79, 187, 150, 139, 235, 49, 144, 0, 97, 1, 48,
                    38, 158, 73, 200, 250, 184, 207, 217, 50, 82, 82, 192, 19, 206, 116, 223, 9, 67,
                    104, 118, 73, 168, 92, 118, 193, 244, 107, 24, 118, 137, 193, 1, 188, 237, 2, 1,
                    225, 161, 146, 113, 20, 27, 36, 7, 181, 173, 7, 108, 0, 105, 73, 151, 29, 195, 220,
                    130, 153, 235, 219, 187, 200, 214, 229, 172, 48, 28, 224, 114, 180, 57, 192, 247],
          set(), {48: 61, 16: 168}, 1, -407, 1.1371433198356238, 16))  # the only packet before a
# backward jump arrives after the new stream began: it looks 406 ahead, and must not restart playout
@example((107, 5065, [78, 77, 146, 15, 140, 143, 231, 87, 74, 243, 232, 220, 56, 205, 74, 207, 25, 202, 208,
                      190, 212, 79, 104, 22, 117, 155, 130, 19, 107, 96, 215, 138, 74, 38, 134, 65, 18,
                      146, 195, 209, 116, 24, 250, 102, 0, 153, 103, 80, 210, 207, 149, 167, 1, 249, 179,
                      178, 186, 200, 6, 118, 107, 183, 119, 203, 34, 227, 237, 243, 70, 18, 80, 241, 234,
                      91, 31, 125, 45, 194, 210, 119, 81, 107, 224, 218, 73, 0, 137, 206, 214, 1, 248, 10,
                      184, 206, 149, 208, 103, 250, 211, 0, 25, 86, 19, 92, 114, 187, 209],
          {67, 100, 101, 70, 39, 71, 77, 14, 15, 13, 85, 22, 87, 57, 62, 95}, {103: 203}, 3, 5174,
          19.1915192388718, 64))  # the first packet is the new stream's; the old one's three come
# later, in sequence, 110 ms on: one packet is not yet a stream that can be called quiet
@example((12, 105, [122, 163, 211, 93, 26, 9, 195, 140, 193, 146, 129, 52], {10}, {0: 170, 8: 200, 1: 200},
          3, -29993, 5.0806374364276925, 64))  # the new stream's packets arrive late but keep
# arriving: it is not quiet, and duplicates of the old stream must not take over
@example((133, 332, [170, 201, 207, 228, 250, 236, 187, 250, 69, 27, 150, 249, 233, 189, 207, 83, 224, 146,
                     131, 139, 111, 47, 60, 192, 39, 88, 72, 243, 215, 49, 155, 184, 135, 187, 109, 231,
                     161, 181, 138, 219, 186, 79, 141, 250, 207, 87, 228, 42, 26, 115, 81, 134, 58, 54,
                     121, 80, 242, 175, 137, 26, 163, 55, 48, 28, 242, 245, 75, 115, 51, 70, 242, 234,
                     111, 51, 70, 118, 158, 16, 250, 138, 110, 148, 176, 134, 248, 231, 244, 125, 202, 6,
                     184, 5, 30, 23, 98, 185, 128, 1, 96, 27, 24, 219, 235, 181, 112, 173, 75, 162, 238,
                     163, 226, 192, 6, 242, 198, 124, 117, 3, 72, 0, 135, 148, 125, 108, 1, 78, 72, 89,
                     51, 41, 1, 35, 130], {46},
          {117: 227, 20: 83, 10: 205, 100: 297, 7: 172, 96: 290, 56: 243, 5: 258, 14: 35, 57: 194,
           13: 300, 132: 282, 11: 300, 108: 33, 12: 255, 104: 225, 45: 206}, 48, 567,
          15.698701673740889, 16))  # 250 ms of jitter in a 16-packet buffer: packets a window
# ahead are jitter, not a jump, until the stream has been quiet for half the time they span
@given(network())
def test_interleaved_puts_and_pops_deliver_each_packet_once_in_order(case):
    """Every packet comes out at most once, in emission order, and the counters add up, with every
    packet (stragglers of a restarted stream included) delivered to put()."""
    simulate(case, steer_clear_of_stragglers=False)


def test_a_lost_packet_costs_one_concealed_tick_and_no_delay():
    """A packet lost from a steady stream shows up as one UNDERRUN (the caller conceals once);
    the next packet then plays in its own slot, so losses do not pile up delay."""
    jb = JitterBuffer()
    outcomes = []
    for k in range(100):
        if k != 50:
            jb.put(packet(k), 20.0 * k + 3.0)  # arrives 3 ms after it was sent
        outcomes.append(play(jb, 20.0 * k + 10.0))  # the mixer ticks 10 ms after each send
    assert outcomes[50] == (UNDERRUN, None)
    assert outcomes[51] == (FRAME, 51)
    assert [i for status, i in outcomes[52:]] == list(range(52, 100))
    s = jb.stats()
    assert s["lost"] == 1 and s["underruns"] == 1 and s["played"] == 99
    assert s["mean_wait_ms"] == pytest.approx(7.0)  # every played packet waited 10 - 3 ms


# --------------------------------------------------------------------------------------------------
# After a stall of the caller (issue: streams keep time through stalls)
# --------------------------------------------------------------------------------------------------

def stall(jb: JitterBuffer, first: int, count: int, t0: float, lose: tuple = ()) -> None:
    """The caller is paused: packets keep arriving at their real times, nobody pops."""
    for k in range(count):
        if first + k not in lose:
            jb.put(packet(first + k), t0 + k * FRAME_MS)


def waited(jb: JitterBuffer, now: float, arrivals: dict) -> float:
    head = jb.peek()
    return now - arrivals[index_of(head)]


@pytest.mark.parametrize("stall_ms", [150, 600, 3000])
def test_catch_up_after_a_stall_resumes_at_the_target_delay_and_stays_there(stall_ms):
    jb = JitterBuffer(min_delay_ms=40, capacity=256)
    steady(jb, 0, 100)
    target = jb.target_delay_ms
    pending = jb.peek().sequence_number  # what the tick would have played next
    n = stall_ms // FRAME_MS
    stall(jb, 100, n, 100 * FRAME_MS)  # packet k arrives at k * FRAME_MS
    now = (100 + n) * FRAME_MS
    dropped = jb.catch_up(now)
    head = jb.peek().sequence_number
    # exactly what waited longer than the target delay was dropped
    assert head == pending + dropped and dropped > 0
    assert now - head * FRAME_MS <= target < now - (head - 1) * FRAME_MS
    assert jb.stats()["stale"] == dropped and jb.stats()["lost"] == 0
    assert play(jb, now) == (FRAME, head)
    after = steady(jb, 100 + n, 200, t0=now)
    assert [s for s, _ in after] == [FRAME] * 200
    assert jb.buffered_ms <= target
    # packet times were real: the stall did not inflate the estimate, nothing to come back down from
    assert jb.target_delay_ms == target and jb.stats()["underruns"] == 0


def test_catch_up_passes_over_packets_lost_during_the_stall():
    jb = JitterBuffer(min_delay_ms=40)
    steady(jb, 0, 50)
    stall(jb, 50, 30, 50 * FRAME_MS, lose=(52, 53, 60))
    jb.catch_up(80 * FRAME_MS)
    assert jb.stats()["lost"] == 3
    assert play(jb, 80 * FRAME_MS) == (FRAME, 78)


def test_catch_up_leaves_a_buffer_within_its_target_alone():
    jb = JitterBuffer(min_delay_ms=40)
    steady(jb, 0, 50)
    assert jb.catch_up(50 * FRAME_MS) == 0
    # a backlog of one frame beyond the target is the gradual shrink's business, not a stall
    stall(jb, 50, 3, 50 * FRAME_MS)
    assert jb.catch_up(53 * FRAME_MS) == 0
    assert JitterBuffer().catch_up(0.0) == 0  # nothing received yet
