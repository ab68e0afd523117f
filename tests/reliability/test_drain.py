"""Graceful drain, end to end: real `voicemix engine` and `voicemix controller` processes, SIGTERM.

A drained engine takes no new conferences, the controller places new calls on another engine, the
calls on the draining engine keep their media (and may still gain participants) until the drain
deadline, when the controller ends them with complete CDRs (`engine_drained`); then the engine
process exits by itself. A second SIGTERM stops an engine at once.
"""
from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import uvloop

from controller.testing import RestParticipant, continuous_tone, free_port
from mixer.sim.participant import SimulatedParticipant
from tests.reliability.processes import (
    ADMIN, ADMIN_KEY, Service, media_ports, services, user,
)

DRAIN_TIMEOUT_S = 5.0
MONITOR_INTERVAL_S = 0.2
SCENARIO_LIMIT_S = 120.0


def run(coro):
    return uvloop.run(asyncio.wait_for(coro, SCENARIO_LIMIT_S))


def engine(log_dir, name: str, port: int, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> Service:
    return Service(name, ["engine", "--control", f"127.0.0.1:{port}", "--ports", media_ports()],
                   log_dir, env={"VOICEMIX_DRAIN_TIMEOUT_S": str(drain_timeout_s),
                                 "VOICEMIX_LOG_FORMAT": "json"})


async def exited(service: Service, within_s: float) -> int | None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            return service.process.returncode
        await asyncio.sleep(0.05)
    return None


def events_logged(service: Service) -> list[dict]:
    return [json.loads(line) for line in service.log_path.read_text().splitlines()
            if line.startswith("{")]


async def conference_ids(probe: httpx.AsyncClient, engine_url: str) -> set[str]:
    return {c["id"] for c in (await probe.get(f"{engine_url}/conferences")).json()["conferences"]}


def test_sigterm_drains_the_engine_and_the_controller_places_calls_elsewhere(tmp_path):
    async def scenario():
        with services() as started:
            probe = httpx.AsyncClient(timeout=5.0)
            ports = [free_port(), free_port()]
            urls = [f"http://127.0.0.1:{p}" for p in ports]
            engines = [engine(tmp_path, f"engine{i}", p).start() for i, p in enumerate(ports)]
            started.extend(engines)
            api = free_port()
            controller = Service("controller", [
                "controller", "--listen", f"127.0.0.1:{api}", "--data-dir", str(tmp_path / "data"),
                "--insecure-http", "--engine", urls[0], "--engine", urls[1]], tmp_path, env={
                "VOICEMIX_ADMIN_KEY": ADMIN_KEY, "VOICEMIX_TURN_ENABLED": "false",
                "VOICEMIX_MONITOR_INTERVAL_S": str(MONITOR_INTERVAL_S)}).start()
            started.append(controller)
            for service, url in zip(engines, urls):
                await service.wait_ready(probe, f"{url}/stats")
            base = f"http://127.0.0.1:{api}"
            await controller.wait_ready(probe, f"{base}/v1/health")
            async with httpx.AsyncClient(base_url=base, timeout=10.0) as http:
                alice, bob = await user(http, "alice"), await user(http, "bob")
                call = (await http.post("/v1/calls", json={"mode": "mcu", "invite": ["bob"]},
                                        headers=alice)).json()
                path = f"/v1/calls/{call['id']}"
                hosts = [call["id"] in await conference_ids(probe, url) for url in urls]
                assert sorted(hosts) == [False, True]
                index = hosts.index(True)
                draining, other = engines[index], engines[1 - index]
                draining_url, other_url = urls[index], urls[1 - index]
                events: list = []
                stream = asyncio.create_task(follow(http, f"{path}/events", alice, events))
                pa = RestParticipant(SimulatedParticipant("alice", 520.0, continuous_tone(520.0, 20)), alice)
                pb = RestParticipant(SimulatedParticipant("bob", 710.0, continuous_tone(710.0, 20)), bob)
                for p in (pa, pb):
                    assert (await p.join(http, call["id"])).status_code == 201
                    p.sim.start()
                await asyncio.sleep(1.0)

                before = {p["id"]: p["stats"]["packets_in"]
                          for p in (await http.get(path, headers=alice)).json()["participants"]}
                heard_before = len(pa.sim.received.packets)
                sigterm_at = time.monotonic()
                draining.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                stats = (await probe.get(f"{draining_url}/stats")).json()
                assert stats["draining"] is True and stats["conferences"] == 1
                metrics = (await probe.get(f"{draining_url}/metrics")).text
                assert "voicemix_engine_draining 1.0" in metrics
                # the engine refuses new conferences itself...
                refused = await probe.post(f"{draining_url}/conferences", json={"mode": "mcu"})
                assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
                # ...and the controller places new calls on the other engine
                for _ in range(3):
                    new = await http.post("/v1/calls", json={"mode": "mcu"}, headers=bob)
                    assert new.status_code == 201, new.text
                    assert new.json()["id"] in await conference_ids(probe, other_url)
                # the call on the draining engine goes on, and may still gain a participant
                carol = RestParticipant(SimulatedParticipant("carol", 930.0, continuous_tone(930.0, 20)), alice)
                assert (await carol.join(http, call["id"])).status_code == 201
                carol.sim.start()
                await asyncio.sleep(1.5)
                live = (await http.get(path, headers=alice)).json()
                assert len(live["participants"]) == 3
                for p in live["participants"]:  # media flowed all along: ~50 packets/s each way
                    assert p["stats"]["packets_in"] - before.get(p["id"], 0) > 50, p
                assert len(pa.sim.received.packets) - heard_before > 80

                # at the deadline (less a margin) the controller ends the call, with records
                await asyncio.wait_for(stream, DRAIN_TIMEOUT_S + 5)
                ended_after = time.monotonic() - sigterm_at
                kinds = [e["type"] for e in events]
                assert "engine_draining" in kinds
                assert kinds[-1] == "call_ended" and events[-1]["reason"] == "engine_drained"
                assert DRAIN_TIMEOUT_S - 3.0 < ended_after < DRAIN_TIMEOUT_S + 1.0, ended_after
                records = [r for r in (await http.get("/v1/cdrs", headers=ADMIN)).json()["records"]
                           if r["call_id"] == call["id"]]
                assert sorted(r["kind"] for r in records) == ["call", "leg", "leg", "leg"]
                assert {r["end_reason"] for r in records} == {"engine_drained"}
                for record in records:
                    if record["kind"] == "leg":
                        # from the engine's final counters, not from monitor samples
                        assert record["packets_in"] > 40 and record["packets_out"] > 40
                        assert record["mos"] is not None

                # with nothing left, the engine exits by itself (cleanly); the other runs on
                assert await exited(draining, 5.0) == 0, draining.log_path.read_text()[-2000:]
                assert other.process.poll() is None
                logged = [e.get("event") for e in events_logged(draining)]
                assert logged.index("drain_started") < logged.index("drain_finished")
                for p in (pa, pb, carol):
                    p.sim.close()
                stats = (await http.get("/v1/stats", headers=ADMIN)).json()
                assert "error" in stats["engines"][draining_url]  # gone
                assert (await http.post("/v1/calls", json={"mode": "mcu"},
                                        headers=alice)).status_code == 201
            await probe.aclose()
    run(scenario())


async def follow(http: httpx.AsyncClient, path: str, headers: dict, out: list) -> None:
    async with http.stream("GET", path, headers=headers,
                           timeout=httpx.Timeout(10.0, read=None)) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))


def test_the_engine_ends_what_is_left_at_the_deadline_and_a_second_sigterm_stops_at_once(tmp_path):
    async def scenario():
        with services() as started:
            probe = httpx.AsyncClient(timeout=5.0)
            # alone (no controller to end its calls): the engine ends them at its deadline
            port = free_port()
            alone = engine(tmp_path, "alone", port, drain_timeout_s=1.0).start()
            started.append(alone)
            url = f"http://127.0.0.1:{port}"
            await alone.wait_ready(probe, f"{url}/stats")
            assert (await probe.post(f"{url}/conferences", json={"id": "room"})).status_code == 201
            sim = SimulatedParticipant("x", 440.0, continuous_tone(440.0, 10))
            leg = await probe.post(f"{url}/conferences/room/legs", json={"sdp": await sim.offer()})
            assert leg.status_code == 201
            sim.accept(leg.json()["sdp"])
            sim.start()
            await asyncio.sleep(0.5)
            alone.process.send_signal(signal.SIGTERM)
            assert await exited(alone, 6.0) == 0, alone.log_path.read_text()[-2000:]
            logged = {e.get("event"): e for e in events_logged(alone)}
            assert logged["drain_deadline"]["conferences_ended"] == 1
            assert {"leg_left", "conference_deleted", "drain_finished"} <= logged.keys()
            sim.close()

            # a second SIGTERM stops at once, however far the deadline
            port = free_port()
            stubborn = engine(tmp_path, "stubborn", port, drain_timeout_s=600.0).start()
            started.append(stubborn)
            url = f"http://127.0.0.1:{port}"
            await stubborn.wait_ready(probe, f"{url}/stats")
            assert (await probe.post(f"{url}/conferences", json={"id": "room"})).status_code == 201
            stubborn.process.send_signal(signal.SIGTERM)
            assert await exited(stubborn, 1.0) is None  # draining: still there
            assert (await probe.get(f"{url}/stats")).json()["draining"] is True
            stubborn.process.send_signal(signal.SIGTERM)
            assert await exited(stubborn, 5.0) == 0
            await probe.aclose()
    run(scenario())


def test_voicemix_serve_drains_its_engine_on_sigterm(tmp_path):
    async def scenario():
        with services() as started:
            api = free_port()
            serve = Service("serve", ["serve", "--listen", f"127.0.0.1:{api}", "--data-dir",
                                      str(tmp_path / "data"), "--insecure-http"], tmp_path, env={
                "VOICEMIX_ADMIN_KEY": ADMIN_KEY, "VOICEMIX_TURN_ENABLED": "false",
                "VOICEMIX_MONITOR_INTERVAL_S": str(MONITOR_INTERVAL_S),
                "VOICEMIX_DRAIN_TIMEOUT_S": "3", "VOICEMIX_LOG_FORMAT": "json"}).start()
            started.append(serve)
            base = f"http://127.0.0.1:{api}"
            probe = httpx.AsyncClient(timeout=5.0)
            await serve.wait_ready(probe, f"{base}/v1/health")
            async with httpx.AsyncClient(base_url=base, timeout=10.0) as http:
                alice = await user(http, "alice")
                call = (await http.post("/v1/calls", json={"mode": "mcu"}, headers=alice)).json()
                pa = RestParticipant(SimulatedParticipant("alice", 520.0, continuous_tone(520.0, 10)), alice)
                assert (await pa.join(http, call["id"])).status_code == 201
                pa.sim.start()
                await asyncio.sleep(0.5)
                serve.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                refused = await http.post("/v1/calls", json={"mode": "mcu"}, headers=alice)
                assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
                assert (await http.get(f"/v1/calls/{call['id']}", headers=alice)).status_code == 200
                assert await exited(serve, 8.0) == 0, serve.log_path.read_text()[-2000:]
                pa.sim.close()
            logged = events_logged(serve)
            ended = [e for e in logged if e.get("event") == "call_ended"]
            assert [e["reason"] for e in ended] == ["engine_drained"]
            assert "drain_finished" in [e.get("event") for e in logged]
            await probe.aclose()
    run(scenario())
