"""Bad input on WebRTC legs: refused and counted, nothing crashes, no other leg disturbed.

Every test runs a plain RTP participant (p660) and a well-behaved WebRTC client (aiortc, 440 Hz)
in the same MCU conference as the misbehaving scripted client, and checks at the end that both
kept hearing each other through the attack.
"""
from __future__ import annotations

import asyncio
import secrets

import uvloop
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mixer.analysis import tone, tone_levels_db
from mixer.engine.engine import Engine
from mixer.engine.metrics import engine_registry
from mixer.legs.dtls import DtlsCertificate
from mixer.settings import EngineSettings
from mixer.sim.call import join
from mixer.sim.participant import SimulatedParticipant
from mixer.sim.webrtc_client import ScriptedWebRtcClient
from mixer.sim.webrtc_peer import AiortcPeer
from mixer.turn import stun

HEARD_DB = -40.0


def _dtls_garbage(count: int) -> list[bytes]:
    """Datagrams that look like DTLS records (content type, DTLS 1.2 version, sane length) but
    carry random bytes, plus some that are not even framed right."""
    out = []
    for i in range(count):
        body = secrets.token_bytes(40 + i % 200)
        if i % 3 == 0:
            out.append(bytes([22 + i % 3]) + secrets.token_bytes(30))  # not a whole record
        else:
            out.append(bytes([20 + i % 4, 0xFE, 0xFD]) + secrets.token_bytes(8)
                       + len(body).to_bytes(2, "big") + body)
    return out


async def _with_bystanders(attack) -> tuple[dict, dict, dict, object]:
    """Run `attack(engine, conference, client)` while aiortc and an RTP participant talk."""
    engine = Engine(EngineSettings(media_ports="44000-44999"))
    engine.start()
    peer = AiortcPeer("browser", 440.0)
    sim = SimulatedParticipant("p660", 660.0, tone(660.0, 5.0, amplitude=0.2))
    client = ScriptedWebRtcClient()
    try:
        conference = engine.create_conference("mcu")["id"]
        answer = await engine.add_leg(conference, await peer.offer(), "browser")
        await peer.accept(answer["sdp"])
        await join(engine, conference, sim)
        sim.start()
        await peer.connected()
        await client.open()
        result = await attack(engine, conference, client)
        await asyncio.sleep(1.0)
        legs = {leg["label"]: leg for leg in engine.get_conference(conference)["legs"]}
        stats = engine.stats()
        stats["metrics"] = _samples(engine)
    finally:
        client.close()
        await peer.close()
        sim.close()
        engine.stop()
    bystanders = {
        "browser_heard_660": peer.levels([660.0])[660.0],
        "sim_heard_440": max((tone_levels_db(pcm[24000:], [440.0])[440.0]
                              for pcm, _t, _d in sim.heard_streams().values()), default=-120.0),
    }
    return legs, stats, bystanders, result


def _samples(engine: Engine) -> dict:
    """The engine's Prometheus samples as {(name, sorted labels): value}."""
    text = generate_latest(engine_registry(engine, process=False)).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _webrtc_metric(stats: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted({"mode": "mcu", "transport": "webrtc", **labels}.items())))
    return stats["metrics"][key]


def _bystanders_fine(bystanders: dict) -> None:
    assert bystanders["browser_heard_660"] > HEARD_DB, bystanders
    assert bystanders["sim_heard_440"] > HEARD_DB, bystanders


def test_wrong_fingerprint_fails_that_leg_only() -> None:
    async def attack(engine, conference, client):
        client.claimed = DtlsCertificate.generate()  # the offer names a certificate it does not hold
        answer = await engine.add_leg(conference, client.offer(), "liar")
        client.accept(answer["sdp"])
        assert (await client.check()).cls == stun.SUCCESS
        return await client.handshake()

    legs, stats, bystanders, state = uvloop.run(_with_bystanders(attack))
    assert state == "failed"  # the engine's alert ended our handshake too
    liar = legs["liar"]["webrtc"]
    assert liar["state"] == "failed" and liar["failure"] == "dtls_fingerprint_mismatch"
    assert legs["liar"]["packets_out"] == 0
    assert stats["webrtc"]["failures"] == {"dtls_fingerprint_mismatch": 1}
    assert _webrtc_metric(stats, "voicemix_engine_webrtc_failures_total",
                          reason="dtls_fingerprint_mismatch") == 1
    assert _webrtc_metric(stats, "voicemix_engine_webrtc_failures_total", reason="ice_timeout") == 0
    assert _webrtc_metric(stats, "voicemix_engine_dtls_handshakes_total") == 1  # the browser's
    _bystanders_fine(bystanders)


def test_wrong_ice_password_and_strangers_checks_are_refused_and_counted() -> None:
    async def attack(engine, conference, client):
        answer = await engine.add_leg(conference, client.offer(), "target")
        client.accept(answer["sdp"])
        wrong_password = await client.check(password="x" * 24)
        wrong_ufrag = await client.check(ufrag="nobody")
        no_integrity = await client.check(fingerprint=False)
        both_controlled = await client.check(controlled=True)
        # DTLS from an address no valid check came from is not even parsed
        client.dtls = None
        for datagram in _dtls_garbage(20):
            client.send_raw(datagram)
        stranger = ScriptedWebRtcClient()
        await stranger.open()
        stranger.accept(answer["sdp"])  # knows the engine's half, not the client's password
        from_stranger = await stranger.check(password="y" * 24)
        stranger.close()
        return wrong_password, wrong_ufrag, no_integrity, both_controlled, from_stranger

    legs, stats, bystanders, responses = uvloop.run(_with_bystanders(attack))
    wrong_password, wrong_ufrag, no_fingerprint, both_controlled, from_stranger = responses
    for response in (wrong_password, wrong_ufrag, from_stranger):
        assert response.cls == stun.ERROR and response.error_code()[0] == 401
        assert response.get(stun.MESSAGE_INTEGRITY) is None  # RFC 8489 9.1.3
    assert no_fingerprint.error_code()[0] == 400
    assert both_controlled.error_code()[0] == 487
    target = legs["target"]
    ice = target["webrtc"]["ice"]
    assert ice["errors"]["unauthorized"] == 3 and ice["errors"]["bad_request"] == 1
    assert ice["errors"]["role_conflict"] == 1
    assert ice["checks"] == 0 and ice["selected"] is None
    assert target["drops"]["dtls_unvalidated"] == 20
    assert target["webrtc"]["dtls"]["datagrams_in"] == 0
    assert _webrtc_metric(stats, "voicemix_engine_ice_check_errors_total", reason="unauthorized") == 3
    assert _webrtc_metric(stats, "voicemix_engine_ice_check_errors_total", reason="role_conflict") == 1
    assert _webrtc_metric(stats, "voicemix_engine_packets_dropped_total",
                          reason="dtls_unvalidated") == 20
    _bystanders_fine(bystanders)


def test_garbage_dtls_and_a_second_client_hello_do_not_break_an_established_leg() -> None:
    async def attack(engine, conference, client):
        answer = await engine.add_leg(conference, client.offer(), "target")
        client.accept(answer["sdp"])
        await client.connect()
        await client.wait_for_rtp(5)
        # a second ClientHello on the established association: a fresh DTLS client's first flight
        fresh = ScriptedWebRtcClient()
        await fresh.open()
        fresh.engine, fresh.remote_fingerprint = client.engine, client.remote_fingerprint
        hellos = []
        fresh.send_raw = hellos.append
        await fresh.handshake(timeout_s=0.05)
        fresh.close()
        for datagram in hellos[:1] + _dtls_garbage(60):
            client.send_raw(datagram)
            await asyncio.sleep(0)
        before = len(client.rtp)
        await asyncio.sleep(0.6)
        return len(client.rtp) - before

    legs, stats, bystanders, received_after = uvloop.run(_with_bystanders(attack))
    target = legs["target"]
    dtls = target["webrtc"]["dtls"]
    assert dtls["client_hellos_refused"] == 1
    assert dtls["malformed"] >= 20
    assert target["webrtc"]["state"] == "connected" and dtls["state"] == "connected"
    assert received_after > 20  # the mix kept coming to the attacked leg
    assert not stats["webrtc"]["failures"]
    _bystanders_fine(bystanders)


def test_a_flood_from_a_stranger_is_rate_limited_without_starving_the_participant() -> None:
    async def attack(engine, conference, client):
        answer = await engine.add_leg(conference, client.offer(), "target")
        client.accept(answer["sdp"])
        await client.connect()
        flood = ScriptedWebRtcClient()
        await flood.open()
        flood.accept(answer["sdp"])
        garbage = _dtls_garbage(50)
        requests = [flood.check_request(password="z" * 24)[1] for _ in range(50)]
        for i in range(3000):
            flood.send_raw(garbage[i % 50] if i % 2 else requests[i % 50])
            if i % 200 == 0:
                await asyncio.sleep(0)
        flood.close()
        before = len(client.rtp)
        await asyncio.sleep(0.6)
        return len(client.rtp) - before

    legs, _stats, bystanders, received_after = uvloop.run(_with_bystanders(attack))
    drops = legs["target"]["drops"]
    assert drops["rate_limited"] > 1000, drops
    assert drops["dtls_unvalidated"] + drops["stun"] > 0, drops
    assert legs["target"]["webrtc"]["state"] == "connected"
    assert received_after > 20
    _bystanders_fine(bystanders)


def test_a_leg_whose_peer_never_connects_fails_with_a_reason() -> None:
    async def attack(engine, conference, client):
        engine.settings.webrtc_connect_timeout_s = 0.3
        answer = await engine.add_leg(conference, client.offer(), "silent")
        client.accept(answer["sdp"])
        await asyncio.sleep(0.6)

    legs, stats, bystanders, _ = uvloop.run(_with_bystanders(attack))
    assert legs["silent"]["webrtc"]["state"] == "failed"
    assert legs["silent"]["webrtc"]["failure"] == "ice_timeout"
    assert stats["webrtc"]["failures"] == {"ice_timeout": 1}
    _bystanders_fine(bystanders)
