"""The shared store's server stopped in the middle of a call and started again (a real
PostgreSQL server, fast shutdown: every connection is cut): the call's media goes on, requests
that need the store answer 503 `store_unavailable` in the shared error shape, records written
meanwhile (a leg that left, the call's end) are queued on disk, and after the restart each is
written exactly once."""
import asyncio
import time

import numpy as np
import pytest
import uvloop

from controller.testing import (
    PostgresServer, RestParticipant, continuous_tone, postgres_bin_dir, running_controller,
)
from mixer.analysis import tone_levels_db
from mixer.codec import MIX_RATE
from mixer.sim.participant import SimulatedParticipant

ALICE_HZ, BOB_HZ, BOT_HZ = 520.0, 710.0, 930.0
CACHE_S = 0.2


def run(coro):
    return uvloop.run(coro)


@pytest.fixture
def postgres():
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    with PostgresServer(bin_dir) as server:
        yield server


def heard_between(listener: SimulatedParticipant, start_s: float, end_s: float) -> np.ndarray:
    """What `listener` decoded from packets that arrived in [start_s, end_s) (monotonic)."""
    pcm, times = listener.heard_audio()
    return pcm[(times >= start_s) & (times < end_s)]


def test_database_stopped_mid_call_media_goes_on_and_cdrs_are_written_once_after(tmp_path,
                                                                                  postgres):
    url = postgres.create_database("restart")

    async def scenario():
        async with running_controller(tmp_path / "data", database_url=url, database_timeout_s=1.0,
                                      revocation_cache_s=CACHE_S, outbox_retry_s=0.1) as c:
            http = c.client
            alice, bob = await c.user("alice"), await c.user("bob")
            call = (await http.post("/v1/calls", json={"mode": "mcu", "invite": ["bob"]},
                                    headers=alice)).json()
            path = f"/v1/calls/{call['id']}"
            pa = RestParticipant(SimulatedParticipant("alice", ALICE_HZ,
                                                      continuous_tone(ALICE_HZ, 12)), alice)
            pb = RestParticipant(SimulatedParticipant("bob", BOB_HZ,
                                                      continuous_tone(BOB_HZ, 12)), bob)
            for p in (pa, pb):
                assert (await p.join(http, call["id"])).status_code == 201
                p.sim.start()
            bot = await http.post(f"{path}/participants", json={"kind": "bot", "play": "tone:930"},
                                  headers=alice)
            assert bot.status_code == 201
            await asyncio.sleep(1.0)

            await asyncio.to_thread(postgres.stop)
            stopped_at = time.monotonic()
            await asyncio.sleep(CACHE_S + 0.05)  # past what the revocation cache may answer
            # what needs the store says so, in the shared shape; the admin key needs no store
            for response in (await http.get(path, headers=alice),
                             await http.get("/v1/cdrs", headers=c.admin),
                             await http.post("/v1/identities", json={"id": "carol"},
                                             headers=c.admin)):
                assert response.status_code == 503, response.text
                assert response.json() == {"error": {"code": "store_unavailable",
                                                     "message": "the database does not answer; "
                                                                "try again"}}
                assert response.headers["retry-after"] == "1"
            assert (await http.get(path, headers=c.admin)).status_code == 200
            # the bot leaves and the call ends meanwhile: both answered, their records queued
            assert (await http.delete(f"{path}/participants/{bot.json()['id']}",
                                      headers=c.admin)).status_code == 204
            await asyncio.sleep(1.5)
            outage_heard = {pa: heard_between(pa.sim, stopped_at, time.monotonic()),
                            pb: heard_between(pb.sim, stopped_at, time.monotonic())}
            assert (await http.delete(path, headers=c.admin)).status_code == 204
            outbox = c.server.calls.outbox
            assert len(outbox) == 2 and outbox.path.exists()

            await asyncio.to_thread(postgres.start)
            await asyncio.wait_for(outbox.drained(), 60)
            records = (await http.get("/v1/cdrs", headers=c.admin)).json()["records"]
            mine = [r for r in records if r["call_id"] == call["id"]]
            assert sorted(r["kind"] for r in mine) == ["call", "leg", "leg", "leg"]
            legs = {r["participant_id"]: r for r in mine if r["kind"] == "leg"}
            assert set(legs) == {pa.id, pb.id, bot.json()["id"]}
            assert legs[bot.json()["id"]]["end_reason"] == "removed"
            (call_record,) = [r for r in mine if r["kind"] == "call"]
            assert call_record["participants"] == 3 and call_record["end_reason"] == "ended"
            assert await c.server.store.count_cdrs(call["id"]) == {"call": 1, "leg": 3}
            # the users' tokens work again
            assert (await http.get("/v1/cdrs", headers=alice)).status_code == 200
            for p in (pa, pb):
                p.sim.close()

            # media went on through the outage: each heard the other's tone (and the bot's
            # until it left) for the whole time, at the level it had before
            for listener, other_hz in ((pa, BOB_HZ), (pb, ALICE_HZ)):
                heard = outage_heard[listener]
                seconds = len(heard) / MIX_RATE
                level = tone_levels_db(heard, [other_hz])[other_hz]
                print(f"{listener.sim.name} during the outage: {seconds:.2f} s of audio, the "
                      f"other's tone at {level:.1f} dBFS")
                assert seconds > 1.2 and level > -30
    run(scenario())
