"""StreamRewriter: one continuous outgoing stream whatever source fills the slot (wrap-arounds too)."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from mixer._forward import StreamRewriter

FRAME = 960


@settings(max_examples=300, deadline=None)
@given(
    out_seq=st.integers(0, 0xFFFF),
    out_ts=st.integers(0, 0xFFFFFFFF),
    runs=st.lists(
        st.tuples(st.integers(0, 4),               # source
                  st.integers(0, 0xFFFF),          # its sequence number when the run starts
                  st.integers(0, 0xFFFFFFFF),      # its timestamp when the run starts
                  st.integers(1, 40),              # packets in the run
                  st.integers(0, 3000)),           # ms of silence before the run
        min_size=1, max_size=25),
)
def test_in_order_input_gives_strictly_continuous_output(out_seq, out_ts, runs) -> None:
    rewriter = StreamRewriter(0xABCD, out_seq, out_ts)
    now = 1000.0
    cursors: dict[int, tuple[int, int]] = {}
    previous = None
    for source, seq0, ts0, length, pause_ms in runs:
        now += pause_ms
        seq, ts = cursors.get(source, (seq0, ts0))
        for _ in range(length):
            mapped = rewriter.rewrite(source, seq, ts, now)
            assert mapped is not None
            seq_out, ts_out, _switched = mapped
            if previous is None:
                assert seq_out == out_seq and ts_out == out_ts
            else:
                assert seq_out == (previous[0] + 1) & 0xFFFF
                step = (ts_out - previous[1]) & 0xFFFFFFFF
                assert step >= FRAME
                assert step <= (pause_ms + 20) * 48 + FRAME  # wall clock, not the source's clock
            previous = (seq_out, ts_out)
            seq, ts = (seq + 1) & 0xFFFF, (ts + FRAME) & 0xFFFFFFFF
            now += 20.0
            pause_ms = 0
        cursors[source] = (seq, ts)


def test_a_switch_is_marked_and_advances_time_by_the_wall_clock() -> None:
    rewriter = StreamRewriter(1, 100, 5000)
    assert rewriter.rewrite(7, 65535, 0xFFFFFC40, 0.0) == (100, 5000, True)
    assert rewriter.rewrite(7, 0, 0, 20.0) == (101, 5960, False)  # both wrap on the source side
    # another source 500 ms later: next number, timestamp 500 ms on
    assert rewriter.rewrite(9, 42, 123, 520.0) == (102, 5960 + 500 * 48, True)
    assert rewriter.switches == 1


def test_output_wraps_sequence_and_timestamp() -> None:
    rewriter = StreamRewriter(1, 0xFFFE, 0xFFFFFFFF - 1000)
    outs = [rewriter.rewrite(1, s, s * FRAME, s * 20.0)[:2] for s in range(4)]
    assert [o[0] for o in outs] == [0xFFFE, 0xFFFF, 0, 1]
    assert [o[1] for o in outs] == [(0xFFFFFFFF - 1000 + k * FRAME) & 0xFFFFFFFF for k in range(4)]


def test_loss_and_reordering_within_a_source_are_kept() -> None:
    rewriter = StreamRewriter(1, 10, 0)
    assert rewriter.rewrite(1, 500, 0, 0.0)[0] == 10
    assert rewriter.rewrite(1, 502, 2 * FRAME, 40.0)[0] == 12   # 501 lost upstream: a real gap
    assert rewriter.rewrite(1, 501, FRAME, 45.0)[0] == 11       # late 501: still its own number
    assert rewriter.last_seq == 12                              # the newest stays the newest
    assert rewriter.rewrite(1, 502, 2 * FRAME, 50.0) is None   # duplicate of the newest


def test_stragglers_from_before_a_switch_are_dropped() -> None:
    rewriter = StreamRewriter(1, 0, 0)
    rewriter.rewrite(1, 100, 0, 0.0)
    rewriter.rewrite(2, 900, 0, 20.0)                           # slot moves to source 2
    rewriter.rewrite(2, 901, FRAME, 40.0)
    assert rewriter.rewrite(2, 899, 0, 45.0) is None            # older than source 2's start here
    assert rewriter.dropped == 1
    # source 1 comes back: a fresh start after the last number, not its old offset
    assert rewriter.rewrite(1, 101, FRAME, 60.0)[0] == 3


def test_a_source_that_restarts_its_numbering_is_rebased() -> None:
    rewriter = StreamRewriter(1, 0, 0)
    for k in range(5):
        rewriter.rewrite(1, 30000 + k, k * FRAME, k * 20.0)
    assert rewriter.rewrite(1, 7, 0, 100.0) == (5, 4 * FRAME + FRAME, True)


def test_original_seq_and_timestamp_map_back_for_retransmission() -> None:
    rewriter = StreamRewriter(1, 65530, 0)
    for k in range(10):
        rewriter.rewrite(3, 200 + k, 1000 + k * FRAME, k * 20.0)
    assert rewriter.original_seq((65530 + 7) & 0xFFFF) == 207
    assert rewriter.map_timestamp(1000 + 7 * FRAME) == 7 * FRAME
    assert rewriter.original_seq(65529) is None          # before this source's first packet
    assert rewriter.original_seq((65530 + 11) & 0xFFFF) is None  # not sent yet


def test_a_source_released_and_taken_back_continues_without_a_gap() -> None:
    """A speaker not forwarded for a while, then forwarded again in the same slot: the packets
    not forwarded in between must not show up as a gap."""
    rewriter = StreamRewriter(1, 500, 0)
    for k in range(3):
        rewriter.rewrite(4, 10 + k, k * FRAME, k * 20.0)
    rewriter.release()
    # 25 packets (10 + 3 .. 10 + 27) are not forwarded; then the same source comes back
    assert rewriter.rewrite(4, 10 + 28, 28 * FRAME, 28 * 20.0) == (503, 2 * FRAME + 26 * FRAME, True)
