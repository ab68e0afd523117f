"""Hypothesis runs of the fuzz targets' checks, for what tests/mixer does not already cover.

tests/mixer already feeds arbitrary bytes to RtpPacket.parse, parse_compound, SrtpContext.unprotect,
sdp.parse, answer_audio and parse_crypto and checks that only the module's error comes out. These
tests add the invariants of the fuzz targets on top (accepted input round-trips, RFC 8285 elements
agree with an independent walk, answers are consistent with their offers, the control API never
answers 500 nor leaks a port, a live leg counts every datagram once and leaves its neighbour alone),
driven by arbitrary and mutated inputs.
"""
from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fuzz import registry  # noqa: E402
from tests.fuzz.strategies import inputs  # noqa: E402

TARGETS = registry.load_all()
_checks: dict[str, object] = {}


def check_of(name: str):
    """Each target's fixtures (an engine, sockets) are built once per test session."""
    if name not in _checks:
        _checks[name] = TARGETS[name].setup()
    return _checks[name]


def seeds_of(name: str) -> list[bytes]:
    return TARGETS[name].seeds() or [b"\x00"]


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(data=inputs(seeds_of("rtp_extensions"), max_size=300))
def test_rtp_extensions_agree_with_an_independent_rfc8285_walk(data):
    check_of("rtp_extensions")(data)


@FAST
@given(data=inputs(seeds_of("rtcp")))
def test_accepted_rtcp_reserializes_to_a_fixed_point(data):
    check_of("rtcp")(data)


@FAST
@given(data=inputs(seeds_of("srtcp")))
def test_srtcp_refuses_tampering_and_replays_and_counts_each_packet_once(data):
    check_of("srtcp")(data)


@FAST
@given(data=inputs(seeds_of("sdp"), max_size=1024))
def test_accepted_sdp_reserializes_to_a_fixed_point(data):
    check_of("sdp")(data)


@FAST
@given(data=inputs(seeds_of("sdp_answer"), max_size=1024))
def test_answers_are_consistent_with_their_offers(data):
    check_of("sdp_answer")(data)


@FAST
@given(data=inputs(seeds_of("sdes_crypto"), max_size=256))
def test_accepted_crypto_attributes_round_trip(data):
    check_of("sdes_crypto")(data)


@SLOW
@given(data=inputs(seeds_of("control_api"), max_size=2048))
def test_control_api_never_answers_500_and_never_leaks_a_port(data):
    check_of("control_api")(data)


@SLOW
@given(data=inputs(seeds_of("leg_receive"), max_size=1500))
def test_live_leg_counts_every_datagram_once_and_leaves_its_neighbour_alone(data):
    check_of("leg_receive")(data)


@FAST
@given(data=inputs(seeds_of("webrtc_demux"), max_size=1500))
def test_a_webrtc_leg_counts_every_datagram_of_any_kind(data):
    check_of("webrtc_demux")(data)


@FAST
@given(data=inputs(seeds_of("dtls_records"), max_size=1500))
def test_dtls_input_is_absorbed_and_record_framing_round_trips(data):
    check_of("dtls_records")(data)
