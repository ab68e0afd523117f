"""Interop with baresip, a real softphone nobody here wrote: it calls a number into a group call
with two Opus VoIP participants and everyone hears everyone (tones by spectrum), and it answers
an outbound call placed through it as the trunk."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from controller.testing import RestParticipant, continuous_tone  # noqa: E402
from mixer.analysis import tone_levels_db  # noqa: E402
from mixer.sim.call import HEARD_THRESHOLD_DB  # noqa: E402
from mixer.sim.participant import SimulatedParticipant  # noqa: E402
from tests.controller.pstn.baresip import BARESIP, Baresip  # noqa: E402
from tests.controller.pstn.test_pstn_service import NUMBER, new_call, pstn_controller, wait_for  # noqa: E402

pytestmark = [pytest.mark.store_independent,   # SIP and media interop: no store involved
              pytest.mark.skipif(BARESIP is None, reason="baresip (Debian package baresip-core) is not installed")]


def run(coro):
    return uvloop.run(coro)


@pytest.mark.parametrize("codec", ["PCMU", "opus"])
def test_baresip_phone_and_two_opus_users_hear_each_other(tmp_path, codec):
    """A PSTN-style caller (PCMU) or a SIP softphone speaking Opus: the SIP side takes either."""
    async def main():
        phone = Baresip(tmp_path / "baresip", tone_hz=440, codecs=codec)
        async with pstn_controller(tmp_path / "c") as c:
            call_id, alice = await new_call(c, "alice")
            bob = await c.user("bob")
            await c.client.post(f"/v1/calls/{call_id}/invitations", json={"identities": ["bob"]},
                                headers=alice)
            await c.client.post("/v1/numbers", json={"number": NUMBER, "route": {"call": call_id}},
                                headers=c.admin)
            users = [RestParticipant(SimulatedParticipant("alice", 520.0, continuous_tone(520.0, 9.0)), alice),
                     RestParticipant(SimulatedParticipant("bob", 930.0, continuous_tone(930.0, 9.0)), bob)]
            for user in users:
                assert (await user.join(c.client, call_id)).status_code == 201
            start = asyncio.get_running_loop().time()
            for user in users:
                user.sim.start(start)
            await phone.start(f"/dial sip:{NUMBER}@127.0.0.1:{c.sip_port}", seconds=7)

            async def phone_joined():
                call = (await c.client.get(f"/v1/calls/{call_id}", headers=alice)).json()
                return any(p["kind"] == "pstn" for p in call["participants"])
            await wait_for(phone_joined, timeout=10)
            await phone.wait()
            heard = {u.sim.name: u.sim.heard_audio()[0] for u in users}
            for user in users:
                user.sim.close()
            await asyncio.sleep(0.3)
            call = (await c.client.get(f"/v1/calls/{call_id}", headers=alice)).json()
            assert [p["kind"] for p in call["participants"]] == ["voip", "voip"]   # the phone left
        await phone.stop()
        return heard, phone.heard()

    heard, (phone_audio, rate) = run(main())
    window = slice(48000 * 3, 48000 * 6)
    alice = tone_levels_db(heard["alice"][window], [440.0, 930.0, 520.0])
    bob = tone_levels_db(heard["bob"][window], [440.0, 520.0, 930.0])
    # each hears the other two, and not themselves (below the project's "heard" threshold)
    assert alice[440.0] > -35 and alice[930.0] > -35 and alice[520.0] < HEARD_THRESHOLD_DB, alice
    assert bob[440.0] > -35 and bob[520.0] > -35 and bob[930.0] < HEARD_THRESHOLD_DB, bob
    phone_levels = tone_levels_db(phone_audio[rate:rate * 4], [520.0, 930.0, 440.0], rate=rate)
    assert phone_levels[520.0] > -35 and phone_levels[930.0] > -35, phone_levels
    assert phone_levels[440.0] < HEARD_THRESHOLD_DB, phone_levels   # mix-minus: not its own voice


def test_baresip_answers_an_outbound_call_through_it_as_the_trunk(tmp_path):
    async def main():
        # baresip answers requests for its account's user: the number we call
        phone = Baresip(tmp_path / "baresip", tone_hz=700, codecs="PCMA", answer=True,
                        user="+15550100600")
        await phone.start(seconds=8)
        await asyncio.sleep(0.7)
        async with pstn_controller(tmp_path / "c", sip_trunk=f"127.0.0.1:{phone.sip_port}",
                                   sip_options_interval_s=0, sip_codecs=["PCMA", "PCMU"]) as c:
            call_id, alice = await new_call(c)
            user = RestParticipant(SimulatedParticipant("alice", 350.0, continuous_tone(350.0, 8.0)), alice)
            await user.join(c.client, call_id)
            user.sim.start(asyncio.get_running_loop().time())
            r = await c.client.post(f"/v1/calls/{call_id}/participants",
                                    json={"kind": "pstn", "number": "+15550100600"}, headers=alice)
            pid = r.json()["id"]

            async def answered():
                call = (await c.client.get(f"/v1/calls/{call_id}", headers=alice)).json()
                return next((p for p in call["participants"] if p["id"] == pid and p["state"] == "answered"), None)
            participant = await wait_for(answered, timeout=10)
            await asyncio.sleep(3.0)
            heard, _ = user.sim.heard_audio()
            await c.client.delete(f"/v1/calls/{call_id}/participants/{pid}", headers=alice)
            user.sim.close()
            await asyncio.sleep(0.5)
        await phone.stop()
        return participant, heard, phone.heard()

    participant, heard, (phone_audio, rate) = run(main())
    assert participant["codec"] == "PCMA"
    assert tone_levels_db(heard[-48000 * 2:], [700.0])[700.0] > -35
    assert tone_levels_db(phone_audio[rate:rate * 3], [350.0], rate=rate)[350.0] > -35
