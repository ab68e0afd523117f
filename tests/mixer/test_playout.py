"""Playout of one stream: delay shrinks by accelerating in pauses (no dropped frame), re-buffering
is concealed (no silence), and an Opus stream that loses packets gets the frame it needs for FEC."""
from __future__ import annotations

import numpy as np

from mixer import _jitter, _rtp
from mixer.codec import FRAME_SAMPLES, FrameEncoder, OpusSettings
from mixer.playout import Playout

RATE = 48000


def speechlike(seconds: float, talk_s: float = 0.6, pause_s: float = 0.3) -> np.ndarray:
    """Voiced bursts (a 140 Hz harmonic tone) separated by true pauses, like sentences."""
    t = np.arange(int(seconds * RATE)) / RATE
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in (1, 2, 3))
    gate = (t % (talk_s + pause_s)) < talk_s
    return (voice * gate * 6000).astype(np.int16)


def packets(pcm: np.ndarray, opus: OpusSettings = OpusSettings(32000, 10, False, 0)) -> list:
    encoder = FrameEncoder("opus", opus)
    out = []
    for k in range(len(pcm) // FRAME_SAMPLES):
        payload = encoder.encode(np.ascontiguousarray(pcm[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]))
        wire = _rtp.build_rtp(111, k & 0xFFFF, k * FRAME_SAMPLES, 1, payload, False, -1, None)
        out.append(_rtp.RtpPacket.parse(wire))
    return out


def run(playout: Playout, stream: list, arrival_ms, ticks: int) -> list:
    """Tick every 20 ms; packet k arrives at arrival_ms(k) (None: lost)."""
    arrivals = sorted((arrival_ms(k), k) for k in range(len(stream)) if arrival_ms(k) is not None)
    frames, index = [], 0
    for tick in range(ticks):
        now = 5.0 + tick * 20.0
        while index < len(arrivals) and arrivals[index][0] <= now:
            playout.put(stream[arrivals[index][1]], arrivals[index][0])
            index += 1
        playout.pull(now)
        frames.append(playout.decode())
    return frames


def test_a_burst_that_left_too_much_delay_is_played_away_in_pauses_not_dropped():
    stream = packets(speechlike(8.0))
    # the first 100 packets arrive together at 2 s (a stalled network released them): the buffer
    # holds far more than it needs, and must come back down
    late = lambda k: 2000.0 if k < 100 else k * 20.0  # noqa: E731
    playout = Playout("opus")
    frames = run(playout, stream, late, 500)
    stats = playout.stats()
    assert stats["discarded"] == 0                  # no frame thrown away
    assert playout.accelerated_ms >= 500            # delay removed by time-scale modification
    last = max(i for i, frame in enumerate(frames) if frame is not None)
    assert last < 480    # the last packet (8 s, tick 400) played sooner than the burst's 2 s later
    assert all(frame is not None for frame in frames[100:last])


def test_the_old_buffer_drops_frames_for_the_same_burst():
    stream = packets(speechlike(8.0))
    late = lambda k: 2000.0 if k < 100 else k * 20.0  # noqa: E731
    playout = Playout("opus", time_stretch=False)
    run(playout, stream, late, 500)
    assert playout.stats()["discarded"] > 0 and playout.accelerated_ms == 0


def test_re_buffering_after_an_underrun_is_concealed_not_silent():
    stream = packets(speechlike(3.0, talk_s=3.0))
    # packets 50.. arrive 70 ms late: the buffer runs dry mid-word and waits for them
    late = lambda k: k * 20.0 + (70.0 if k >= 50 else 0.0)  # noqa: E731
    playout = Playout("opus")
    frames = run(playout, stream, late, 150)
    assert playout.stats()["underruns"] >= 1
    assert playout.stall_concealed >= 1
    assert all(frame is not None for frame in frames[2:140])   # no silent tick in the word
    silent = Playout("opus", time_stretch=False)
    old = run(silent, stream, late, 150)
    assert sum(frame is None for frame in old[2:140]) >= 1     # what it was before


def test_an_opus_stream_that_loses_packets_gets_a_frame_of_room_for_fec():
    stream = packets(speechlike(6.0), OpusSettings(32000, 10, True, 5))
    rng = np.random.default_rng(3)
    lost = set(np.flatnonzero(rng.random(len(stream)) < 0.05).tolist())
    playout = Playout("opus")
    run(playout, stream, lambda k: None if k in lost else k * 20.0, 320)
    decoder = playout.decoder_stats()
    assert playout.jitter_buffer.target_delay_ms == 40.0
    assert decoder["fec_recovered"] >= len(lost) // 2
    assert playout.jitter_buffer.lost == len([k for k in lost if k < 300])


def test_g711_gets_no_extra_frame_for_loss():
    pcm = speechlike(2.0)
    encoder = FrameEncoder("PCMU")
    stream = [_rtp.RtpPacket.parse(_rtp.build_rtp(0, k, k * 160, 1, encoder.encode(
        np.ascontiguousarray(pcm[k * 960:(k + 1) * 960])), False, -1, None)) for k in range(100)]
    playout = Playout("PCMU")
    run(playout, stream, lambda k: None if k % 10 == 5 else k * 20.0, 110)
    assert playout.jitter_buffer.target_delay_ms == 20.0


def test_an_undecoded_stream_honours_a_shrink_by_dropping_unheard():
    stream = packets(speechlike(6.0))
    late = lambda k: 1500.0 if k < 75 else k * 20.0  # noqa: E731
    playout = Playout("opus")
    arrivals = sorted((late(k), k) for k in range(len(stream)))
    index = 0
    for tick in range(300):
        now = 5.0 + tick * 20.0
        while index < len(arrivals) and arrivals[index][0] <= now:
            playout.put(stream[arrivals[index][1]], arrivals[index][0])
            index += 1
        for status, _ in playout.pull(now):
            assert status in (_jitter.FRAME, _jitter.BUFFERING, _jitter.IDLE, _jitter.UNDERRUN)
        playout.discard()
    assert playout.stats()["mean_wait_ms"] < 800


from hypothesis import given, settings, strategies as st  # noqa: E402

_STREAM = packets(speechlike(1.2))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 150), st.integers(-3, 3)),
                min_size=len(_STREAM), max_size=len(_STREAM)),
       st.booleans(), st.lists(st.booleans(), min_size=80, max_size=80))
def test_any_arrival_pattern_plays_whole_frames_and_stays_bounded(fates, time_stretch, decoded):
    """Whatever the network does (loss, delay, reordering) and whichever ticks are decoded or
    discarded (the MCU decodes only talkers), every decoded tick is one whole frame or silence,
    and the audio held stays bounded."""
    playout = Playout("opus", time_stretch=time_stretch)
    arrivals = sorted((k * 20.0 + delay + shift * 20.0, k)
                      for k, (lost, delay, shift) in enumerate(fates) if not lost)
    index = 0
    for tick, decode in enumerate(decoded):
        now = 5.0 + tick * 20.0
        while index < len(arrivals) and arrivals[index][0] <= now:
            playout.put(_STREAM[arrivals[index][1]], arrivals[index][0])
            index += 1
        playout.pull(now)
        if decode:
            frame = playout.decode()
            assert frame is None or len(frame) == FRAME_SAMPLES
        else:
            playout.discard()
        assert playout.decoder.pending <= 12 * FRAME_SAMPLES
        assert len(playout.packets) == 0
