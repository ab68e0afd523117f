"""WebRTC legs end to end on loopback: aiortc (a full ICE agent, DTLS, SRTP, Opus nobody here wrote)
joins MCU and SFU conferences next to plain RTP participants; a scripted client re-offers.

What is checked is what each side heard (tones by spectrum) and what the engine counted.
"""
from __future__ import annotations

import asyncio

import uvloop

from mixer.analysis import tone
from mixer.engine.engine import Engine
from mixer.settings import EngineSettings
from mixer.sim.call import join
from mixer.sim.participant import SimulatedParticipant
from mixer.sim.webrtc_client import ScriptedWebRtcClient
from mixer.sim.webrtc_peer import AiortcPeer
from mixer.legs.ice import IceCredentials
from mixer.turn import stun

HEARD_DB = -40.0
TONES = (440.0, 660.0, 880.0, 1100.0)


def _engine(**settings) -> Engine:
    engine = Engine(EngineSettings(media_ports="43000-43999", **settings))
    engine.start()
    return engine


def _sim(name: str, freq: float, seconds: float, amplitude: float = 0.2,
         srtp: bool = False) -> SimulatedParticipant:
    return SimulatedParticipant(name, freq, tone(freq, seconds, amplitude=amplitude), srtp=srtp)


def _heard(sim: SimulatedParticipant) -> dict[float, float]:
    from mixer.analysis import tone_levels_db
    best = {f: -120.0 for f in TONES}
    for pcm, _times, _decoder in sim.heard_streams().values():
        for f, level in tone_levels_db(pcm[24000:], TONES).items():
            best[f] = max(best[f], level)
    return best


async def _mcu_call() -> tuple[AiortcPeer, list[SimulatedParticipant], dict, dict]:
    engine = _engine()
    peer = AiortcPeer("browser", 440.0)
    # one conference, three kinds of leg: WebRTC, plain RTP, SDES-SRTP
    sims = [_sim("p660", 660.0, 4.0), _sim("p880", 880.0, 4.0, srtp=True)]
    try:
        conference = engine.create_conference("mcu")["id"]
        answer = await engine.add_leg(conference, await peer.offer(), "browser")
        await peer.accept(answer["sdp"])
        for sim in sims:
            await join(engine, conference, sim)
            sim.start()
        await peer.connected()
        await asyncio.sleep(3.5)
        legs = {leg["label"]: leg for leg in engine.get_conference(conference)["legs"]}
        stats = engine.stats()
    finally:
        await peer.close()
        for sim in sims:
            sim.close()
        engine.stop()
    return peer, sims, legs, stats


def test_aiortc_in_an_mcu_call_hears_and_is_heard_by_rtp_and_sdes_participants() -> None:
    peer, sims, legs, stats = uvloop.run(_mcu_call())
    assert [legs[s.name]["srtp"] for s in sims] == [False, True]
    levels = peer.levels([440.0, 660.0, 880.0])
    assert levels[660.0] > HEARD_DB and levels[880.0] > HEARD_DB, levels
    assert levels[440.0] < HEARD_DB, levels  # mix-minus: not its own voice
    for sim in sims:
        heard = _heard(sim)
        assert heard[440.0] > HEARD_DB, (sim.name, heard)
    leg = legs["browser"]
    assert leg["kind"] == "webrtc" and leg["srtp"]
    assert leg["webrtc"]["state"] == "connected"
    assert leg["webrtc"]["dtls"]["srtp_profile"] == "SRTP_AES128_CM_SHA1_80"
    assert leg["webrtc"]["ice"]["nominations"] >= 1
    assert leg["packets_in"] > 100 and leg["packets_out"] > 100
    assert sum(leg["drops"].values()) == 0, leg["drops"]
    assert stats["webrtc"]["connected"] == 1 and not stats["webrtc"]["failures"]


async def _sfu_call(receive_slots: int) -> tuple[AiortcPeer, list[SimulatedParticipant], dict, str]:
    engine = _engine()
    peer = AiortcPeer("browser", 440.0, receive_slots=receive_slots)
    # two loud senders and one quiet: each of the browser's slots carries at most one voice
    sims = [_sim("p660", 660.0, 4.0), _sim("p880", 880.0, 4.0), _sim("quiet", 1100.0, 4.0, 0.0004)]
    try:
        conference = engine.create_conference("sfu")["id"]
        answer = await engine.add_leg(conference, await peer.offer(), "browser")
        await peer.accept(answer["sdp"])
        for sim in sims:
            await join(engine, conference, sim)
            sim.start()
        await peer.connected()
        await asyncio.sleep(3.5)
        legs = {leg["label"]: leg for leg in engine.get_conference(conference)["legs"]}
    finally:
        await peer.close()
        for sim in sims:
            sim.close()
        engine.stop()
    return peer, sims, legs, answer["sdp"]


def test_sfu_gives_a_browser_one_forwarded_speaker_per_recvonly_m_line() -> None:
    peer, sims, legs, answer = uvloop.run(_sfu_call(receive_slots=3))
    assert answer.count("a=sendonly") == 3 and "a=group:BUNDLE 0 1 2 3" in answer
    leg = legs["browser"]
    assert len(leg["slots"]) == 3
    assert [s["ssrc"] for s in leg["slots"]] == leg["webrtc"]["slot_ssrcs"]
    voices_per_track = []
    for mid in ("1", "2", "3"):
        levels = peer.levels([660.0, 880.0, 1100.0], mid=mid)
        voices_per_track.append(sorted(f for f, level in levels.items() if level > HEARD_DB))
    # the two talkers each on a track of their own (not mixed), the quiet one on none
    assert sorted(v for voices in voices_per_track for v in voices) == [660.0, 880.0], voices_per_track
    assert all(len(voices) <= 1 for voices in voices_per_track), voices_per_track
    assert peer.levels([440.0], mid="0")[440.0] < HEARD_DB  # nothing comes down the main m-line
    for sim in sims[:2]:
        assert _heard(sim)[440.0] > HEARD_DB, sim.name
    assert leg["forwarded"]


def test_sfu_client_with_a_single_m_line_hears_the_first_slot() -> None:
    peer, _sims, legs, answer = uvloop.run(_sfu_call(receive_slots=0))
    assert answer.count("a=sendrecv") == 1
    leg = legs["browser"]
    assert len(leg["slots"]) == 1
    levels = peer.levels([660.0, 880.0], mid="0")
    assert max(levels.values()) > HEARD_DB, levels


async def _ice_restart() -> tuple[dict, dict, str, str, stun.StunMessage, stun.StunMessage, int]:
    engine = _engine()
    client = ScriptedWebRtcClient()
    sim = _sim("p660", 660.0, 4.0)
    try:
        conference = engine.create_conference("mcu")["id"]
        await client.open()
        first = await engine.add_leg(conference, client.offer(), "scripted")
        client.accept(first["sdp"])
        await join(engine, conference, sim)
        sim.start()
        await client.connect()
        await client.wait_for_rtp(10)
        before = engine.get_conference(conference)["legs"][0]
        # re-offer with new ICE credentials: an ICE restart
        client.ice = IceCredentials.generate()
        second = await engine.reoffer_leg(conference, first["id"], client.offer())
        old_ice = client.remote_ice
        client.accept(second["sdp"])
        stale = await client.check(ufrag=old_ice.ufrag, password=old_ice.pwd)
        fresh = await client.check()
        received = len(client.rtp)
        await asyncio.sleep(0.5)
        received = len(client.rtp) - received
        after = engine.get_conference(conference)["legs"][0]
    finally:
        client.close()
        sim.close()
        engine.stop()
    return before, after, first["sdp"], second["sdp"], stale, fresh, received


def test_reoffer_with_new_ice_credentials_restarts_ice_and_media_keeps_flowing() -> None:
    before, after, first, second, stale, fresh, received = uvloop.run(_ice_restart())
    ufrag = [line for line in first.splitlines() if line.startswith("a=ice-ufrag")][0]
    assert ufrag not in second                        # new local credentials
    port = [line for line in first.splitlines() if line.startswith("m=audio")][0]
    assert port in second                             # same port, same transport
    assert stale.cls == stun.ERROR and stale.error_code()[0] == 401
    assert fresh.cls == stun.SUCCESS
    assert received > 15                              # 20 ms packets kept coming (same SRTP keys)
    assert after["webrtc"]["ice"]["restarts"] == 1
    assert after["webrtc"]["dtls_restarts"] == 0
    assert after["ssrc"] == before["ssrc"]
    assert after["webrtc"]["state"] == "connected"


async def _consent() -> tuple[int, str, str, int, str, dict]:
    engine = _engine(ice_consent_timeout_s=0.6, webrtc_connect_timeout_s=1.2)
    client = ScriptedWebRtcClient()
    sim = _sim("p660", 660.0, 6.0)
    try:
        conference = engine.create_conference("mcu")["id"]
        await client.open()
        answer = await engine.add_leg(conference, client.offer(), "scripted")
        client.accept(answer["sdp"])
        await join(engine, conference, sim)
        sim.start()
        await client.connect()
        await asyncio.sleep(1.2)           # no consent check since the first: consent lapses
        leg = engine.get_conference(conference)["legs"][0]
        lapsed = leg["webrtc"]["state"]
        count = len(client.rtp)
        await asyncio.sleep(0.4)
        silent = len(client.rtp) - count   # nothing sent without consent (RFC 7675)
        await client.check(use_candidate=False)  # a consent check brings it back
        await asyncio.sleep(0.3)
        restored = engine.get_conference(conference)["legs"][0]["webrtc"]["state"]
        count = len(client.rtp)
        await asyncio.sleep(0.3)
        flowing = len(client.rtp) - count
        await asyncio.sleep(2.6)           # then gone for good: the leg fails
        final = engine.get_conference(conference)["legs"][0]["webrtc"]
    finally:
        client.close()
        sim.close()
        engine.stop()
    return silent, lapsed, restored, flowing, final["state"], final


def test_consent_lapses_without_checks_stops_media_comes_back_and_finally_fails() -> None:
    silent, lapsed, restored, flowing, state, final = uvloop.run(_consent())
    assert lapsed == "disconnected" and silent == 0
    assert restored == "connected" and flowing > 5
    assert state == "failed" and final["failure"] == "ice_disconnected"
    assert final["ice"]["consent_losses"] == 2
