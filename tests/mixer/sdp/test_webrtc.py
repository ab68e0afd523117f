"""WebRTC answers (JSEP, BUNDLE, ICE-lite, DTLS) to offers as Chromium writes them."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mixer.sdp import SdpError, parse
from mixer.sdp.offer_answer import SdpNotAcceptable
from mixer.sdp.webrtc import (
    DtlsFingerprint, IceParameters, MID_URI, answer_webrtc, candidate_priority, is_webrtc_offer,
)

# Chromium 156's offer for one sendrecv audio transceiver plus `slots` recvonly ones (as captured,
# candidates are mDNS names) and a video m-line.
def chrome_offer(slots: int = 3, video: bool = False, setup: str = "actpass", mux: bool = True,
                 ice: bool = True, fingerprint: bool = True) -> str:
    mids = [str(i) for i in range(1 + slots + (1 if video else 0))]
    lines = ["v=0", "o=- 6751913301455396347 2 IN IP4 127.0.0.1", "s=-", "t=0 0",
             f"a=group:BUNDLE {' '.join(mids)}", "a=extmap-allow-mixed",
             "a=msid-semantic: WMS a955371a"]
    for i in range(1 + slots):
        lines += [
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126", "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=candidate:486190503 1 udp 2113937151 40ca2dda-a25f-4a6f-aff6-11e654a6308b.local 60161 typ host generation 0 network-cost 999",
        ]
        if ice:
            lines += ["a=ice-ufrag:grVJ", "a=ice-pwd:zIKcGNTVP/GUyyXYg8ARRKQf"]
        lines += ["a=ice-options:trickle"]
        if fingerprint:
            lines += ["a=fingerprint:sha-256 74:3F:2F:42:6E:DF:19:1F:E5:72:79:9D:CF:86:E8:78:B3:89:F6:6C:04:4D:6F:0F:3B:C5:B6:D8:64:57:08:FE"]
        lines += [f"a=setup:{setup}", f"a=mid:{i}",
                  "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
                  "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
                  "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
                  f"a=extmap:4 {MID_URI}", "a=sendrecv" if i == 0 else "a=recvonly"]
        if i == 0:
            lines += ["a=msid:a955371a b5d961c8"]
        if mux:
            lines += ["a=rtcp-mux"]
        lines += ["a=rtcp-rsize", "a=rtpmap:111 opus/48000/2", "a=rtcp-fb:111 transport-cc",
                  "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtpmap:63 red/48000/2",
                  "a=fmtp:63 111/111", "a=rtpmap:9 G722/8000", "a=rtpmap:0 PCMU/8000",
                  "a=rtpmap:8 PCMA/8000", "a=rtpmap:13 CN/8000", "a=rtpmap:110 telephone-event/48000",
                  "a=rtpmap:126 telephone-event/8000"]
        if i == 0:
            lines += ["a=ssrc:2808126706 cname:OZXsOJaTfi/OLwk0"]
    if video:
        lines += ["m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "a=ice-ufrag:grVJ",
                  "a=ice-pwd:zIKcGNTVP/GUyyXYg8ARRKQf", f"a=mid:{mids[-1]}", "a=sendrecv",
                  "a=rtcp-mux", "a=rtpmap:96 VP8/90000"]
    return "\r\n".join(lines) + "\r\n"


LOCAL_ICE = IceParameters("EnGi", "enginepasswordenginepa")
FINGERPRINT = DtlsFingerprint("sha-256", ":".join(["AB"] * 32))


def _answer(offer: str, **kwargs):
    return answer_webrtc(offer, addresses=kwargs.pop("addresses", ["192.0.2.1"]), local_port=40000,
                         local_ice=LOCAL_ICE, local_fingerprint=FINGERPRINT, **kwargs)


def test_mcu_answer_is_ice_lite_with_one_accepted_audio_m_line() -> None:
    answer = _answer(chrome_offer(slots=0))
    sdp = parse(answer.sdp)
    assert sdp.has_attribute("ice-lite") and sdp.attribute("group") == "BUNDLE 0"
    media = sdp.media[0]
    assert media.port == 40000 and media.proto == "UDP/TLS/RTP/SAVPF"
    assert media.formats == [111, 110]  # opus and its telephone-event; no RED, no CN
    assert media.attribute("setup") == "passive" and media.attribute("mid") == "0"
    assert media.attribute("fingerprint") == FINGERPRINT.serialize()
    assert media.attribute("ice-ufrag") == "EnGi" and media.has_attribute("rtcp-mux")
    assert media.attribute("candidate") == f"1 1 udp {candidate_priority(0)} 192.0.2.1 40000 typ host"
    assert media.has_attribute("end-of-candidates") and media.direction == "sendrecv"
    uris = [e.uri for e in media.extmaps]
    assert uris == ["urn:ietf:params:rtp-hdrext:ssrc-audio-level", MID_URI]  # no TWCC, no abs-send-time
    assert "transport-cc" not in answer.sdp and "rtcp-rsize" not in answer.sdp
    assert f"a=ssrc:{answer.local_ssrc} cname:" in answer.sdp
    assert answer.audio_level_ext_id == 1 and answer.mid_ext_id == 4
    assert answer.remote_ice == IceParameters("grVJ", "zIKcGNTVP/GUyyXYg8ARRKQf")
    assert answer.dtls_server and answer.main_sends and answer.slot_ssrcs == []
    assert answer.fmtp == {"minptime": "10", "useinbandfec": "1"}


def test_mcu_rejects_recvonly_extras_and_video_with_port_0_keeping_mids() -> None:
    sdp = parse(_answer(chrome_offer(slots=2, video=True)).sdp)
    assert [m.port for m in sdp.media] == [40000, 0, 0, 0]
    assert [m.attribute("mid") for m in sdp.media] == ["0", "1", "2", "3"]
    assert sdp.attribute("group") == "BUNDLE 0"


def test_sfu_answer_maps_each_recvonly_m_line_to_one_slot() -> None:
    answer = _answer(chrome_offer(slots=3), slots=3)
    sdp = parse(answer.sdp)
    assert sdp.attribute("group") == "BUNDLE 0 1 2 3"
    assert [m.direction for m in sdp.media] == ["recvonly", "sendonly", "sendonly", "sendonly"]
    assert all(m.port == 40000 for m in sdp.media)
    assert len(answer.slot_ssrcs) == 3 and answer.slot_mids == ["1", "2", "3"]
    for media, ssrc in zip(sdp.media[1:], answer.slot_ssrcs):
        ssrcs = {int(v.split()[0]) for v in media.attributes("ssrc")}
        assert ssrcs == {ssrc} and media.attribute("msid") is not None
    assert not answer.main_sends


def test_sfu_answer_with_fewer_slots_than_m_lines_rejects_the_rest() -> None:
    answer = _answer(chrome_offer(slots=4), slots=2)
    assert [m.port for m in parse(answer.sdp).media] == [40000, 40000, 40000, 0, 0]
    assert len(answer.slot_ssrcs) == 2


def test_sfu_client_with_one_m_line_gets_slot_0_on_it() -> None:
    answer = _answer(chrome_offer(slots=0), slots=3)
    media = parse(answer.sdp).media[0]
    assert media.direction == "sendrecv" and len(answer.slot_ssrcs) == 1
    assert f"a=ssrc:{answer.slot_ssrcs[0]} cname:" in answer.sdp
    assert not answer.main_sends


def test_reoffer_keeps_ssrcs_when_given() -> None:
    first = _answer(chrome_offer(slots=3), slots=3)
    again = _answer(chrome_offer(slots=3), slots=3, ssrc=first.local_ssrc, cname=first.cname,
                    slot_ssrcs=first.slot_ssrcs)
    assert again.slot_ssrcs == first.slot_ssrcs and again.local_ssrc == first.local_ssrc


@pytest.mark.parametrize("setup, ours, server", [("actpass", "passive", True),
                                                 ("active", "passive", True),
                                                 ("passive", "active", False)])
def test_dtls_role_follows_rfc_5763(setup, ours, server) -> None:
    answer = _answer(chrome_offer(slots=0, setup=setup))
    assert parse(answer.sdp).media[0].attribute("setup") == ours and answer.dtls_server is server


@pytest.mark.parametrize("offer, code", [
    (chrome_offer(slots=0, mux=False), "rtcp_mux_required"),
    (chrome_offer(slots=0, ice=False), "ice_required"),
    (chrome_offer(slots=0, fingerprint=False), "fingerprint_required"),
    (chrome_offer(slots=0, setup="holdconn"), "bad_setup"),
    (chrome_offer(slots=0).replace("zIKcGNTVP/GUyyXYg8ARRKQf", "short"), "bad_ice"),
    (chrome_offer(slots=0).replace("74:3F:2F", "ZZ:3F:2F"), "bad_fingerprint"),
    (chrome_offer(slots=0).replace("111 63 9 0 8 13 110 126", "9 13"), "no_common_codec"),
])
def test_unacceptable_offers_name_the_reason(offer, code) -> None:
    with pytest.raises(SdpNotAcceptable) as error:
        _answer(offer)
    assert error.value.code == code


def test_candidates_for_every_advertised_address_in_order() -> None:
    answer = _answer(chrome_offer(slots=0), addresses=["203.0.113.9", "2001:db8::1"])
    candidates = parse(answer.sdp).media[0].attributes("candidate")
    assert [c.split()[4] for c in candidates] == ["203.0.113.9", "2001:db8::1"]
    assert int(candidates[0].split()[3]) > int(candidates[1].split()[3])
    assert parse(answer.sdp).connection.address == "203.0.113.9"


def test_is_webrtc_offer() -> None:
    assert is_webrtc_offer(parse(chrome_offer(slots=0)))
    plain = chrome_offer(slots=0).replace("UDP/TLS/RTP/SAVPF", "RTP/AVP")
    assert not is_webrtc_offer(parse(plain))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(chrome_offer(slots=2, video=True).split("\r\n")), max_size=60))
def test_any_shuffle_of_offer_lines_answers_or_raises_sdp_error(lines) -> None:
    text = "\r\n".join(["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"] + [l for l in lines if l and l[0] not in "vost"]) + "\r\n"
    try:
        answer = _answer(text, slots=2)
    except SdpError:
        return
    assert parse(answer.sdp).has_attribute("ice-lite")
