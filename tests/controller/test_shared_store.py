"""Two controllers as on two hosts: their own data directories, one Redis registry, one
PostgreSQL store (real servers on loopback), one remote engine. What one controller writes, the
other sees: identities and tokens, revocations (within the revocation cache's bound), CDRs of
calls handled by either (each exactly once), the recordings index, phone numbers and their
routes (looked up through the store: SIP routing of inbound calls is the PSTN work's)."""
import asyncio
import secrets

import pytest
import uvloop

from mixer.engine.client import HttpEngine
from controller.testing import redis_server, running_controller
from mixer.engine.control import start_control_api
from mixer.engine.engine import Engine
from mixer.settings import EngineSettings
from mixer.sdp import offer_audio

pytestmark = pytest.mark.store_independent  # PostgreSQL by design: SQLite cannot span hosts

BOUND_S = 0.5  # VOICEMIX_REVOCATION_CACHE_S of both controllers
# event-loop timers may fire a few ms before the monotonic clock the cache reads has moved on
TIMER_MARGIN_S = 0.05


def run(coro):
    return uvloop.run(coro)


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        if url is None:
            pytest.skip("redis-server is not installed (Debian package redis-server)")
        yield url


def offer(port: int) -> str:
    return offer_audio(local_ip="127.0.0.1", local_port=port, codecs=("opus",), rtcp_mux=True)[0]


def test_two_hosts_share_identities_revocations_cdrs_and_numbers(tmp_path, postgres_server,
                                                                 redis_url):
    database_url = postgres_server.create_database("two_hosts")
    # every host is configured with the same secrets (docs/controller.md, "Several hosts")
    shared = {"redis_url": redis_url, "database_url": database_url,
              "revocation_cache_s": BOUND_S, "admin_key": secrets.token_urlsafe(16),
              "token_secret": secrets.token_urlsafe(32), "turn_secret": secrets.token_urlsafe(16)}

    async def scenario():
        engine = Engine(EngineSettings(data_dir=tmp_path / "engine"))
        engine.start()
        runner, port = await start_control_api(engine)
        engine_url = f"http://127.0.0.1:{port}"
        try:
            async with running_controller(tmp_path / "host-a", [HttpEngine(engine_url)],
                                          **shared) as a, \
                    running_controller(tmp_path / "host-b", [HttpEngine(engine_url)],
                                       **shared) as b:
                # an identity and token made through A work on B, and the other way round
                alice = await a.user("alice")
                bob = await b.user("bob")
                for client, headers in ((b.client, alice), (a.client, bob)):
                    assert (await client.get("/v1/turn/credentials", headers=headers)).status_code == 200
                assert (await b.client.post("/v1/identities", json={"id": "alice"},
                                            headers=b.admin)).status_code == 409

                # revoked through A: refused by A at once, by B once the bound has passed
                assert (await b.client.get("/v1/turn/credentials", headers=alice)).status_code == 200
                assert (await a.client.delete("/v1/identities/alice/tokens",
                                              headers=a.admin)).status_code == 204
                refused = await a.client.get("/v1/turn/credentials", headers=alice)
                assert refused.status_code == 401
                assert refused.json()["error"]["code"] == "token_revoked"
                await asyncio.sleep(BOUND_S + TIMER_MARGIN_S)
                refused = await b.client.get("/v1/turn/credentials", headers=alice)
                assert refused.status_code == 401
                assert refused.json()["error"]["code"] == "token_revoked"
                # one token (by its jti) revoked through B: refused through A after the bound
                token = (await b.client.post("/v1/identities/bob/tokens", json={},
                                             headers=b.admin)).json()
                bob2 = {"Authorization": f"Bearer {token['token']}"}
                assert (await a.client.get("/v1/turn/credentials", headers=bob2)).status_code == 200
                assert (await b.client.delete(f"/v1/identities/bob/tokens/{token['id']}",
                                              headers=b.admin)).status_code == 204
                await asyncio.sleep(BOUND_S + TIMER_MARGIN_S)
                assert (await a.client.get("/v1/turn/credentials", headers=bob2)).status_code == 401
                assert (await a.client.get("/v1/turn/credentials", headers=bob)).status_code == 200

                # a call handled by each controller
                alice = await a.user("alice")  # a token issued after the revocation
                calls = []
                for n, (host, owner, guest, guest_name) in enumerate(
                        ((a, alice, bob, "bob"), (b, bob, alice, "alice"))):
                    created = await host.client.post("/v1/calls", json={"invite": [guest_name]},
                                                     headers=owner)
                    assert created.status_code == 201, created.text
                    call_id = created.json()["id"]
                    for i, headers in enumerate((owner, guest)):
                        joined = await host.client.post(f"/v1/calls/{call_id}/participants",
                                                        json={"sdp": offer(31000 + 4 * n + 2 * i)},
                                                        headers=headers)
                        assert joined.status_code == 201, joined.text
                    calls.append((host, call_id, owner))
                # a recording started through A and stopped through B: the engine records, the
                # shared store indexes it, and both controllers serve it (neither has the file on
                # its own disk: each streams it from the engine)
                recording_path = f"/v1/calls/{calls[0][1]}/recording"
                started = await a.client.post(recording_path, json={"action": "start",
                                                                    "format": "wav"},
                                              headers=alice)
                assert started.status_code == 200, started.text
                await asyncio.sleep(0.3)
                assert (await b.client.post(recording_path, json={"action": "stop"},
                                            headers=bob)).status_code == 200
                download = f"/v1/recordings/{started.json()['id']}"
                on_a = await a.client.get(download, headers=bob)
                assert on_a.status_code == 200 and on_a.content[:4] == b"RIFF"
                on_b = await b.client.get(download, headers=bob)
                assert on_b.status_code == 200 and on_b.content == on_a.content
                for host, call_id, owner in calls:
                    assert (await host.client.delete(f"/v1/calls/{call_id}",
                                                     headers=owner)).status_code == 204
                for host in (a, b):
                    records = (await host.client.get("/v1/cdrs", headers=host.admin)).json()["records"]
                    for n, (_, call_id, _) in enumerate(calls):
                        kinds = sorted(r["kind"] for r in records if r["call_id"] == call_id)
                        legs = ["leg"] * 2  # the recording is not a participant
                        assert kinds == ["call"] + legs, (call_id, kinds)
                    mine = (await host.client.get("/v1/cdrs", headers=alice)).json()["records"]
                    assert {r["call_id"] for r in mine if r["kind"] == "call"} == {c[1] for c in calls}

                # a number created through one is found, with its route, through the other
                route = {"call": calls[0][1]}
                assert await a.server.store.add_number("+14155550123", route) is True
                assert (await b.server.store.get_number("+14155550123"))["route"] == route
                assert await b.server.store.add_number("+14155550123", {"user": "bob"}) is False
                assert await b.server.store.delete_number("+14155550123") is True
                assert await a.server.store.get_number("+14155550123") is None
        finally:
            await runner.cleanup()
            engine.stop()
    run(scenario())
