"""pytest-benchmark of the WebRTC leg's own work: one DTLS-SRTP handshake (both sides, in memory)
and one ICE connectivity check answered (parse, short-term integrity, response with integrity).

    python -m pytest bench/test_bench_webrtc.py -q --benchmark-only

Correctness assertions only, never timing. The per-engine-core handshake rate, handshake p50/p99
over UDP and the WebRTC-vs-SDES per-packet comparison are `bench/webrtc_dtls.py` and
`bench/webrtc_packet_cost.py`.
"""
from __future__ import annotations

import secrets

from mixer.legs.dtls import DtlsCertificate, DtlsSrtpTransport
from mixer.legs.ice import IceCredentials, IceLiteAgent
from mixer.turn import stun

SERVER, CLIENT = DtlsCertificate.generate(), DtlsCertificate.generate()
PROFILE = ("SRTP_AES128_CM_SHA1_80",)


def _handshake() -> tuple[DtlsSrtpTransport, DtlsSrtpTransport]:
    to_server: list[bytes] = []
    to_client: list[bytes] = []
    server = DtlsSrtpTransport(SERVER, server=True, send=to_client.append, profiles=PROFILE,
                               remote_fingerprints=[("sha-256", CLIENT.fingerprint)])
    client = DtlsSrtpTransport(CLIENT, server=False, send=to_server.append, profiles=PROFILE,
                               remote_fingerprints=[("sha-256", SERVER.fingerprint)])
    server.start()
    client.start()
    while to_server or to_client:
        while to_server:
            server.receive(to_server.pop(0))
        while to_client:
            client.receive(to_client.pop(0))
    return server, client


def test_dtls_srtp_handshake_pair(benchmark) -> None:
    server, client = benchmark(_handshake)
    assert server.state == client.state == "connected"
    assert server.keys.local_key == client.keys.remote_key


def test_ice_check_answered(benchmark) -> None:
    local, remote = IceCredentials.generate(), IceCredentials.generate()
    agent = IceLiteAgent(local, remote)
    request = stun.build(stun.BINDING, stun.REQUEST, secrets.token_bytes(12),
                         [(stun.USERNAME, f"{local.ufrag}:{remote.ufrag}".encode()),
                          (stun.PRIORITY, b"\x6e\x00\x01\xff"), (stun.ICE_CONTROLLING, bytes(8)),
                          (stun.USE_CANDIDATE, b"")], key=local.pwd.encode())
    response = benchmark(agent.receive, request, ("192.0.2.1", 5000), 0.0)
    assert stun.parse(response).cls == stun.SUCCESS
