"""Fuzz targets for what a WebRTC leg parses from the network: the RFC 7983 demux in front of a
live leg, ICE checks with short-term credentials, and DTLS records.

Bad input must be dropped and counted (or answered with a STUN error), never raised, and every
datagram must be accounted for.
"""
from __future__ import annotations

import socket

from mixer.legs import demux
from mixer.legs.dtls import DtlsCertificate, DtlsSrtpTransport, split_records
from mixer.legs.ice import IceCredentials, IceLiteAgent
from mixer.legs.webrtc import WebRtcLeg
from mixer.sdp.webrtc import DtlsFingerprint, IceParameters, answer_webrtc
from mixer.settings import EngineSettings
from mixer.turn import stun
from mixer.turn.errors import StunError
from tests.fuzz.registry import InvariantBroken, target

LOCAL = IceCredentials("FuZz", "fuzzpasswordfuzzpasswo")
REMOTE = IceCredentials("PeEr", "peerpasswordpeerpasswo")
PEER = ("192.0.2.5", 5000)


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise InvariantBroken(what)


def _check_request(use_candidate: bool = True) -> bytes:
    attributes = [(stun.USERNAME, f"{LOCAL.ufrag}:{REMOTE.ufrag}".encode()),
                  (stun.PRIORITY, b"\x6e\x00\x01\xff"), (stun.ICE_CONTROLLING, bytes(8))]
    if use_candidate:
        attributes.append((stun.USE_CANDIDATE, b""))
    return stun.build(stun.BINDING, stun.REQUEST, b"\x01" * 12, attributes, key=LOCAL.pwd.encode())


def _client_hello() -> bytes:
    hello: list[bytes] = []
    certificate = DtlsCertificate.generate()
    client = DtlsSrtpTransport(certificate, server=False,
                               remote_fingerprints=[("sha-256", certificate.fingerprint)],
                               send=hello.append)
    client.start()
    return hello[0]


def _seeds() -> list[bytes]:
    return [_check_request(), _check_request(False), _client_hello(),
            b"\x80\x6f" + bytes(10) + b"\xf8\xff\xfe", b"\x81\xc9\x00\x01" + bytes(4)]


@target("ice_check", "IceLiteAgent.receive: None or a STUN response that parses; no exception; "
        "validation only after a success", seeds=_seeds, max_len=1500)
def ice_check_target():
    def check(data: bytes) -> None:
        agent = IceLiteAgent(LOCAL, REMOTE)
        response = agent.receive(data, PEER, 0.0)
        if response is not None:
            message = stun.parse(response)  # our own answers must be well formed
            _check(message.cls in (stun.SUCCESS, stun.ERROR), "answered with a non-response")
            _check((message.cls == stun.SUCCESS) == agent.is_validated(PEER),
                   "validated without a success answer, or answered success without validating")
        else:
            _check(not agent.is_validated(PEER), "validated without answering")
        try:
            message = stun.parse(data)
        except StunError:
            return
        result = stun.check_short_term(message, LOCAL.ufrag, LOCAL.pwd)
        _check(result in (None, stun.BAD_REQUEST, stun.UNAUTHORIZED), "unexpected check result")
    return check


@target("dtls_records", "DtlsSrtpTransport.receive on a waiting server: no exception; "
        "split_records(x) rebuilds x when it frames it", seeds=_seeds, max_len=2048)
def dtls_records_target():
    certificate = DtlsCertificate.generate()

    def check(data: bytes) -> None:
        records = split_records(data)
        if records is not None:
            _check(b"".join(records) == data, "records do not rebuild the datagram")
        sent: list[bytes] = []
        server = DtlsSrtpTransport(certificate, server=True,
                                   remote_fingerprints=[("sha-256", certificate.fingerprint)],
                                   send=sent.append)
        server.start()
        server.receive(data)
        _check(server.state in ("connecting", "failed"), f"state {server.state} from one datagram")
        _check(server.malformed + (server.records_in > 0) + server.after_close >= (1 if data else 0)
               or server.records_in == 0, "a datagram went unaccounted")
    return check


@target("webrtc_demux", "WebRtcLeg datagram path (RFC 7983 demux, STUN, DTLS, SRTP) on any bytes "
        "from the validated peer and from a stranger: no exception; every datagram counted",
        seeds=_seeds, max_len=2048)
def webrtc_demux_target():
    settings = EngineSettings(max_packet_rate=10**9)
    certificate = DtlsCertificate.generate()
    offer = "\r\n".join([
        "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", f"a=ice-ufrag:{REMOTE.ufrag}",
        f"a=ice-pwd:{REMOTE.pwd}", f"a=fingerprint:sha-256 {certificate.fingerprint}",
        "a=setup:actpass", "a=mid:0", "a=rtcp-mux", "a=rtpmap:111 opus/48000/2", ""])
    answer = answer_webrtc(offer, addresses=["127.0.0.1"], local_port=9,
                           local_ice=IceParameters(LOCAL.ufrag, LOCAL.pwd),
                           local_fingerprint=DtlsFingerprint("sha-256", certificate.fingerprint))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    leg = WebRtcLeg("fuzz", answer, sock, settings, certificate, ("SRTP_AES128_CM_SHA1_80",))
    leg._on_datagram(_check_request(), PEER, False)  # the peer is validated and nominated
    _check(leg.ice.selected == PEER, "seed check did not nominate")
    stranger = ("198.51.100.1", 1)

    def counted() -> int:
        ice = leg.ice
        return (sum(leg.drops.values()) + ice.checks + ice.error_count + ice.indications
                + leg.dtls.datagrams_in + leg.packets_in + leg.nacks_in + leg.dtmf_packets)

    def check(data: bytes) -> None:
        for source in (PEER, stranger):
            before = counted()
            leg._on_datagram(data, source, False)
            # (the leg is never keyed here, so SRTP-range datagrams are counted as not_keyed)
            _check(counted() > before, f"a {demux.KIND_NAMES[demux.classify(data)]} datagram "
                   "went uncounted")
        if leg.ice.selected != PEER:  # a fuzzed check may nominate the stranger: put it back
            leg._on_datagram(_check_request(), PEER, False)
    return check

