"""Property tests of what the controller parses: CDR time filters, bot play specs, engine answers'
codec, and the recorder's placement of whatever packets arrive (any order, gaps, garbage)."""
import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from controller import cdr, media
from controller.calls import _codec_of
from controller.store.postgresql import redacted
from mixer.codec import MIX_RATE

pytestmark = pytest.mark.store_independent  # no store involved


@given(st.text(max_size=40))
def test_parse_iso_returns_a_time_or_raises_value_error(text):
    try:
        value = cdr.parse_iso(text)
    except ValueError:
        return
    assert math.isfinite(value)


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_iso_round_trips_to_the_millisecond(epoch):
    assert abs(epoch - cdr.parse_iso(cdr.iso(epoch))) < 0.001  # microseconds rounded, then ms cut


@given(st.text(max_size=30))
def test_parse_tone_accepts_only_tones_in_range(text):
    try:
        freq = media.parse_tone(text)
    except media.PlayError:
        assert text.startswith("tone:")
        return
    if freq is None:
        assert not text.startswith("tone:")
    else:
        assert 20.0 <= freq <= 20000.0


@example("a=rtpmap:")  # found by hypothesis: an rtpmap naming nothing
@given(st.text(max_size=200))
def test_codec_of_any_text_never_raises(text):
    result = _codec_of(text)
    assert result is None or isinstance(result, str)


def test_tone_signal_slices_like_an_array():
    signal = media.ToneSignal(440.0, 1.0)
    assert len(signal) == MIX_RATE
    frame = signal[960:1920]
    t = np.arange(960, 1920) / MIX_RATE
    expected = (np.sin(2 * np.pi * 440.0 * t) * media.BOT_AMPLITUDE * 32767).astype(np.int16)
    assert np.array_equal(frame, expected)
    assert len(signal[MIX_RATE - 100:MIX_RATE + 900]) == 100  # the end: SimulatedParticipant stops


packets = st.lists(st.tuples(st.floats(0.0, 0.9), st.sampled_from([1, 2, 3]), st.integers(0, 0xFFFF),
                             st.integers(0, 0xFFFFFFFF), st.binary(max_size=200)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(packets, st.sampled_from(["opus", "PCMU"]))
def test_recorder_writes_any_packet_sequence_without_failing(tmp_path_factory, batch, codec):
    path = tmp_path_factory.mktemp("rec") / "r.wav"
    recorder = media.Recorder("r", path, codec=codec)
    recorder._writer = media.open_wav(path)
    for arrival, ssrc, seq, ts, payload in sorted(batch):
        recorder.received.streams.setdefault(ssrc, []).append((arrival, seq, ts, payload))
    recorder.drain(1.0)
    # bounded by the clock: what is written is the second up to the cutoff, whatever the
    # timestamps say, and what waits is at most a few seconds of any stream's drift
    first = min((p[0] for p in batch), default=1.0)
    assert recorder.samples_written <= int((1.0 - first) * MIX_RATE) + 1
    assert len(recorder._mix) <= (media.MAX_DRIFT_S + 1) * MIX_RATE + 6 * 960
    recorder._writer.close()
    assert all(not packets for packets in recorder.received.streams.values())


@given(st.text(max_size=30), st.text(min_size=1, max_size=20))
@example("db.example", "s3cret")
@example("[::1", "pw")
def test_database_urls_in_logs_never_show_the_password(host, password):
    from urllib.parse import quote
    secret = quote(password, safe="")
    shown = redacted(f"postgresql://voicemix:{secret}@{host}:5432/voicemix")
    assert f"voicemix:{secret}@" not in shown
    assert redacted("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redacted("postgresql://h/d") == "postgresql://h/d"
