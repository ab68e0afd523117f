"""Metrics of a real `voicemix serve` process, scraped during a call made through its REST API.

One participant's media goes through the embedded TURN server (TCP), so the scrape shows the
controller's, the in-process engine's and TURN's families from one endpoint: `/metrics` on the REST
API with the admin key, and the same text on `VOICEMIX_METRICS_LISTEN` without authentication.
"""
from __future__ import annotations

import asyncio

import httpx
import uvloop

from controller.testing import RestParticipant, continuous_tone, free_port
from mixer.sim.participant import SimulatedParticipant
from mixer.turn.client import TurnDatagramTransport
from tests.mixer.engine.test_metrics import samples, total, value
from tests.reliability.processes import ADMIN, ADMIN_KEY, ROOT, Service, services, user


def serve_service(tmp_path, api_port: int, metrics_port: int, turn_port: int) -> Service:
    return Service("serve", ["serve", "--listen", f"127.0.0.1:{api_port}", "--data-dir",
                             str(tmp_path / "data"), "--insecure-http"], tmp_path, env={
        "VOICEMIX_ADMIN_KEY": ADMIN_KEY, "VOICEMIX_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "VOICEMIX_TURN_LISTEN": f"127.0.0.1:{turn_port}", "VOICEMIX_MONITOR_INTERVAL_S": "0.2"})


def test_a_scrape_during_a_serve_call_shows_controller_engine_and_turn(tmp_path):
    async def scenario():
        with services() as started:
            api, metrics_port, turn_port = free_port(), free_port(), free_port()
            serve = serve_service(tmp_path, api, metrics_port, turn_port).start()
            started.append(serve)
            base = f"http://127.0.0.1:{api}"
            probe = httpx.AsyncClient(timeout=5.0)
            await serve.wait_ready(probe, f"{base}/v1/health")
            people = []
            async with httpx.AsyncClient(base_url=base, timeout=10.0) as http:
                alice, bob = await user(http, "alice"), await user(http, "bob")
                # authentication failures, counted by reason
                assert (await http.get("/metrics")).status_code == 401
                assert (await http.get("/metrics", headers={"Authorization": "Bearer nonsense"})
                        ).status_code == 401
                assert (await http.get("/metrics", headers=alice)).status_code == 403
                call = (await http.post("/v1/calls", json={"mode": "mcu", "invite": ["bob"]},
                                        headers=alice)).json()
                credentials = (await http.get("/v1/turn/credentials", headers=bob)).json()

                async def over_turn(protocol_factory):
                    return await TurnDatagramTransport.open(
                        ("127.0.0.1", turn_port), credentials["username"],
                        credentials["credential"], protocol_factory)

                pa = RestParticipant(SimulatedParticipant("alice", 520.0, continuous_tone(520.0, 5)), alice)
                pb = RestParticipant(SimulatedParticipant("bob", 710.0, continuous_tone(710.0, 5),
                                                          transport_factory=over_turn), bob)
                for p in (pa, pb):
                    response = await p.join(http, call["id"])
                    assert response.status_code == 201, response.text
                    p.sim.start()
                    people.append(p)
                await asyncio.sleep(1.5)

                response = await http.get("/metrics", headers=ADMIN)
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
                scraped = samples(response.text)
                unauthenticated = await probe.get(f"http://127.0.0.1:{metrics_port}/metrics")
                assert unauthenticated.status_code == 200
                also = samples(unauthenticated.text)
                assert {name for name, _ in also} == {name for name, _ in scraped}

                # the controller
                assert value(scraped, "voicemix_controller_calls") == 1
                assert value(scraped, "voicemix_controller_calls_created_total", mode="mcu") == 1
                assert value(scraped, "voicemix_controller_participants_added_total", kind="voip") == 2
                assert value(scraped, "voicemix_controller_token_failures_total", reason="token_missing") == 1
                assert value(scraped, "voicemix_controller_token_failures_total", reason="token_invalid") == 1
                assert value(scraped, "voicemix_controller_token_failures_total",
                             reason="insufficient_scope") == 1
                assert value(scraped, "voicemix_controller_http_responses_total", status="201") >= 5
                assert value(scraped, "voicemix_controller_engine_up", engine="local") == 1
                assert value(scraped, "voicemix_controller_engine_draining", engine="local") == 0
                # the in-process engine: media of both legs, one of them relayed by TURN
                assert value(scraped, "voicemix_engine_legs", mode="mcu", transport="rtp") == 2
                assert value(scraped, "voicemix_engine_packets_received_total",
                             mode="mcu", transport="rtp") > 80
                assert value(scraped, "voicemix_engine_packets_sent_total", mode="mcu", transport="rtp") > 80
                assert value(scraped, "voicemix_engine_tick_lateness_seconds_count") > 50
                # TURN
                assert value(scraped, "voicemix_turn_allocations") == 1
                assert value(scraped, "voicemix_turn_allocations_created_total") == 1
                assert value(scraped, "voicemix_turn_relayed_bytes_total", direction="to_peer") > 2000
                assert value(scraped, "voicemix_turn_relayed_bytes_total", direction="to_client") > 2000
                assert total(scraped, "voicemix_turn_requests_total") >= 3  # allocate, permission, bind
                # the process
                assert value(scraped, "process_resident_memory_bytes") > 0
                # every family is documented in docs/operations.md
                page = (ROOT / "docs" / "operations.md").read_text()
                undocumented = set()
                for name, _ in scraped:
                    if not name.startswith("voicemix_"):
                        continue
                    base = name.split("_", 2)[2]
                    for suffix in ("_bucket", "_count", "_sum"):
                        base = base.removesuffix(suffix)
                    if base not in page:
                        undocumented.add(name)
                assert not undocumented, f"not in docs/operations.md: {sorted(undocumented)}"

                assert (await http.delete(f"/v1/calls/{call['id']}", headers=alice)).status_code == 204
                after = samples((await http.get("/metrics", headers=ADMIN)).text)
                assert value(after, "voicemix_controller_calls") == 0
                assert value(after, "voicemix_controller_calls_ended_total", reason="ended") == 1
                assert value(after, "voicemix_engine_legs", mode="mcu", transport="rtp") == 0
                assert value(after, "voicemix_engine_packets_received_total", mode="mcu", transport="rtp") \
                    >= value(scraped, "voicemix_engine_packets_received_total", mode="mcu", transport="rtp")
            for p in people:
                p.sim.close()
            await probe.aclose()

    uvloop.run(asyncio.wait_for(scenario(), 120))
