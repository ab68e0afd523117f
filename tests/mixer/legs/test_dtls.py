"""DTLS-SRTP transports (pyOpenSSL over memory BIOs) talking to each other in memory: keys,
fingerprints, retransmission, record framing, and what an established association refuses."""
from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings, strategies as st

from mixer.legs.dtls import (
    DTLS_MTU, SRTP_PROFILES, DtlsCertificate, DtlsError, DtlsSrtpTransport, is_client_hello,
    pack_datagrams, parse_profiles, split_records,
)

SERVER_CERT = DtlsCertificate.generate()
CLIENT_CERT = DtlsCertificate.generate()


def _pair(*, server_profiles=("SRTP_AES128_CM_SHA1_80",), client_profiles=("SRTP_AES128_CM_SHA1_80",),
          claimed_client=CLIENT_CERT, drop=None, wire=None):
    """Server and client transports wired to each other through the loop (`drop(i, data)`: lose
    datagram i)."""
    loop = asyncio.get_running_loop()
    sent = [0]
    states = []

    def deliver(target):
        def send(data: bytes) -> None:
            index = sent[0]
            sent[0] += 1
            if wire is not None:
                wire.append(data)
            if drop is None or not drop(index, data):
                loop.call_soon(target[0].receive, data)
        return send
    server_box, client_box = [None], [None]
    server = DtlsSrtpTransport(SERVER_CERT, server=True,
                               remote_fingerprints=[("sha-256", claimed_client.fingerprint)],
                               send=deliver(client_box), on_state=states.append,
                               profiles=server_profiles)
    client = DtlsSrtpTransport(CLIENT_CERT, server=False,
                               remote_fingerprints=[("sha-256", SERVER_CERT.fingerprint)],
                               send=deliver(server_box), on_state=states.append,
                               profiles=client_profiles)
    server_box[0], client_box[0] = server, client
    return server, client, states


async def _until(predicate, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate() and loop.time() < deadline:
        await asyncio.sleep(0.005)


def test_handshake_exports_mirrored_srtp_keys() -> None:
    async def run():
        server, client, _ = _pair()
        server.start()
        client.start()
        await _until(lambda: server.state == client.state == "connected")
        return server, client
    server, client = asyncio.run(run())
    assert server.keys.local_key == client.keys.remote_key
    assert server.keys.remote_key == client.keys.local_key
    assert server.keys.suite == "AES_CM_128_HMAC_SHA1_80" and len(server.keys.local_key) == 30
    assert server.protocol == "DTLSv1.2" and server.handshake_ms is not None
    assert "local_key" not in repr(server.keys)


@pytest.mark.skipif("SRTP_AEAD_AES_128_GCM" not in SRTP_PROFILES, reason="libsrtp without GCM")
def test_the_servers_preference_picks_the_profile() -> None:
    async def run():
        server, client, _ = _pair(server_profiles=("SRTP_AEAD_AES_128_GCM", "SRTP_AES128_CM_SHA1_80"),
                                  client_profiles=("SRTP_AES128_CM_SHA1_80", "SRTP_AEAD_AES_128_GCM"))
        server.start()
        client.start()
        await _until(lambda: server.state == "connected")
        return server
    server = asyncio.run(run())
    assert server.keys.profile == "SRTP_AEAD_AES_128_GCM" and len(server.keys.local_key) == 28


def test_a_certificate_that_does_not_match_the_offer_fails_the_handshake() -> None:
    async def run():
        server, client, states = _pair(claimed_client=DtlsCertificate.generate())
        server.start()
        client.start()
        await _until(lambda: server.state == "failed" and client.state == "failed")
        return server, client
    server, client = asyncio.run(run())
    assert server.failure == "fingerprint_mismatch" and server.keys is None
    assert client.failure == "handshake_error"  # it got our bad_certificate alert


def test_lost_flights_are_retransmitted_on_openssls_timer() -> None:
    async def run():
        # lose the server's first flight (ServerHello ... ServerHelloDone) once
        lost = []

        def drop(index: int, data: bytes) -> bool:
            if index == 1 and not lost:
                lost.append(index)
                return True
            return False
        server, client, _ = _pair(drop=drop)
        server.start()
        client.start()
        await _until(lambda: server.state == client.state == "connected", 5.0)
        return server, client
    server, client = asyncio.run(run())
    assert server.state == client.state == "connected"
    assert client.retransmissions + server.retransmissions >= 1


def test_records_stay_whole_within_the_mtu() -> None:
    wire: list[bytes] = []

    async def run():
        server, client, _ = _pair(wire=wire)
        server.start()
        client.start()
        await _until(lambda: server.state == client.state == "connected")
    asyncio.run(run())
    assert wire and all(len(datagram) <= DTLS_MTU for datagram in wire)
    for datagram in wire:
        records = split_records(datagram)
        assert records is not None and b"".join(records) == datagram


def test_an_established_association_refuses_a_new_client_hello() -> None:
    async def run():
        server, client, _ = _pair()
        server.start()
        client.start()
        await _until(lambda: server.state == client.state == "connected")
        hello: list[bytes] = []
        other = DtlsSrtpTransport(CLIENT_CERT, server=False,
                                  remote_fingerprints=[("sha-256", SERVER_CERT.fingerprint)],
                                  send=hello.append)
        other.start()
        assert is_client_hello(split_records(hello[0])[0])
        server.receive(hello[0])
        server.receive(b"\x17\xfe\xfd" + bytes(8) + b"\x00\x04junk")  # unauthentic app data
        server.receive(b"\x16\xfe")                                    # not a whole record
        return server
    server = asyncio.run(run())
    assert server.state == "connected"
    assert server.client_hellos_refused == 1 and server.malformed == 1


def test_close_notify_closes_the_peer() -> None:
    async def run():
        server, client, _ = _pair()
        server.start()
        client.start()
        await _until(lambda: server.state == client.state == "connected")
        client.close()
        await _until(lambda: server.state == "closed")
        return server
    server = asyncio.run(run())
    assert server.state == "closed" and server.failure == "peer_closed"


def test_profiles_setting_is_checked() -> None:
    assert parse_profiles("SRTP_AES128_CM_SHA1_80") == ("SRTP_AES128_CM_SHA1_80",)
    with pytest.raises(DtlsError):
        parse_profiles("SRTP_NULL_SHA1_80")
    with pytest.raises(DtlsError):
        parse_profiles("")


def test_pack_datagrams_keeps_order_and_limits() -> None:
    records = [bytes([22]) * n for n in (500, 500, 300, 1300, 10)]
    datagrams = pack_datagrams(records, 1200)
    assert b"".join(datagrams) == b"".join(records)
    assert [len(d) for d in datagrams] == [1000, 300, 1300, 10]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_datagram_into_a_waiting_server_is_absorbed(data: bytes) -> None:
    async def run():
        server = DtlsSrtpTransport(SERVER_CERT, server=True,
                                   remote_fingerprints=[("sha-256", CLIENT_CERT.fingerprint)],
                                   send=lambda _d: None)
        server.start()
        server.receive(bytes([22]) + data)
        server.close()
        return server
    server = asyncio.run(run())
    assert server.state in ("connecting", "failed", "closed")
