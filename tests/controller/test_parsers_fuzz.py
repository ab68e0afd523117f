"""Property tests of what the controller parses: CDR time filters, bot play specs and engine
answers' codec. (The recording of whatever packets arrive is the engine's now:
tests/mixer/media/test_recorder.py.)"""
import math

import pytest
from hypothesis import example, given, strategies as st

from controller import bots, cdr
from controller.calls import _codec_of
from controller.store.postgresql import redacted

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
