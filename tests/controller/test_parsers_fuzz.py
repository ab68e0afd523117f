"""Property tests of what the controller parses: CDR time filters, bot play specs and engine
answers' codec. (The recording of whatever packets arrive is the engine's now:
tests/mixer/media/test_recorder.py.)"""
import math

from hypothesis import example, given, strategies as st

from controller import bots, cdr
from controller.calls import _codec_of


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
        freq = bots.parse_tone(text)
    except bots.PlayError:
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
