"""The controller's `auto` mode relays a 1:1 call and lets the engine mix once a third joins.

Real controller over HTTPS, the in-process engine, RTP clients (SimulatedParticipant); checks are
on what the clients received and on the engine's conference state seen through the API.
"""
import asyncio

import uvloop

from controller.testing import RestParticipant, continuous_tone, running_controller
from mixer.analysis import tone_levels_db
from mixer.codec import MIX_RATE
from mixer.sim.participant import SimulatedParticipant

ALICE_HZ, BOB_HZ, CAROL_HZ = 520.0, 710.0, 930.0


def test_auto_one_to_one_is_relayed_then_mixed_for_a_third(tmp_path):
    async def scenario():
        async with running_controller(tmp_path) as c:
            http = c.client
            alice, bob, carol = await c.user("alice"), await c.user("bob"), await c.user("carol")
            created = await http.post("/v1/calls", json={"mode": "auto", "invite": ["bob", "carol"]},
                                      headers=alice)
            assert created.status_code == 201, created.text
            call = created.json()
            assert call["mode"] == "relay" and call["requested_mode"] == "auto"
            pa = RestParticipant(SimulatedParticipant("alice", ALICE_HZ, continuous_tone(ALICE_HZ, 4)), alice)
            pb = RestParticipant(SimulatedParticipant("bob", BOB_HZ, continuous_tone(BOB_HZ, 4)), bob)
            pc = RestParticipant(SimulatedParticipant("carol", CAROL_HZ, continuous_tone(CAROL_HZ, 2),
                                                      codec="PCMU"), carol)
            for p in (pa, pb):
                assert (await p.join(http, call["id"])).status_code == 201
            start = asyncio.get_running_loop().time() + 0.05
            pa.sim.start(start)
            pb.sim.start(start)
            await asyncio.sleep(1.2)
            relayed = c.engine.get_conference(call["id"])["stats"]
            assert (await pc.join(http, call["id"])).status_code == 201
            pc.sim.start()
            await asyncio.sleep(1.2)
            mixed = c.engine.get_conference(call["id"])["stats"]
            state = (await http.get(f"/v1/calls/{call['id']}", headers=alice)).json()
            assert (await http.delete(f"/v1/calls/{call['id']}", headers=alice)).status_code == 204
            for p in (pa, pb, pc):
                p.sim.close()
            return relayed, mixed, state, pa, pb

    relayed, mixed, state, pa, pb = uvloop.run(scenario())
    assert relayed["state"] == "forward" and relayed["packets_relayed"] > 50
    assert mixed["state"] == "mix" and mixed["switches_to_mix"] == 1
    assert state["type"] == "group" and state["mode"] == "relay"
    for listener, other in ((pa, pb), (pb, pa)):
        pcm, _ = listener.sim.heard_audio()
        levels = tone_levels_db(pcm[int(0.3 * MIX_RATE):], [ALICE_HZ, BOB_HZ, CAROL_HZ])
        assert levels[other.sim.freq_hz] > -30 and levels[CAROL_HZ] > -35, levels
        assert len(listener.sim.received.streams) == 1  # one stream through the switch
