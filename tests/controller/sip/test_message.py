"""SIP message parsing and building: the RFC 4475 torture messages, round trips, and the
structured views (Via, CSeq, name-addr)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from controller.sip.errors import SipParseError
from controller.sip.message import (
    Headers, SipRequest, SipResponse, parse_cseq, parse_message, parse_via, split_commas,
)
from controller.sip.uri import AbsoluteUri, SipUri

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.controller.sip import rfc4475  # noqa: E402

MESSAGES = rfc4475.MESSAGES


pytestmark = pytest.mark.store_independent   # the SIP stack and its peers: no store involved


def message(name: str) -> bytes:
    return rfc4475.expand(MESSAGES[name][3])


@pytest.mark.parametrize("name", [n for n, m in MESSAGES.items() if m[2] in ("valid", "lenient")])
def test_rfc4475_valid_messages_parse(name):
    parsed = parse_message(message(name))
    assert parsed.call_id
    assert parsed.vias


@pytest.mark.parametrize("name", [n for n, m in MESSAGES.items() if m[2] == "invalid"])
def test_rfc4475_invalid_messages_are_rejected(name):
    with pytest.raises(SipParseError) as caught:
        parse_message(message(name))
    data = message(name)
    if data.startswith(b"SIP/"):
        assert getattr(caught.value, "partial", None) is None   # a response: nothing to answer
    else:
        assert caught.value.partial is not None                  # a request: kept to answer 400


def test_short_tortuous_invite():
    m = parse_message(message("wsinv"))
    assert isinstance(m, SipRequest) and m.method == "INVITE"
    assert m.uri.user == "vivekg" and "unknownparam" in m.uri.params
    assert m.to.tag == "1918181833n" and m.from_.tag == "98asjd8"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.cseq.number == 9 and m.cseq.method == "INVITE"
    assert m.headers.get("Max-Forwards") == "0068"
    assert [v.transport for v in m.vias] == ["UDP", "TCP", "UDP"]
    assert [v.host for v in m.vias] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert [v.branch for v in m.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    contact = m.contacts[0]
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(m.body) == 150 and m.body.startswith(b"v=0")


def test_escaping_is_undone_for_comparison_only():
    m = parse_message(message("esc01"))
    assert m.uri.user_unescaped == "sips:user@example.com"
    assert m.to.uri.user_unescaped == "user"
    assert m.from_.uri.user_unescaped == "I have spaces"
    assert m.contacts[0].uri.params == {"lr": None, "name": "v%61lue%25%34%31"}
    n = parse_message(message("escnull"))
    assert n.to.uri.user_unescaped == "null-\x00-null"
    assert [c.uri.user_unescaped for c in n.contacts] == ["\x00", "\x00\x00"]


def test_percent_that_is_not_an_escape():
    m = parse_message(message("esc02"))
    assert m.method == "RE%47IST%45R"            # not REGISTER
    assert m.to.display_name == "%Z%45"
    assert len(m.contacts) == 2                  # C%6Fntact is another header
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_udp_trailing_octets_are_discarded():
    m = parse_message(message("dblreq"))
    assert m.method == "REGISTER" and m.body == b""


def test_semicolon_in_user_part_and_unknown_transports():
    assert parse_message(message("semiuri")).uri.user == "user;par=u%40example.net"
    vias = parse_message(message("transports")).vias
    assert [v.transport for v in vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_reason_phrases():
    assert parse_message(message("noreason")).reason == ""
    unusual = parse_message(message("unreason"))
    assert unusual.status == 200 and "2**3 * 5**2" in unusual.reason


def test_unknown_schemes_are_kept_opaque():
    assert parse_message(message("unkscm")).uri == AbsoluteUri("nobodyknowsthisscheme", "totallyopaquecontent")
    m = parse_message(message("unksm2"))
    assert m.to.uri.scheme == "isbn" and m.from_.uri.scheme == "http"


def test_rfc2543_request_without_branch():
    m = parse_message(message("inv2543"))
    assert m.top_via.branch is None
    # addr-spec form: ";user=phone" is a header parameter of To, not a URI parameter
    assert m.to.uri.params == {} and m.to.params == {"user": "phone"}


def test_status_codes_of_answerable_errors():
    with pytest.raises(SipParseError) as caught:
        parse_message(message("badvers"))
    assert caught.value.status == 505
    with pytest.raises(SipParseError) as caught:
        parse_message(message("insuf"))
    assert caught.value.partial.headers.get("Call-ID") is None   # cannot be answered


def test_round_trip_of_every_valid_message():
    for name, (_, _, expectation, _) in MESSAGES.items():
        if expectation == "invalid":
            continue
        first = parse_message(message(name))
        second = parse_message(first.serialize())
        assert type(second) is type(first)
        def fields(m):   # Content-Length is recomputed and written last
            return [(n, v) for n, v in m.headers if n != "Content-Length"]
        assert fields(second) == fields(first), name
        assert second.body == first.body


def test_build_request_and_response():
    headers = Headers([("v", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc"), ("f", "<sip:a@x>;tag=1"),
                       ("t", "<sip:b@y>"), ("i", "id@x"), ("CSeq", "7 OPTIONS")])
    request = SipRequest("OPTIONS", "sip:b@y", headers)
    data = request.serialize()
    assert b"Via: SIP/2.0/UDP" in data and b"Content-Length: 0\r\n\r\n" in data
    again = parse_message(data)
    assert again.cseq.number == 7 and again.call_id == "id@x"
    response = SipResponse(486, headers=headers.copy(), body=b"x")
    assert response.reason == "Busy Here"
    assert parse_message(response.serialize()).body == b"x"


def test_structured_values():
    via = parse_via("SIP / 2.0 / TCP [2001:db8::9]:5061 ; branch=z9hG4bKx ;rport;received=1.2.3.4")
    assert (via.transport, via.host, via.port) == ("TCP", "2001:db8::9", 5061)
    assert via.params == {"branch": "z9hG4bKx", "rport": None, "received": "1.2.3.4"}
    assert parse_via(str(via)) == via
    assert parse_cseq("  0042   INVITE") .number == 42
    for bad in ("1", "x INVITE", "2147483648 INVITE", "1 IN VITE"):
        with pytest.raises(SipParseError):
            parse_cseq(bad)
    assert split_commas('"a, b" <sip:x>, <sip:y;p=1,2>, z') == ['"a, b" <sip:x>', "<sip:y;p=1,2>", "z"]


def test_headers_are_case_insensitive_with_compact_forms():
    headers = Headers([("CALL-id", "1"), ("m", "<sip:a@b>, <sip:c@d>"), ("Contact", "<sip:e@f>")])
    assert headers.get("i") == "1" and headers.get("call-ID") == "1"
    assert headers.values("contact") == ["<sip:a@b>", "<sip:c@d>", "<sip:e@f>"]
    headers.set("Contact", "<sip:z@z>")
    assert headers.values("Contact") == ["<sip:z@z>"]
    headers.remove("Call-ID")
    assert "Call-ID" not in headers


def test_stream_framing_needs_the_blank_line():
    with pytest.raises(SipParseError):
        parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n")


def test_leading_crlf_and_bare_lf_are_tolerated():
    text = message("lwsdisp")
    assert parse_message(b"\r\n\r\n" + text).method == "OPTIONS"
    assert parse_message(text.replace(b"\r\n", b"\n")).method == "OPTIONS"


def test_sip_uri_parts():
    m = parse_message(message("intmeth"))
    uri = m.uri
    assert isinstance(uri, SipUri) and uri.host == "example.com"
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
