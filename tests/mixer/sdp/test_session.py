"""RFC 4566 parsing and serialization: real-world offers, every error family, properties."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixer.sdp import (
    Connection,
    Extmap,
    MediaDescription,
    Origin,
    RtcpAttribute,
    SdpError,
    SessionDescription,
    Timing,
    parse,
)


def crlf(text: str) -> str:
    return "\r\n".join(text.strip("\n").split("\n")) + "\r\n"


# What `ffmpeg -f lavfi -i sine -c:a libopus -f rtp rtp://127.0.0.1:5004 -sdp_file x.sdp` writes.
FFMPEG_OPUS = crlf("""
v=0
o=- 0 0 IN IP4 127.0.0.1
s=No Name
c=IN IP4 127.0.0.1
t=0 0
a=tool:libavformat LIBAVFORMAT_VERSION
m=audio 5004 RTP/AVP 97
b=AS:64
a=rtpmap:97 opus/48000/2
""")

# A Chrome audio offer (DTLS-SRTP, ICE, BUNDLE) plus a data channel section.
CHROME_OFFER = crlf("""
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS 6a1d4bd2-0f0e-4c2b-9b4e-0ff4e8a7c1d3
m=audio 54321 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 203.0.113.7
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1467250027 1 udp 2122260223 192.168.0.196 54321 typ host generation 0 network-id 1
a=candidate:3298763155 1 udp 1686052607 203.0.113.7 54321 typ srflx raddr 192.168.0.196 rport 54321 generation 0
a=ice-ufrag:EsAw
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
a=ice-options:trickle
a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:6a1d4bd2-0f0e-4c2b-9b4e-0ff4e8a7c1d3 9b2f4c1e-3c55-4d0b-a4f7-2f3e0a1d5b66
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:3735928559 cname:x8nJ6dbWUkyVbHbK
a=ssrc:3735928559 msid:6a1d4bd2-0f0e-4c2b-9b4e-0ff4e8a7c1d3 9b2f4c1e-3c55-4d0b-a4f7-2f3e0a1d5b66
m=application 54321 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 203.0.113.7
a=ice-ufrag:EsAw
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F
a=setup:actpass
a=mid:1
a=sctp-port:5000
a=max-message-size:262144
""")

# A desk phone's INVITE body: G.711 both laws, G.729, G.722 and RFC 4733 DTMF.
SIP_PHONE_OFFER = crlf("""
v=0
o=yealink 1187 1188 IN IP4 192.168.1.50
s=SDP data
c=IN IP4 192.168.1.50
t=0 0
m=audio 11780 RTP/AVP 0 8 18 9 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:9 G722/8000
a=fmtp:101 0-15
a=rtpmap:101 telephone-event/8000
a=ptime:20
a=sendrecv
""")


def test_ffmpeg_sdp_fields() -> None:
    sd = parse(FFMPEG_OPUS)
    assert sd.version == 0
    assert sd.origin == Origin("-", 0, 0, "IN", "IP4", "127.0.0.1")
    assert sd.name == "No Name"
    assert sd.connection == Connection("IP4", "127.0.0.1")
    assert sd.timing == [Timing(0, 0)]
    assert sd.attributes == [("tool", "libavformat LIBAVFORMAT_VERSION")]
    (audio,) = sd.media
    assert (audio.media, audio.port, audio.port_count, audio.proto, audio.formats) == (
        "audio", 5004, 1, "RTP/AVP", [97])
    assert audio.bandwidths == [("AS", 64)]
    assert audio.rtpmap(97) == ("opus", 48000, 2)
    assert audio.fmtp(97) == {}
    assert audio.direction == "sendrecv"
    assert audio.ptime is None
    assert audio.rtcp is None and not audio.rtcp_mux
    assert sd.connection_of(audio) == Connection("IP4", "127.0.0.1")


@pytest.mark.parametrize("text", [FFMPEG_OPUS, CHROME_OFFER, SIP_PHONE_OFFER])
def test_serialize_reproduces_well_ordered_input_exactly(text: str) -> None:
    assert parse(text).serialize() == text


@pytest.mark.parametrize("text", [FFMPEG_OPUS, CHROME_OFFER, SIP_PHONE_OFFER])
def test_lf_line_ends_parse_like_crlf(text: str) -> None:
    assert parse(text.replace("\r\n", "\n")) == parse(text)


def test_chrome_offer() -> None:
    sd = parse(CHROME_OFFER)
    assert sd.origin.session_id == 4611731400430051336
    assert sd.attribute("group") == "BUNDLE 0 1"
    assert sd.has_attribute("extmap-allow-mixed") and sd.attribute("extmap-allow-mixed") is None
    assert sd.attribute("msid-semantic") == " WMS 6a1d4bd2-0f0e-4c2b-9b4e-0ff4e8a7c1d3"  # kept verbatim
    audio, data = sd.media
    assert audio.proto == "UDP/TLS/RTP/SAVPF"
    assert audio.formats == [111, 63, 9, 0, 8, 13, 110, 126]
    assert audio.rtpmap(111) == ("opus", 48000, 2)
    assert audio.rtpmap(63) == ("red", 48000, 2)
    assert audio.rtpmap(126) == ("telephone-event", 8000, 1)
    assert audio.fmtp(111) == {"minptime": "10", "useinbandfec": "1"}
    assert audio.fmtp("63") == {"111/111": ""}
    assert audio.rtcp_mux
    assert audio.rtcp == RtcpAttribute(9, "IN", "IP4", "0.0.0.0")
    assert [e.id for e in audio.extmaps] == [1, 2, 3, 4]
    assert audio.extmaps[0] == Extmap(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level")
    assert len(audio.attributes("candidate")) == 2
    assert audio.attributes("ssrc")[0] == "3735928559 cname:x8nJ6dbWUkyVbHbK"
    assert audio.crypto == []
    assert data.formats == ["webrtc-datachannel"] and not data.is_rtp
    assert data.attribute("sctp-port") == "5000"


def test_sip_phone_offer() -> None:
    sd = parse(SIP_PHONE_OFFER)
    (audio,) = sd.media
    assert audio.formats == [0, 8, 18, 9, 101]
    assert audio.rtpmap(18) == ("G729", 8000, 1)
    assert audio.fmtp(18) == {"annexb": "no"}
    assert audio.fmtp(101) == {"0-15": ""}
    assert audio.ptime == 20
    assert audio.direction == "sendrecv"


def test_static_payload_types_default_without_rtpmap() -> None:
    sd = parse(crlf("""
v=0
o=asterisk 1 1 IN IP4 10.0.0.5
s=Asterisk
c=IN IP4 10.0.0.5
t=0 0
m=audio 10000 RTP/AVP 8 0 96 101
a=rtpmap:101 telephone-event/8000
"""))
    audio = sd.media[0]
    assert audio.rtpmap(0) == ("PCMU", 8000, 1)
    assert audio.rtpmap(8) == ("PCMA", 8000, 1)
    assert audio.rtpmap(96) is None  # dynamic PT without rtpmap: unknown
    assert audio.rtpmap(101) == ("telephone-event", 8000, 1)


def test_rtpmap_overrides_static_default() -> None:
    sd = parse("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\n"
               "m=audio 1 RTP/AVP 0\na=rtpmap:0 pcmu/8000/1\n")
    assert sd.media[0].rtpmap(0) == ("pcmu", 8000, 1)


def test_ipv6_connection_and_media_level_override() -> None:
    sd = parse(crlf("""
v=0
o=- 7 7 IN IP6 2001:db8::1
s=-
c=IN IP6 2001:db8::1
t=0 0
m=audio 4000 RTP/AVP 0
m=audio 4002 RTP/AVP 8
c=IN IP4 198.51.100.9
"""))
    first, second = sd.media
    assert sd.connection == Connection("IP6", "2001:db8::1")
    assert sd.connection_of(first) == Connection("IP6", "2001:db8::1")
    assert sd.connection_of(second) == Connection("IP4", "198.51.100.9")


def test_multicast_connection_suffixes_round_trip() -> None:
    text = crlf("""
v=0
o=- 1 1 IN IP4 host.example.com
s=seminar
c=IN IP4 224.2.1.1/127/3
t=2873397496 2873404696
r=7d 1h 0 25h
m=audio 49170/2 RTP/AVP 0
m=audio 49180 RTP/AVP 0
c=IN IP6 ff15::101/3
""")
    sd = parse(text)
    assert sd.connection == Connection("IP4", "224.2.1.1", ttl=127, count=3)
    assert sd.media[1].connection == Connection("IP6", "ff15::101", count=3)
    assert sd.media[0].port_count == 2
    assert sd.timing == [Timing(2873397496, 2873404696, ["7d 1h 0 25h"])]
    assert sd.serialize() == text


def test_all_optional_session_lines_round_trip() -> None:
    text = crlf("""
v=0
o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5
s=SDP Seminar
i=A Seminar on the session description protocol
u=http://www.example.com/seminars/sdp.pdf
e=j.doe@example.com (Jane Doe)
p=+1 617 555-6011
c=IN IP4 224.2.17.12/127
b=CT:128
t=2873397496 2873404696
t=0 0
z=2882844526 -1h 2898848070 0
k=prompt
a=recvonly
m=audio 49170 RTP/AVP 0
i=voice
b=AS:64
k=prompt
m=video 51372 RTP/AVP 99
a=rtpmap:99 h263-1998/90000
""")
    sd = parse(text)
    assert sd.information.startswith("A Seminar")
    assert sd.emails == ["j.doe@example.com (Jane Doe)"]
    assert sd.phones == ["+1 617 555-6011"]
    assert sd.time_zones == "2882844526 -1h 2898848070 0"
    assert len(sd.timing) == 2
    assert sd.direction == "recvonly"
    assert sd.media[0].direction == "sendrecv"  # no media-level attribute
    assert sd.direction_of(sd.media[0]) == "recvonly"  # inherited from session level
    assert sd.media[1].rtpmap(99) == ("h263-1998", 90000, 1)
    assert sd.media[1].rtpmap(0) is None  # static audio defaults apply to audio only
    assert sd.serialize() == text


def test_optional_session_lines_in_unusual_order_are_accepted_and_reordered() -> None:
    sd = parse("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\na=x\nc=IN IP4 1.2.3.4\nb=AS:1\n")
    assert sd.serialize() == crlf("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nb=AS:1\nt=0 0\na=x")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9", RtcpAttribute(9)),
        ("53020 IN IP4 126.16.64.4", RtcpAttribute(53020, "IN", "IP4", "126.16.64.4")),
        ("53020 IN IP6 2001:2345:6789:ABCD:EF01:2345:6789:ABCD",
         RtcpAttribute(53020, "IN", "IP6", "2001:2345:6789:ABCD:EF01:2345:6789:ABCD")),
    ],
)
def test_rtcp_attribute(value: str, expected: RtcpAttribute) -> None:
    assert RtcpAttribute.parse(value) == expected
    assert RtcpAttribute.parse(expected.serialize()) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
         Extmap(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level")),
        ("3/sendonly urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on",
         Extmap(3, "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "sendonly", "vad=on")),
        ("200 urn:example:two-byte a b  c", Extmap(200, "urn:example:two-byte", None, "a b  c")),
        ("4096 urn:example:remap-me", Extmap(4096, "urn:example:remap-me")),
    ],
)
def test_extmap(value: str, expected: Extmap) -> None:
    assert Extmap.parse(value) == expected
    assert Extmap.parse(expected.serialize()) == expected


def test_fmtp_tolerates_spaces_and_bare_items() -> None:
    sd = parse("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\nm=audio 1 RTP/AVP 96\n"
               "a=rtpmap:96 opus/48000/2\na=fmtp:96 minptime=10; useinbandfec=1 ;stereo=0;;\n")
    assert sd.media[0].fmtp(96) == {"minptime": "10", "useinbandfec": "1", "stereo": "0"}
    assert sd.media[0].fmtp(97) == {}


def test_ptime_accepts_decimal_form() -> None:
    sd = parse("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\nm=audio 1 RTP/AVP 0\n"
               "a=ptime:30.0\n")
    assert sd.media[0].ptime == 30


def test_attribute_list_lookups() -> None:
    media = MediaDescription(attributes=[("a", "1"), ("flag", None), ("a", "2")])
    assert media.attributes("a") == ["1", "2"]
    assert media.attributes("missing") == []
    assert media.attribute("a") == "1"
    assert media.attribute("flag") is None and media.has_attribute("flag")
    assert not media.has_attribute("missing")
    media.attributes = [("b", "x")]  # reassigning a plain list keeps it callable
    assert media.attributes("b") == ["x"]
    media.add_attribute("sendonly")
    assert media.direction == "sendonly"


def test_crypto_property_parses_lines() -> None:
    sd = parse("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\nm=audio 1 RTP/SAVP 0\n"
               "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\n")
    (attr,) = sd.media[0].crypto
    assert attr.tag == 1 and attr.suite == "AES_CM_128_HMAC_SHA1_80" and len(attr.key) == 30


def test_trailing_blank_lines_and_missing_final_newline() -> None:
    assert parse(FFMPEG_OPUS + "\r\n\r\n") == parse(FFMPEG_OPUS)
    assert parse(FFMPEG_OPUS.rstrip("\r\n")) == parse(FFMPEG_OPUS)


def test_serialize_defaults() -> None:
    sd = SessionDescription(name="", connection=Connection("IP4", "10.0.0.1"),
                            media=[MediaDescription("audio", 4000, "RTP/AVP", [0])])
    assert sd.serialize() == crlf("v=0\no=- 0 0 IN IP4 127.0.0.1\ns= \nc=IN IP4 10.0.0.1\nt=0 0\n"
                                  "m=audio 4000 RTP/AVP 0")


@pytest.mark.parametrize(
    "field_setter",
    [
        lambda sd: setattr(sd, "name", "evil\r\na=injected"),
        lambda sd: sd.media[0].add_attribute("x", "1\nb=2"),
        lambda sd: sd.media[0].add_attribute("bad name", "1"),
    ],
)
def test_serialize_refuses_line_injection(field_setter) -> None:
    sd = parse(FFMPEG_OPUS)
    field_setter(sd)
    with pytest.raises(SdpError):
        sd.serialize()


BASE = "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\n"
AUDIO = "m=audio 4000 RTP/AVP 0\n"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("\r\n\r\n", id="only-blank-lines"),
        pytest.param("o=- 1 1 IN IP4 1.2.3.4\nv=0\ns=-\nt=0 0\n", id="o-before-v"),
        pytest.param("v=0\ns=-\no=- 1 1 IN IP4 1.2.3.4\nt=0 0\n", id="s-before-o"),
        pytest.param("v=0\no=- 1 1 IN IP4 1.2.3.4\nt=0 0\n", id="missing-s"),
        pytest.param("v=1\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\n", id="version-1"),
        pytest.param("v=x\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\n", id="version-not-number"),
        pytest.param("v=0\no=- 1 1 IN IP4\ns=-\nt=0 0\n", id="o-five-fields"),
        pytest.param("v=0\no=- x 1 IN IP4 1.2.3.4\ns=-\nt=0 0\n", id="o-sess-id-not-number"),
        pytest.param("v=0\no=- 99999999999999999999 1 IN IP4 1.2.3.4\ns=-\nt=0 0\n", id="o-sess-id-over-63-bits"),
        pytest.param("v=0\no=- 1 1 ATM NSAP 1.2.3.4\ns=-\nt=0 0\n", id="o-nettype"),
        pytest.param("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\n", id="missing-t"),
        pytest.param("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\n" + AUDIO + "t=0 0\n", id="t-after-m"),
        pytest.param(BASE + "t=0\n", id="t-one-field"),
        pytest.param(BASE + "t=-1 0\n", id="t-negative"),
        pytest.param("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nr=7d 1h 0\nt=0 0\n", id="r-before-t"),
        pytest.param(BASE + "v=0\n", id="duplicate-v"),
        pytest.param(BASE + "s=again\n", id="duplicate-s"),
        pytest.param(BASE + "c=IN IP4 5.6.7.8\n", id="duplicate-session-c"),
        pytest.param(BASE + AUDIO + "c=IN IP4 5.6.7.8\nc=IN IP4 5.6.7.9\n", id="duplicate-media-c"),
        pytest.param(BASE + "x=unknown\n", id="unknown-type-letter"),
        pytest.param(BASE + "V=0\n", id="uppercase-type"),
        pytest.param(BASE + "a = rtcp-mux\n", id="space-before-equals"),
        pytest.param(BASE + "just text\n", id="no-equals"),
        pytest.param(BASE + "a=x\rb\n", id="stray-cr"),
        pytest.param(BASE + "a=x\x00\n", id="nul"),
        pytest.param(BASE + AUDIO + "u=http://x\n", id="u-in-media"),
        pytest.param("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\n" + AUDIO, id="no-connection-anywhere"),
        pytest.param(BASE.replace("1.2.3.4\nt", "999.2.3.4\nt"), id="c-bad-ipv4"),
        pytest.param(BASE.replace("c=IN IP4 1.2.3.4", "c=IN IP6 1.2.3.4"), id="c-ipv4-as-ip6"),
        pytest.param(BASE.replace("c=IN IP4 1.2.3.4", "c=IN IP6 2001:db8::g"), id="c-bad-ipv6"),
        pytest.param(BASE.replace("c=IN IP4 1.2.3.4", "c=IN IP4"), id="c-two-fields"),
        pytest.param(BASE.replace("c=IN IP4 1.2.3.4", "c=IN IPX 1.2.3.4"), id="c-addrtype"),
        pytest.param(BASE.replace("c=IN IP4 1.2.3.4", "c=IN IP4 224.0.0.1/300"), id="c-ttl-range"),
        pytest.param(BASE.replace("c=IN IP4 1.2.3.4", "c=IN IP4 224.0.0.1/1/2/3"), id="c-too-many-slashes"),
        pytest.param(BASE + "b=AS\n", id="b-no-colon"),
        pytest.param(BASE + "b=AS:fast\n", id="b-not-number"),
        pytest.param(BASE + "m=audio 70000 RTP/AVP 0\n", id="m-port-range"),
        pytest.param(BASE + "m=audio 4000/0 RTP/AVP 0\n", id="m-port-count-zero"),
        pytest.param(BASE + "m=audio 4000 RTP/AVP 128\n", id="m-pt-128"),
        pytest.param(BASE + "m=audio 4000 RTP/AVP opus\n", id="m-pt-not-number"),
        pytest.param(BASE + "m=audio 4000 RTP/AVP\n", id="m-no-format"),
        pytest.param(BASE + "m=audio four RTP/AVP 0\n", id="m-port-not-number"),
        pytest.param(BASE + "m=audio 4000 RTP//AVP 0\n", id="m-bad-proto"),
        pytest.param(BASE + AUDIO + "a=rtpmap:0 PCMU\n", id="rtpmap-no-clock"),
        pytest.param(BASE + AUDIO + "a=rtpmap:200 PCMU/8000\n", id="rtpmap-pt-range"),
        pytest.param(BASE + AUDIO + "a=rtpmap:0 PCMU/0\n", id="rtpmap-zero-clock"),
        pytest.param(BASE + AUDIO + "a=rtpmap:x PCMU/8000\n", id="rtpmap-pt-not-number"),
        pytest.param(BASE + AUDIO + "a=fmtp:\n", id="fmtp-empty"),
        pytest.param(BASE + AUDIO + "a=ptime:soon\n", id="ptime-not-number"),
        pytest.param(BASE + AUDIO + "a=ptime:0\n", id="ptime-zero"),
        pytest.param(BASE + AUDIO + "a=rtcp:99999\n", id="rtcp-port-range"),
        pytest.param(BASE + AUDIO + "a=rtcp:9 IN IP4\n", id="rtcp-partial-address"),
        pytest.param(BASE + AUDIO + "a=extmap:0 urn:x\n", id="extmap-id-zero"),
        pytest.param(BASE + AUDIO + "a=extmap:1/sideways urn:x\n", id="extmap-direction"),
        pytest.param(BASE + AUDIO + "a=extmap:1\n", id="extmap-no-uri"),
        pytest.param(BASE + AUDIO + "a=sendonly\na=recvonly\n", id="conflicting-directions"),
        pytest.param(BASE + "a=inactive\na=sendrecv\n", id="conflicting-session-directions"),
        pytest.param(BASE + AUDIO + "a=sendrecv:yes\n", id="direction-with-value"),
        pytest.param(BASE + AUDIO + "a=bad name:1\n", id="attribute-name-not-token"),
        pytest.param(BASE + AUDIO + "a=\n", id="attribute-empty"),
    ],
)
def test_malformed_sdp_raises_sdp_error(text: str) -> None:
    with pytest.raises(SdpError):
        parse(text)


def test_non_string_input_raises_sdp_error() -> None:
    with pytest.raises(SdpError):
        parse(FFMPEG_OPUS.encode())  # type: ignore[arg-type]


def test_error_names_the_line() -> None:
    with pytest.raises(SdpError) as info:
        parse(BASE + AUDIO + "a=rtpmap:0 PCMU\n")
    assert info.value.line == 7
    assert str(info.value).startswith("line 7:")


def test_unknown_attributes_are_kept_in_order() -> None:
    sd = parse(BASE + AUDIO + "a=x-vendor:{json: [1, 2]}\na=zzz\na=label:1\n")
    assert sd.media[0].attributes == [("x-vendor", "{json: [1, 2]}"), ("zzz", None), ("label", "1")]


def test_errors_are_value_errors() -> None:
    assert issubclass(SdpError, ValueError)


# ---------------------------------------------------------------- properties

LINE_TEXT = st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=30)
TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-._!#$%&'*+^`{|}~", min_size=1, max_size=12)
INTERPRETED = {"rtpmap", "fmtp", "ptime", "maxptime", "rtcp", "extmap",
               "sendrecv", "sendonly", "recvonly", "inactive"}
IP4 = st.ip_addresses(v=4).map(str)
IP6 = st.ip_addresses(v=6).map(str)


@st.composite
def connections(draw: st.DrawFn) -> Connection:
    if draw(st.booleans()):
        return Connection("IP4", draw(IP4), ttl=draw(st.none() | st.integers(0, 255)),
                          count=None)
    return Connection("IP6", draw(IP6), count=draw(st.none() | st.integers(1, 16)))


@st.composite
def attribute_lists(draw: st.DrawFn, *, media: bool) -> list[tuple[str, str | None]]:
    attrs = draw(st.lists(
        st.tuples(TOKEN.filter(lambda name: name not in INTERPRETED), st.none() | LINE_TEXT),
        max_size=5,
    ))
    known = [
        st.builds(lambda i, d, u: ("extmap", Extmap(i, u, d).serialize()), st.integers(1, 255),
                  st.none() | st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]),
                  TOKEN),
    ]
    if media:
        known += [
            st.builds(lambda pt, enc, clock, ch: ("rtpmap", f"{pt} {enc}/{clock}" + (f"/{ch}" if ch else "")),
                      st.integers(0, 127), st.text("abcdefgPCMUopus-", min_size=1, max_size=8),
                      st.integers(1, 96000), st.none() | st.integers(1, 8)),
            st.builds(lambda pt, kv: ("fmtp", f"{pt} " + ";".join(f"{k}={v}" for k, v in kv)),
                      st.integers(0, 127), st.lists(st.tuples(TOKEN, TOKEN), max_size=3)),
            st.builds(lambda ms: ("ptime", str(ms)), st.integers(1, 1000)),
            st.builds(lambda port: ("rtcp", str(port)), st.integers(0, 65535)),
            st.just(("rtcp-mux", None)),
            st.just(("crypto", "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")),
        ]
    for _ in range(draw(st.integers(0, 4))):
        attrs.insert(draw(st.integers(0, len(attrs))), draw(st.one_of(known)))
    direction = draw(st.none() | st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]))
    if direction:
        attrs.insert(draw(st.integers(0, len(attrs))), (direction, None))
    return attrs


@st.composite
def media_descriptions(draw: st.DrawFn, *, need_connection: bool) -> MediaDescription:
    proto = draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "RTP/AVPF", "UDP/TLS/RTP/SAVPF",
                                  "UDP/DTLS/SCTP", "TCP/MSRP"]))
    if "RTP" in proto.split("/"):
        formats = draw(st.lists(st.integers(0, 127), min_size=1, max_size=6))
    else:
        formats = draw(st.lists(TOKEN, min_size=1, max_size=3))
    return MediaDescription(
        media=draw(st.sampled_from(["audio", "video", "application", "text"]) | TOKEN),
        port=draw(st.integers(0, 65535)),
        port_count=draw(st.integers(1, 4)),
        proto=proto,
        formats=formats,
        information=draw(st.none() | LINE_TEXT),
        connection=draw(connections()) if need_connection else draw(st.none() | connections()),
        bandwidths=draw(st.lists(st.tuples(TOKEN, st.integers(0, 10**9)), max_size=2)),
        encryption_key=draw(st.none() | LINE_TEXT),
        attributes=draw(attribute_lists(media=True)),
    )


@st.composite
def session_descriptions(draw: st.DrawFn) -> SessionDescription:
    connection = draw(st.none() | connections())
    addrtype, address = draw(st.sampled_from(["IP4", "IP6"]).flatmap(
        lambda kind: st.tuples(st.just(kind), IP4 if kind == "IP4" else IP6)))
    return SessionDescription(
        origin=Origin(draw(TOKEN), draw(st.integers(0, 2**63 - 1)), draw(st.integers(0, 2**63 - 1)),
                      "IN", addrtype, address),
        name=draw(LINE_TEXT.filter(bool)),
        information=draw(st.none() | LINE_TEXT),
        uri=draw(st.none() | LINE_TEXT),
        emails=draw(st.lists(LINE_TEXT, max_size=2)),
        phones=draw(st.lists(LINE_TEXT, max_size=2)),
        connection=connection,
        bandwidths=draw(st.lists(st.tuples(TOKEN, st.integers(0, 10**9)), max_size=2)),
        timing=draw(st.lists(st.builds(Timing, st.integers(0, 2**40), st.integers(0, 2**40),
                                       st.lists(LINE_TEXT, max_size=2)), min_size=1, max_size=3)),
        time_zones=draw(st.none() | LINE_TEXT),
        encryption_key=draw(st.none() | LINE_TEXT),
        attributes=draw(attribute_lists(media=False)),
        media=draw(st.lists(media_descriptions(need_connection=connection is None), max_size=4)),
    )


@given(session_descriptions())
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_parse_serialize_round_trip(sd: SessionDescription) -> None:
    text = sd.serialize()
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    assert parse(text) == sd


def _exercise(sd: SessionDescription) -> None:
    """Every helper on a parsed description either works or raises SdpError."""
    _ = sd.direction, sd.extmaps
    for media in sd.media:
        sd.direction_of(media)
        sd.connection_of(media)
        for fmt in media.formats:
            if isinstance(fmt, int):
                media.rtpmap(fmt)
            media.fmtp(fmt)
        _ = media.ptime, media.rtcp, media.rtcp_mux, media.extmaps, media.direction
        with contextlib.suppress(SdpError):
            _ = media.crypto
    assert parse(sd.serialize()) == sd


@given(st.text(max_size=400))
@settings(max_examples=400)
def test_parse_arbitrary_text_raises_only_sdp_error(text: str) -> None:
    try:
        sd = parse(text)
    except SdpError:
        return
    _exercise(sd)


SDP_LINE = st.builds(lambda kind, value: f"{kind}={value}", st.sampled_from(list("vosiuepcbtrzkamx")),
                     st.one_of(LINE_TEXT, st.sampled_from([
                         "0", "- 1 1 IN IP4 1.2.3.4", "IN IP4 1.2.3.4", "IN IP6 ::1", "0 0",
                         "audio 4000 RTP/AVP 0 8 96", "rtpmap:96 opus/48000/2", "fmtp:96 a=b",
                         "rtcp:9 IN IP4 0.0.0.0", "extmap:1/sendonly urn:x vad=on", "sendonly",
                         "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "ptime:20", "AS:64",
                     ])))


@given(st.lists(SDP_LINE, max_size=12), st.sampled_from(["\r\n", "\n"]), st.booleans())
@settings(max_examples=400)
def test_parse_sdp_shaped_text_raises_only_sdp_error(lines: list[str], eol: str, prefix: bool) -> None:
    head = ["v=0", "o=- 1 1 IN IP4 1.2.3.4", "s=-", "c=IN IP4 1.2.3.4", "t=0 0"] if prefix else []
    try:
        sd = parse(eol.join(head + lines))
    except SdpError:
        return
    _exercise(sd)


@given(st.data())
@settings(max_examples=300)
def test_mutated_chrome_offer_raises_only_sdp_error(data: st.DataObject) -> None:
    lines = CHROME_OFFER.split("\r\n")[:-1]
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["delete", "duplicate", "mangle", "truncate"]))
        if action == "delete" and len(lines) > 1:
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, lines[index])
        elif action == "mangle":
            lines[index] = lines[index][:2] + data.draw(LINE_TEXT)
        else:
            lines[index] = lines[index][: data.draw(st.integers(0, len(lines[index])))]
    try:
        sd = parse("\r\n".join(lines))
    except SdpError:
        return
    _exercise(sd)
