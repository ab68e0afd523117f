"""NTP timestamp helpers and the RFC 3550 section 6.4.1 round-trip time."""

import calendar
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixer.rtp.ntp import (
    NTP_EPOCH_OFFSET,
    ntp_middle32,
    ntp_now,
    ntp_to_seconds,
    rtt_from_report,
    seconds_to_ntp,
)

# RFC 3550 section 6.4.1, figure 2: the SR left at 10 Nov 1995 11:33:25.125 UTC.
RFC_SR_NTP = (0xB44DB705 << 32) | 0x20000000
RFC_SR_UNIX = calendar.timegm((1995, 11, 10, 11, 33, 25)) + 0.125
RFC_LSR = 0xB7052000  # 46853.125 s
RFC_DLSR = 0x00054000  # 5.250 s
RFC_ARRIVAL_MIDDLE = 0xB7108000  # A = 46864.500 s


def test_rfc3550_sr_timestamp_is_1995_11_10():
    assert ntp_to_seconds(RFC_SR_NTP) == RFC_SR_UNIX
    assert seconds_to_ntp(RFC_SR_UNIX) == RFC_SR_NTP
    assert RFC_SR_NTP >> 32 == 3024992005  # the "(3024992005.125 s)" of the figure


def test_middle32_is_the_lsr_of_the_rfc_example():
    assert ntp_middle32(RFC_SR_NTP) == RFC_LSR


def test_rtt_rfc3550_example_is_6_125_seconds():
    arrival = RFC_ARRIVAL_MIDDLE << 16  # only the middle 32 bits matter
    assert rtt_from_report(arrival, RFC_LSR, RFC_DLSR) == 6.125
    # The low 16 bits of the fraction and the top 16 bits of the seconds are ignored.
    noisy = (0x1234 << 48) | arrival | 0xFFFF
    assert rtt_from_report(noisy, RFC_LSR, RFC_DLSR) == 6.125


def test_rtt_unknown_without_sender_report():
    assert rtt_from_report(RFC_ARRIVAL_MIDDLE << 16, 0, 0) is None


def test_rtt_zero_dlsr_is_plain_difference():
    assert rtt_from_report((RFC_LSR + 0x8000) << 16, RFC_LSR, 0) == 0.5


def test_rtt_tiny_negative_clamps_to_zero():
    # One 1/65536 s unit of clock granularity below zero.
    assert rtt_from_report(RFC_LSR << 16, RFC_LSR, 1) == 0.0
    assert rtt_from_report(RFC_LSR << 16, RFC_LSR, 0) == 0.0


def test_rtt_large_negative_is_rejected_not_faked():
    # DLSR 5.25 s but the report arrived 1 s after the SR: the block is bogus.
    assert rtt_from_report((RFC_LSR + 0x10000) << 16, RFC_LSR, RFC_DLSR) is None


def test_rtt_across_middle32_wrap():
    lsr = 0xFFFF8000  # 0.5 s before the 16.16 clock wraps
    arrival = 0x00018000 << 16  # 1.5 s after it wrapped
    assert rtt_from_report(arrival, lsr, 0x00008000) == 1.5


@given(
    lsr=st.integers(1, 0xFFFFFFFF),
    dlsr=st.integers(0, 0xFFFF_FFFF),
    rtt_units=st.integers(0, 0x7FFF_FFFF),
)
def test_rtt_recovers_any_positive_delay(lsr, dlsr, rtt_units):
    arrival_middle = (lsr + dlsr + rtt_units) & 0xFFFFFFFF
    rtt = rtt_from_report(arrival_middle << 16, lsr, dlsr)
    assert rtt == rtt_units / 65536


@given(
    arrival=st.integers(0, 2**64 - 1), lsr=st.integers(0, 2**32 - 1), dlsr=st.integers(0, 2**32 - 1)
)
def test_rtt_never_negative(arrival, lsr, dlsr):
    rtt = rtt_from_report(arrival, lsr, dlsr)
    assert rtt is None or rtt >= 0.0


def test_ntp_now_tracks_wall_clock():
    before = time.time()
    now = ntp_to_seconds(ntp_now())
    after = time.time()
    assert before - 1e-6 <= now <= after + 1e-6


def test_era_1_after_2036_wrap():
    wrap = 2**32 - NTP_EPOCH_OFFSET  # 2036-02-07 06:28:16 UTC
    assert seconds_to_ntp(wrap) == 0
    assert ntp_to_seconds(0) == wrap
    assert ntp_to_seconds(seconds_to_ntp(wrap + 10.5)) == wrap + 10.5


@pytest.mark.parametrize("unix", [0.0, 1e9, 1.7e9, 2.1e9, 3.0e9])
def test_seconds_round_trip_examples(unix):
    assert ntp_to_seconds(seconds_to_ntp(unix)) == pytest.approx(unix, abs=1e-6)


# RFC 4330 section 3 maps 64-bit timestamps onto 1968-01-20 .. 2104-02-26.
@given(st.floats(min_value=-6.0e7, max_value=4.1e9, allow_nan=False))
def test_seconds_round_trip(unix):
    ntp = seconds_to_ntp(unix)
    assert 0 <= ntp < 2**64
    assert ntp_to_seconds(ntp) == pytest.approx(unix, abs=1e-6)
