"""RFC 3264 answers for audio legs, and the offers simulated clients send."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixer.sdp import (
    AUDIO_LEVEL_URI,
    SdpError,
    SdpNotAcceptable,
    SessionDescription,
    answer_audio,
    offer_audio,
    parse,
    parse_crypto,
)


def crlf(text: str) -> str:
    return "\r\n".join(text.strip("\n").split("\n")) + "\r\n"


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

# ffmpeg's srtp:// output: RTP/AVP plus a=crypto (Opportunistic SRTP, RFC 8643).
FFMPEG_SRTP_PCMU = crlf("""
v=0
o=- 0 0 IN IP4 127.0.0.1
s=No Name
c=IN IP4 127.0.0.1
t=0 0
a=tool:libavformat LIBAVFORMAT_VERSION
m=audio 5006 RTP/AVP 0
b=AS:64
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:zRCZYsrK5vRahSgr1PKzMAwy2y7tNRfAr+TfUtm+
""")

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

CHROME_AUDIO_LINES = """
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
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
"""

# Chrome's real offer: DTLS-SRTP, which this engine does not do.
CHROME_DTLS_OFFER = crlf("""
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=msid-semantic: WMS 6a1d4bd2-0f0e-4c2b-9b4e-0ff4e8a7c1d3
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:EsAw
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F
a=setup:actpass
a=mid:0
""" + CHROME_AUDIO_LINES.strip("\n"))

# The same browser offer in its older SDES form (RTP/SAVPF + a=crypto), with a
# data channel section that must be rejected and a suite list we must pick from.
CHROME_SDES_OFFER = crlf("""
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=msid-semantic: WMS 6a1d4bd2-0f0e-4c2b-9b4e-0ff4e8a7c1d3
m=audio 54321 RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 203.0.113.7
a=rtcp:54322
a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLQ==
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^31
a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:zRCZYsrK5vRahSgr1PKzMAwy2y7tNRfAr+TfUtm+|2^31
""" + CHROME_AUDIO_LINES.strip("\n") + """
m=application 54321 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 203.0.113.7
a=sctp-port:5000
""")

LOCAL = {"local_ip": "10.0.0.1", "local_port": 40000}


def offer(media: str, *, session: str = "", connection: str = "c=IN IP4 198.51.100.20") -> str:
    return crlf(f"v=0\no=- 1 1 IN IP4 198.51.100.20\ns=-\n{connection}\nt=0 0\n{session}{media.strip()}")


# ------------------------------------------------------------------ accepted

def test_answer_ffmpeg_opus() -> None:
    answer = answer_audio(FFMPEG_OPUS, **LOCAL)
    assert (answer.codec, answer.payload_type, answer.clock_rate, answer.channels) == ("opus", 97, 48000, 2)
    assert answer.fmtp == {}
    assert answer.telephone_event_pt is None
    assert answer.remote_rtp == ("127.0.0.1", 5004)
    assert answer.remote_rtcp == ("127.0.0.1", 5005)  # RFC 3550: next port up
    assert not answer.rtcp_mux
    assert answer.ptime_ms == 20
    assert answer.direction == "sendrecv"
    assert answer.audio_level_ext_id is None
    assert answer.local_crypto is None and answer.remote_crypto is None

    sd = parse(answer.sdp)
    assert sd == answer.description
    assert sd.connection.address == "10.0.0.1"
    (audio,) = sd.media
    assert (audio.port, audio.proto, audio.formats) == (40000, "RTP/AVP", [97])
    assert audio.rtpmap(97) == ("opus", 48000, 2)
    assert audio.fmtp(97) == {"minptime": "10", "useinbandfec": "1"}
    assert audio.ptime == 20
    assert audio.attributes("sendrecv") == [None]
    assert not audio.rtcp_mux and audio.crypto == []
    assert answer.sdp.endswith("\r\n") and "\n" not in answer.sdp.replace("\r\n", "")


def test_answer_ffmpeg_opportunistic_srtp() -> None:
    answer = answer_audio(FFMPEG_SRTP_PCMU, **LOCAL, srtp_required=True)
    assert answer.codec == "PCMU" and answer.payload_type == 0
    assert answer.remote_crypto.key == base64.b64decode("zRCZYsrK5vRahSgr1PKzMAwy2y7tNRfAr+TfUtm+")
    assert answer.local_crypto.tag == 1 and answer.local_crypto.suite == "AES_CM_128_HMAC_SHA1_80"
    assert answer.local_crypto.key != answer.remote_crypto.key
    (audio,) = parse(answer.sdp).media
    assert audio.proto == "RTP/AVP"  # RFC 8643: the answer keeps the offered AVP profile
    assert audio.crypto == [answer.local_crypto]


def test_answer_sip_phone_g711_with_dtmf() -> None:
    answer = answer_audio(SIP_PHONE_OFFER, **LOCAL)
    assert (answer.codec, answer.payload_type, answer.clock_rate, answer.channels) == ("PCMU", 0, 8000, 1)
    assert answer.telephone_event_pt == 101
    assert answer.remote_rtp == ("192.168.1.50", 11780)
    assert answer.remote_rtcp == ("192.168.1.50", 11781)
    (audio,) = parse(answer.sdp).media
    assert audio.formats == [0, 101]
    assert audio.rtpmap(101) == ("telephone-event", 8000, 1)
    assert audio.fmtp(101) == {"0-15": ""}
    assert audio.fmtp(0) == {}


def test_answer_chrome_sdes_offer() -> None:
    answer = answer_audio(CHROME_SDES_OFFER, **LOCAL, srtp_required=True)
    assert (answer.codec, answer.payload_type) == ("opus", 111)
    assert answer.fmtp == {"minptime": "10", "useinbandfec": "1"}
    assert answer.telephone_event_pt == 110  # the /48000 one, matching Opus' clock
    assert answer.rtcp_mux and answer.remote_rtcp == answer.remote_rtp == ("203.0.113.7", 54321)
    assert answer.audio_level_ext_id == 1
    # First offered suite we support: tag 2 (tag 1 is AES-256, which we do not run).
    assert (answer.remote_crypto.tag, answer.remote_crypto.suite) == (2, "AES_CM_128_HMAC_SHA1_80")
    assert answer.remote_crypto.lifetime == 2**31
    assert (answer.local_crypto.tag, answer.local_crypto.suite) == (2, "AES_CM_128_HMAC_SHA1_80")

    sd = parse(answer.sdp)
    audio, data = sd.media
    assert (audio.proto, audio.formats) == ("RTP/SAVPF", [111, 110])
    assert audio.rtcp_mux
    assert [(e.id, e.uri) for e in audio.extmaps] == [(1, AUDIO_LEVEL_URI)]
    assert audio.crypto == [answer.local_crypto]
    assert not audio.has_attribute("ssrc") and not audio.has_attribute("rtcp-fb")
    # RFC 3264 section 6: the data channel is rejected but keeps proto and formats.
    assert (data.media, data.port, data.proto, data.formats) == (
        "application", 0, "UDP/DTLS/SCTP", ["webrtc-datachannel"])


def test_rtcp_attribute_sets_remote_rtcp_when_not_muxed() -> None:
    text = CHROME_SDES_OFFER.replace("a=rtcp-mux\r\n", "")
    answer = answer_audio(text, **LOCAL)
    assert not answer.rtcp_mux and answer.remote_rtcp == ("203.0.113.7", 54322)
    assert not parse(answer.sdp).media[0].rtcp_mux


def test_rtcp_attribute_with_its_own_address() -> None:
    answer = answer_audio(offer("m=audio 5000 RTP/AVP 0\na=rtcp:6001 IN IP4 198.51.100.99"), **LOCAL)
    assert answer.remote_rtcp == ("198.51.100.99", 6001)


def test_offerer_format_order_wins_over_our_preference() -> None:
    answer = answer_audio(offer("m=audio 5000 RTP/AVP 8 0 96\na=rtpmap:96 opus/48000/2"), **LOCAL)
    assert (answer.codec, answer.payload_type) == ("PCMA", 8)


def test_codecs_argument_limits_what_we_accept() -> None:
    text = offer("m=audio 5000 RTP/AVP 0 8 101\na=rtpmap:101 telephone-event/8000")
    assert answer_audio(text, **LOCAL, codecs=("pcma",)).codec == "PCMA"
    with pytest.raises(SdpNotAcceptable) as info:
        answer_audio(text, **LOCAL, codecs=("opus",))
    assert info.value.code == "no_common_codec"


def test_answer_keeps_offered_dynamic_payload_types() -> None:
    text = offer("m=audio 5000 RTP/AVP 96 97 98\na=rtpmap:96 OPUS/48000/2\n"
                 "a=fmtp:96 useinbandfec=0\na=rtpmap:97 telephone-event/8000\n"
                 "a=rtpmap:98 telephone-event/48000")
    answer = answer_audio(text, **LOCAL)
    assert (answer.codec, answer.payload_type, answer.telephone_event_pt) == ("opus", 96, 98)
    assert answer.fmtp == {"useinbandfec": "0"}
    audio = parse(answer.sdp).media[0]
    assert audio.formats == [96, 98]
    assert audio.rtpmap(96) == ("opus", 48000, 2)
    assert audio.fmtp(96) == {"minptime": "10", "useinbandfec": "1"}


def test_telephone_event_with_other_clock_rate_is_left_out() -> None:
    answer = answer_audio(offer("m=audio 5000 RTP/AVP 111 101\na=rtpmap:111 opus/48000/2\n"
                                "a=rtpmap:101 telephone-event/8000"), **LOCAL)
    assert answer.codec == "opus" and answer.telephone_event_pt is None
    assert parse(answer.sdp).media[0].formats == [111]


def test_g711_static_types_without_rtpmap() -> None:
    answer = answer_audio(offer("m=audio 5000 RTP/AVP 18 8"), **LOCAL)
    assert (answer.codec, answer.payload_type, answer.clock_rate) == ("PCMA", 8, 8000)
    assert parse(answer.sdp).media[0].rtpmap(8) == ("PCMA", 8000, 1)


def test_opus_without_channel_count_is_tolerated() -> None:
    answer = answer_audio(offer("m=audio 5000 RTP/AVP 96\na=rtpmap:96 opus/48000"), **LOCAL)
    assert answer.codec == "opus" and answer.channels == 2
    assert parse(answer.sdp).media[0].rtpmap(96) == ("opus", 48000, 2)


def test_offer_ptime_is_reported_and_mirrored_for_g711() -> None:
    """A G.711 peer asking for 30 ms gets 30 ms packets and an answer saying so (one ptime both
    ways: gear that follows the answer's ptime then sends what the engine expects); Opus and
    sizes the engine does not cut are answered with 20 ms."""
    answer = answer_audio(offer("m=audio 5000 RTP/AVP 0\na=ptime:30"), **LOCAL)
    assert (answer.ptime_ms, answer.send_ptime_ms) == (30, 30)
    assert parse(answer.sdp).media[0].ptime == 30
    odd = answer_audio(offer("m=audio 5000 RTP/AVP 0\na=ptime:25"), **LOCAL)
    assert (odd.ptime_ms, odd.send_ptime_ms, parse(odd.sdp).media[0].ptime) == (25, 20, 20)
    opus = answer_audio(offer("m=audio 5000 RTP/AVP 111\na=rtpmap:111 opus/48000/2\na=ptime:40"), **LOCAL)
    assert (opus.ptime_ms, opus.send_ptime_ms, parse(opus.sdp).media[0].ptime) == (40, 20, 20)


@pytest.mark.parametrize(
    ("offered", "answered"),
    [(None, "sendrecv"), ("sendrecv", "sendrecv"), ("sendonly", "recvonly"),
     ("recvonly", "sendonly"), ("inactive", "inactive")],
)
def test_direction_table(offered: str | None, answered: str) -> None:
    media = "m=audio 5000 RTP/AVP 0" + (f"\na={offered}" if offered else "")
    answer = answer_audio(offer(media), **LOCAL)
    assert answer.direction == answered
    audio = parse(answer.sdp).media[0]
    assert audio.direction == answered and audio.attributes(answered) == [None]


@pytest.mark.parametrize(("offered", "answered"), [("sendonly", "recvonly"), ("recvonly", "sendonly")])
def test_session_level_direction_applies_to_media(offered: str, answered: str) -> None:
    answer = answer_audio(offer("m=audio 5000 RTP/AVP 0", session=f"a={offered}\n"), **LOCAL)
    assert answer.direction == answered


def test_media_level_direction_overrides_session_level() -> None:
    answer = answer_audio(offer("m=audio 5000 RTP/AVP 0\na=sendonly", session="a=inactive\n"), **LOCAL)
    assert answer.direction == "recvonly"


def test_audio_level_extension_is_echoed_with_offered_id() -> None:
    text = offer(f"m=audio 5000 RTP/AVP 0\na=extmap:2 urn:example:other\n"
                 f"a=extmap:7/sendonly {AUDIO_LEVEL_URI} vad=on")
    answer = answer_audio(text, **LOCAL)
    assert answer.audio_level_ext_id == 7
    (extmap,) = parse(answer.sdp).media[0].extmaps
    assert (extmap.id, extmap.uri, extmap.direction) == (7, AUDIO_LEVEL_URI, "recvonly")


def test_audio_level_extension_needing_two_byte_header_is_not_echoed() -> None:
    answer = answer_audio(offer(f"m=audio 5000 RTP/AVP 0\na=extmap:20 {AUDIO_LEVEL_URI}"), **LOCAL)
    assert answer.audio_level_ext_id is None and parse(answer.sdp).media[0].extmaps == []


def test_ipv6_offer_and_ipv6_engine() -> None:
    text = offer("m=audio 5000 RTP/AVP 0", connection="c=IN IP6 2001:db8::20")
    answer = answer_audio(text, local_ip="2001:db8::1", local_port=40002)
    assert answer.remote_rtp == ("2001:db8::20", 5000)
    sd = parse(answer.sdp)
    assert (sd.origin.addrtype, sd.connection.addrtype, sd.connection.address) == ("IP6", "IP6", "2001:db8::1")


def test_media_level_connection_overrides_session_level() -> None:
    answer = answer_audio(offer("m=audio 5000 RTP/AVP 0\nc=IN IP4 192.0.2.77"), **LOCAL)
    assert answer.remote_rtp == ("192.0.2.77", 5000)


def test_later_media_lines_are_rejected_with_port_zero() -> None:
    text = offer("m=audio 5000 RTP/AVP 0\nm=video 5002 RTP/AVP 96\na=rtpmap:96 VP8/90000\n"
                 "m=audio 5004 RTP/AVP 8")
    answer = answer_audio(text, **LOCAL)
    sd = parse(answer.sdp)
    assert [(m.media, m.port, m.formats) for m in sd.media] == [
        ("audio", 40000, [0]), ("video", 0, [96]), ("audio", 0, [8])]
    assert answer.remote_rtp == ("198.51.100.20", 5000)


def test_disabled_first_audio_line_is_skipped_for_a_live_one() -> None:
    answer = answer_audio(offer("m=audio 0 RTP/AVP 0\nm=audio 5004 RTP/AVP 8"), **LOCAL)
    assert answer.payload_type == 8 and answer.remote_rtp[1] == 5004
    assert [m.port for m in parse(answer.sdp).media] == [0, 40000]


def test_answer_copies_offer_timing_and_uses_session_id() -> None:
    text = offer("m=audio 5000 RTP/AVP 0").replace("t=0 0", "t=3034423619 3042462419")
    answer = answer_audio(text, **LOCAL, session_id=424242)
    sd = parse(answer.sdp)
    assert (sd.timing[0].start, sd.timing[0].stop) == (3034423619, 3042462419)  # RFC 3264 section 6
    assert sd.origin.session_id == 424242
    assert answer_audio(text, **LOCAL).description.origin.session_id < 2**62


def test_answer_accepts_parsed_description() -> None:
    assert answer_audio(parse(SIP_PHONE_OFFER), **LOCAL).codec == "PCMU"


def test_crypto_with_unsupported_session_params_is_skipped() -> None:
    text = offer("m=audio 5000 RTP/SAVP 0\n"
                 "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP\n"
                 "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR WSH=64\n")
    answer = answer_audio(text, **LOCAL)
    assert (answer.remote_crypto.tag, answer.local_crypto.suite) == (2, "AES_CM_128_HMAC_SHA1_32")


def test_malformed_crypto_line_is_skipped_not_fatal() -> None:
    text = offer("m=audio 5000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:short\n"
                 "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4\n")
    answer = answer_audio(text, **LOCAL)
    assert answer.remote_crypto.tag == 2 and answer.remote_crypto.mki == (1, 4)


def test_avp_offer_with_unusable_crypto_falls_back_to_plain_rtp() -> None:
    text = offer("m=audio 5000 RTP/AVP 0\na=crypto:1 AES_256_CM_HMAC_SHA1_80 "
                 "inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLQ==")
    answer = answer_audio(text, **LOCAL)
    assert answer.local_crypto is None and not parse(answer.sdp).media[0].has_attribute("crypto")


def test_avpf_profile_is_kept() -> None:
    assert parse(answer_audio(offer("m=audio 5000 RTP/AVPF 0"), **LOCAL).sdp).media[0].proto == "RTP/AVPF"


# ------------------------------------------------------------------ refused

@pytest.mark.parametrize(
    ("text", "code"),
    [
        pytest.param(offer("m=video 5000 RTP/AVP 96\na=rtpmap:96 VP8/90000"), "no_audio", id="no-audio"),
        pytest.param(offer("").rstrip() + "\r\n", "no_audio", id="no-media-at-all"),
        pytest.param(offer("m=audio 5000 RTP/AVP 18 9 96\na=rtpmap:96 speex/16000"), "no_common_codec",
                     id="no-common-codec"),
        pytest.param(offer("m=audio 5000 RTP/AVP 0\na=rtpmap:0 PCMU/16000"), "no_common_codec",
                     id="pcmu-at-wrong-clock"),
        pytest.param(offer("m=audio 5000 RTP/AVP 96\na=rtpmap:96 speex/8000\nm=audio 5002 RTP/AVP 0"),
                     "no_common_codec", id="only-first-audio-line-counts"),
        pytest.param(offer("m=audio 5000 RTP/SAVP 0"), "no_supported_crypto", id="savp-without-crypto"),
        pytest.param(offer("m=audio 5000 RTP/SAVP 0\na=crypto:1 AES_256_CM_HMAC_SHA1_80 "
                           "inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLQ=="),
                     "no_supported_crypto", id="savp-with-only-unsupported-suite"),
        pytest.param(offer("m=audio 5000 RTP/SAVP 0\na=crypto:1 F8_128_HMAC_SHA1_80 "
                           "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"),
                     "no_supported_crypto", id="savp-with-f8"),
        pytest.param(offer("m=audio 0 RTP/AVP 0"), "audio_disabled", id="port-zero"),
        pytest.param(CHROME_DTLS_OFFER, "unsupported_transport", id="chrome-dtls-srtp"),
        pytest.param(offer("m=audio 5000 TCP/RTP/AVP 0"), "unsupported_transport", id="rtp-over-tcp"),
        pytest.param(offer("m=audio 5000 RTP/AVP 0", connection="c=IN IP4 media.example.com"), "bad_address",
                     id="fqdn-connection"),
        pytest.param(offer("m=audio 65535 RTP/AVP 0"), "bad_address", id="no-port-for-rtcp"),
    ],
)
def test_unacceptable_offers(text: str, code: str) -> None:
    with pytest.raises(SdpNotAcceptable) as info:
        answer_audio(text, **LOCAL)
    assert info.value.code == code
    assert isinstance(info.value, SdpError) and str(info.value)


@pytest.mark.parametrize("text", [FFMPEG_OPUS, SIP_PHONE_OFFER, offer("m=audio 5000 RTP/AVPF 0")])
def test_plain_offer_refused_when_srtp_required(text: str) -> None:
    with pytest.raises(SdpNotAcceptable) as info:
        answer_audio(text, **LOCAL, srtp_required=True)
    assert info.value.code == "srtp_required"


def test_no_common_codec_message_lists_both_sides() -> None:
    with pytest.raises(SdpNotAcceptable, match=r"no common codec.*G729.*PCMU"):
        answer_audio(offer("m=audio 5000 RTP/AVP 18"), **LOCAL)


@pytest.mark.parametrize("text", ["", "v=0\r\n", FFMPEG_OPUS.replace("v=0", "v=1")])
def test_malformed_offer_is_plain_sdp_error(text: str) -> None:
    with pytest.raises(SdpError) as info:
        answer_audio(text, **LOCAL)
    assert not isinstance(info.value, SdpNotAcceptable)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"local_ip": "engine.example.com", "local_port": 40000},
        {"local_ip": "10.0.0.1", "local_port": 0},
        {"local_ip": "10.0.0.1", "local_port": 70000},
        {"local_ip": "10.0.0.1", "local_port": 40000, "codecs": ("g729",)},
        {"local_ip": "10.0.0.1", "local_port": 40000, "codecs": ()},
        {"local_ip": "10.0.0.1", "local_port": 40000, "codecs": "opus"},
        {"local_ip": "10.0.0.1", "local_port": 40000, "session_id": -1},
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        answer_audio(FFMPEG_OPUS, **kwargs)


# ------------------------------------------------------------------ offers

def test_offer_audio_defaults() -> None:
    text, crypto = offer_audio(local_ip="127.0.0.1", local_port=4000, session_id=7)
    assert crypto is None
    sd = parse(text)
    assert sd.origin.session_id == 7 and sd.connection.address == "127.0.0.1"
    (audio,) = sd.media
    assert (audio.port, audio.proto, audio.formats) == (4000, "RTP/AVP", [111, 0, 8, 110, 101])
    assert audio.rtpmap(111) == ("opus", 48000, 2)
    assert audio.fmtp(111) == {"minptime": "10", "useinbandfec": "1"}
    assert audio.rtpmap(110) == ("telephone-event", 48000, 1)
    assert audio.rtpmap(101) == ("telephone-event", 8000, 1)
    assert audio.rtcp_mux and audio.ptime == 20 and audio.direction == "sendrecv"
    assert [(e.id, e.uri) for e in audio.extmaps] == [(1, AUDIO_LEVEL_URI)]


def test_offer_audio_srtp_carries_the_returned_key() -> None:
    text, crypto = offer_audio(local_ip="127.0.0.1", local_port=4000, srtp=True)
    (audio,) = parse(text).media
    assert audio.proto == "RTP/SAVP"
    assert audio.crypto == [crypto] and crypto.suite == "AES_CM_128_HMAC_SHA1_80" and crypto.tag == 1


def test_offer_audio_options() -> None:
    text, _ = offer_audio(local_ip="::1", local_port=4000, codecs=("PCMA",), rtcp_mux=False,
                          audio_level_ext_id=None)
    sd = parse(text)
    (audio,) = sd.media
    assert sd.connection.addrtype == "IP6"
    assert audio.formats == [8, 101]  # no Opus, so no telephone-event/48000
    assert not audio.rtcp_mux and audio.extmaps == []


def test_offer_audio_opus_only_has_wideband_dtmf_only() -> None:
    text, _ = offer_audio(local_ip="127.0.0.1", local_port=4000, codecs=("opus",))
    assert parse(text).media[0].formats == [111, 110]


@pytest.mark.parametrize(
    "kwargs",
    [{"audio_level_ext_id": 15}, {"audio_level_ext_id": 0}, {"codecs": ("speex",)}, {"local_port": -1},
     {"local_ip": "localhost"}],
)
def test_offer_audio_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        offer_audio(**({"local_ip": "127.0.0.1", "local_port": 4000} | kwargs))


@pytest.mark.parametrize("srtp", [False, True])
@pytest.mark.parametrize("codecs", [("opus", "PCMU", "PCMA"), ("PCMU", "PCMA"), ("PCMA", "opus")])
def test_offer_answer_loop(srtp: bool, codecs: tuple[str, ...]) -> None:
    text, client_key = offer_audio(local_ip="127.0.0.1", local_port=4000, codecs=codecs, srtp=srtp)
    answer = answer_audio(text, **LOCAL, srtp_required=srtp)
    assert answer.codec == codecs[0]
    assert answer.remote_rtp == answer.remote_rtcp == ("127.0.0.1", 4000)
    assert answer.audio_level_ext_id == 1
    assert answer.telephone_event_pt == (110 if codecs[0] == "opus" else 101)
    assert answer.remote_crypto == client_key
    if srtp:
        assert answer.local_crypto.key != client_key.key
        assert parse_crypto(parse(answer.sdp).media[0].attribute("crypto")) == answer.local_crypto
    # The client reads the answer with the same parser.
    (audio,) = parse(answer.sdp).media
    assert audio.formats[0] == answer.payload_type and audio.port == 40000


# ------------------------------------------------------------------ properties

@given(st.text(max_size=300))
@settings(max_examples=300)
def test_answer_arbitrary_text_raises_only_sdp_error(text: str) -> None:
    with contextlib.suppress(SdpError):
        answer_audio(text, **LOCAL)


OFFER_LINES = CHROME_SDES_OFFER.split("\r\n")[:-1]


@given(st.data())
@settings(max_examples=300)
def test_answer_mutated_offers_raises_only_sdp_error(data: st.DataObject) -> None:
    lines = list(OFFER_LINES)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["delete", "duplicate", "mangle", "swap"]))
        if action == "delete" and len(lines) > 1:
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, lines[index])
        elif action == "mangle":
            keep = data.draw(st.integers(2, max(2, len(lines[index]))))
            lines[index] = lines[index][:keep] + data.draw(st.text(max_size=12).filter(
                lambda s: "\n" not in s))
        else:
            other = data.draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
    try:
        answer = answer_audio("\r\n".join(lines), **LOCAL)
    except SdpError:
        return
    assert isinstance(parse(answer.sdp), SessionDescription)
    assert answer.codec in ("opus", "PCMU", "PCMA")


@given(
    codecs=st.lists(st.sampled_from(["opus", "PCMU", "PCMA"]), min_size=1, max_size=3, unique=True),
    srtp=st.booleans(),
    rtcp_mux=st.booleans(),
    ext_id=st.none() | st.integers(1, 14),
    port=st.integers(1, 65534),
    answer_codecs=st.lists(st.sampled_from(["opus", "PCMU", "PCMA"]), min_size=1, max_size=3, unique=True),
)
def test_our_offers_are_answered_by_our_answerer(codecs, srtp, rtcp_mux, ext_id, port, answer_codecs) -> None:
    text, _ = offer_audio(local_ip="127.0.0.1", local_port=port, codecs=tuple(codecs), srtp=srtp,
                          rtcp_mux=rtcp_mux, audio_level_ext_id=ext_id)
    common = [codec for codec in codecs if codec in answer_codecs]
    if not common:
        with pytest.raises(SdpNotAcceptable):
            answer_audio(text, **LOCAL, codecs=tuple(answer_codecs))
        return
    answer = answer_audio(text, **LOCAL, codecs=tuple(answer_codecs))
    assert answer.codec == common[0]
    assert answer.rtcp_mux == rtcp_mux
    assert answer.remote_rtcp == ("127.0.0.1", port if rtcp_mux else port + 1)
    assert answer.audio_level_ext_id == ext_id
    assert (answer.local_crypto is not None) == srtp
