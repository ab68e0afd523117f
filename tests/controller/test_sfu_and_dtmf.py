"""An SFU call through the controller, and DTMF digits as call events.

Real HTTPS, real RTP: two participants join an `sfu` call by SDP offer; one presses keys (RFC 4733
telephone-event packets from its own RTP socket); the event stream names the digits in order and
who pressed them, and each participant hears the other through the forwarder.
"""
import asyncio

import uvloop

from controller.testing import RestParticipant, collect_events, continuous_tone, running_controller
from mixer import _rtp
from mixer.analysis import tone_levels_db
from mixer.rtp.dtmf import DTMF_KEYS, TelephoneEvent
from mixer.sdp import parse
from mixer.sim.participant import SimulatedParticipant

ALICE_HZ, BOB_HZ = 520.0, 930.0


def telephone_event_pt(answer_sdp: str) -> int:
    media = parse(answer_sdp).media[0]
    return next(int(value.split()[0]) for value in media.attributes("rtpmap")
                if "telephone-event" in value)


async def press_keys(participant: RestParticipant, answer_sdp: str, keys: str) -> None:
    """RFC 4733 section 2.5: updates every 20 ms, then the end packet three times."""
    pt = telephone_event_pt(answer_sdp)
    sim = participant.sim
    for n, key in enumerate(keys):
        timestamp = 10_000_000 + n * 48_000
        event = DTMF_KEYS.index(key)
        packets = [TelephoneEvent(event, False, 10, 960 * (k + 1)) for k in range(4)]
        packets += [TelephoneEvent(event, True, 10, 960 * 5)] * 3
        for k, packet in enumerate(packets):
            wire = _rtp.build_rtp(pt, (5000 + 7 * n + k) & 0xFFFF, timestamp, 0xD7F, packet.serialize(),
                                   k == 0)
            sim._sendto(wire)
            await asyncio.sleep(0.02)


def test_sfu_call_through_the_controller_with_dtmf_events(tmp_path):
    async def scenario():
        async with running_controller(tmp_path, monitor_interval_s=0.2) as c:
            http = c.client
            alice, bob = await c.user("alice"), await c.user("bob")
            created = await http.post("/v1/calls", json={"mode": "sfu", "invite": ["bob"]}, headers=alice)
            assert created.status_code == 201, created.text
            call = created.json()
            assert call["mode"] == "sfu"
            path = f"/v1/calls/{call['id']}"
            events: list = []
            events_task = asyncio.create_task(collect_events(http, f"{path}/events", alice, events))
            while c.server.calls.events.subscribers(call["id"]) == 0:
                await asyncio.sleep(0.01)
            pa = RestParticipant(SimulatedParticipant("alice", ALICE_HZ, continuous_tone(ALICE_HZ, 3)), alice)
            pb = RestParticipant(SimulatedParticipant("bob", BOB_HZ, continuous_tone(BOB_HZ, 3)), bob)
            answers = {}
            for p in (pa, pb):
                response = await p.join(http, call["id"])
                assert response.status_code == 201, response.text
                answers[p.sim.name] = response.json()["sdp"]
            start = asyncio.get_running_loop().time() + 0.05
            pa.sim.start(start)
            pb.sim.start(start)
            await asyncio.sleep(1.0)
            await press_keys(pb, answers["bob"], "19#")
            await asyncio.sleep(1.5)
            state = (await http.get(path, headers=alice)).json()
            assert (await http.delete(path, headers=alice)).status_code == 204
            await asyncio.wait_for(events_task, 5)
            for p in (pa, pb):
                p.sim.close()
            return pa, pb, events, state

    pa, pb, events, state = uvloop.run(scenario())
    digits = [(e["participant_id"], e["digit"]) for e in events if e["type"] == "dtmf"]
    assert digits == [(pb.id, "1"), (pb.id, "9"), (pb.id, "#")]
    assert sorted(state["speakers"]) == sorted([pa.id, pb.id])  # both forwarded
    assert any(e["type"] == "dominant_speaker" for e in events)
    for listener, talker_hz, own_hz in ((pa, BOB_HZ, ALICE_HZ), (pb, ALICE_HZ, BOB_HZ)):
        pcm, _ = listener.sim.heard_audio()
        levels = tone_levels_db(pcm[24000:], [talker_hz, own_hz])
        assert levels[talker_hz] > -30 and levels[own_hz] < -60
