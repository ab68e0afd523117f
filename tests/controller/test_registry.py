"""The call registry: one contract for the in-memory and the Redis implementation (a real
redis-server), and two controllers sharing calls through Redis in front of one remote engine."""
import asyncio
import json

import pytest
import uvloop

from mixer.engine.client import HttpEngine
from controller.registry import MemoryRegistry, RedisRegistry
from controller.testing import (
    RestParticipant, continuous_tone, redis_server, running_controller,
)
from mixer.analysis import tone_levels_db
from mixer.engine.control import start_control_api
from mixer.engine.engine import Engine
from mixer.settings import EngineSettings
from mixer.sim.participant import SimulatedParticipant


def run(coro):
    return uvloop.run(coro)


async def collect_events(client, path: str, headers: dict, out: list) -> None:
    async with client.stream("GET", path, headers=headers, timeout=30.0) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        if url is None:
            pytest.skip("redis-server is not installed (Debian package redis-server)")
        yield url


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_registry_contract(kind, request):
    url = request.getfixturevalue("redis_url") if kind == "redis" else None

    async def scenario():
        registry = MemoryRegistry() if kind == "memory" else RedisRegistry(url, prefix="contract:")
        call = {"id": "c1", "owner": "alice", "mode": "mcu", "created_at": 1.5, "type": "one_to_one"}
        await registry.create(call, {"alice"}, {"bob"})
        got = await registry.get("c1")
        assert got["owner"] == "alice" and got["created_at"] == 1.5
        assert got["members"] == {"alice"} and got["invited"] == {"bob"} and got["participants"] == {}
        assert await registry.get("nope") is None
        await registry.update("c1", type="group")
        assert (await registry.get("c1"))["type"] == "group"
        assert await registry.set_if_absent("c1", "recording", "r1") is True
        assert await registry.set_if_absent("c1", "recording", "r2") is False
        await registry.clear("c1", "recording")
        assert "recording" not in await registry.get("c1")
        assert await registry.set_if_absent("c1", "recording", "r3") is True
        await registry.add_member("c1", "bob")
        await registry.add_invited("c1", {"carol"})
        assert await registry.put_participant("c1", {"id": "p1", "kind": "voip"}) == 1
        assert await registry.put_participant("c1", {"id": "p2", "kind": "bot"}) == 2
        got = await registry.get("c1")
        assert got["members"] == {"alice", "bob"} and got["invited"] == {"bob", "carol"}
        assert set(got["participants"]) == {"p1", "p2"}
        # of two removers of the same participant (or enders of the same call) exactly one wins
        results = await asyncio.gather(registry.remove_participant("c1", "p1"),
                                       registry.remove_participant("c1", "p1"))
        assert sorted(r is None for r in results) == [False, True]
        results = await asyncio.gather(registry.delete("c1"), registry.delete("c1"))
        assert sorted(r is None for r in results) == [False, True]
        winner = next(r for r in results if r is not None)
        assert set(winner["participants"]) == {"p2"}
        assert await registry.get("c1") is None
        await registry.update("c1", type="group")  # no resurrection of an ended call
        assert await registry.get("c1") is None
        await registry.close()
    run(scenario())


def test_two_controllers_share_calls_through_redis(tmp_path, redis_url):
    async def scenario():
        engine = Engine(EngineSettings(data_dir=tmp_path / "engine"))
        engine.start()
        runner, port = await start_control_api(engine)
        engine_url = f"http://127.0.0.1:{port}"
        data = tmp_path / "shared"
        try:
            async with running_controller(data, [HttpEngine(engine_url)], redis_url=redis_url) as a, \
                    running_controller(data, [HttpEngine(engine_url)], redis_url=redis_url) as b:
                assert a.server.port != b.server.port
                alice = await a.user("alice")
                bob = await b.user("bob")  # same store and secrets: tokens work on both
                call = (await a.client.post("/v1/calls", json={"invite": ["bob"]}, headers=alice)).json()
                path = f"/v1/calls/{call['id']}"
                assert (await b.client.get(path, headers=bob)).status_code == 200
                # events of actions handled by B reach a subscriber connected to A (Redis pub/sub)
                events: list = []
                stream = asyncio.create_task(collect_events(a.client, f"{path}/events", alice, events))
                while a.server.events.subscribers(call["id"]) == 0:
                    await asyncio.sleep(0.01)
                pa = RestParticipant(SimulatedParticipant("alice", 520.0, continuous_tone(520.0, 3)), alice)
                pb = RestParticipant(SimulatedParticipant("bob", 710.0, continuous_tone(710.0, 3)), bob)
                assert (await pa.join(a.client, call["id"])).status_code == 201
                assert (await pb.join(b.client, call["id"])).status_code == 201
                pa.sim.start()
                pb.sim.start()
                await asyncio.sleep(1.2)
                seen_by_a = (await a.client.get(path, headers=alice)).json()
                seen_by_b = (await b.client.get(path, headers=bob)).json()
                for seen in (seen_by_a, seen_by_b):
                    assert [p["identity"] for p in seen["participants"]] == ["alice", "bob"]
                    assert seen["members"] == ["alice", "bob"]
                    assert all(p["stats"]["packets_in"] > 0 for p in seen["participants"])
                # a bot added through B makes the call a group call for A too
                bot = await b.client.post(f"{path}/participants", json={"kind": "bot", "play": "tone:930"},
                                          headers=bob)
                assert bot.status_code == 201
                assert (await a.client.get(path, headers=alice)).json()["type"] == "group"
                await asyncio.sleep(0.5)
                bot_on_a = await a.client.post(f"{path}/participants",
                                               json={"kind": "bot", "play": "tone:1170"}, headers=alice)
                assert bot_on_a.status_code == 201
                # a recording started through A and stopped through B (the engine records: either
                # controller can stop it)
                started = await a.client.post(f"{path}/recording",
                                              json={"action": "start", "format": "wav"}, headers=alice)
                assert started.status_code == 200
                await asyncio.sleep(0.6)
                stopped = await b.client.post(f"{path}/recording", json={"action": "stop"}, headers=bob)
                assert stopped.status_code == 200
                recording = f"/v1/recordings/{started.json()['id']}"
                for _ in range(50):
                    download = await b.client.get(recording, headers=bob)
                    if download.status_code != 409:
                        break
                    await asyncio.sleep(0.1)
                assert download.status_code == 200 and len(download.content) > 44 + 48000
                assert (await b.client.delete(path, headers=bob)).status_code == 204
                # A notices (its monitor): nothing of the call lingers there
                for _ in range(50):
                    if call["id"] not in a.server.calls._monitors:
                        break
                    await asyncio.sleep(0.1)
                assert call["id"] not in a.server.calls._monitors
                await asyncio.wait_for(stream, 5)
                joined = [e["participant"]["identity"] for e in events if e["type"] == "participant_joined"]
                assert "bob" in joined and "alice" in joined  # bob joined through B
                assert events[-1]["type"] == "call_ended" and a.server.events.relayed > 0
                assert (await a.client.get(path, headers=alice)).status_code == 404
                assert (await a.client.delete(path, headers=alice)).status_code == 404
                pa.sim.close()
                pb.sim.close()
                heard, _ = pa.sim.heard_audio()
                assert tone_levels_db(heard[24000:], [710.0])[710.0] > -30
                records = (await a.client.get("/v1/cdrs", headers=a.admin)).json()["records"]
                assert sorted(r["kind"] for r in records) == ["call"] + ["leg"] * 4  # 2 people, 2 bots
                assert engine.stats()["conferences"] == 0
        finally:
            await runner.cleanup()
            engine.stop()
    run(scenario())


def test_auto_mode_picks_relay_or_sfu_above_the_threshold_or_falls_back_to_mcu(tmp_path):
    async def scenario():
        async with running_controller(tmp_path, auto_sfu_threshold=4) as c:
            alice = await c.user("alice")
            small = (await c.client.post("/v1/calls", json={"mode": "auto", "expected_participants": 4},
                                         headers=alice)).json()
            relay_available = "relay" in Engine.conference_types
            assert small["mode"] == ("relay" if relay_available else "mcu")
            assert small["requested_mode"] == "auto"
            large = (await c.client.post("/v1/calls", json={"mode": "auto", "expected_participants": 5},
                                         headers=alice)).json()
            sfu_available = "sfu" in Engine.conference_types
            assert large["mode"] == ("sfu" if sfu_available else "mcu")
            explicit = await c.client.post("/v1/calls", json={"mode": "sfu"}, headers=alice)
            if sfu_available:
                assert explicit.status_code == 201
            else:
                assert explicit.status_code == 400
                assert explicit.json()["error"]["code"] == "unsupported_mode"
    run(scenario())

