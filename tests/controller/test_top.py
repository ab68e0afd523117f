"""`voicemix top` and `voicemix stats --json` against a real `voicemix engine` process (by its control
URL) and a real `voicemix serve` (HTTPS with its self-signed certificate, admin key found in its
data directory), during calls with real RTP participants. The screen is rendered headless: rich
prints to a string at a fixed width.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import ssl
import subprocess
import sys

import httpx
import uvloop
from rich.console import Console

from controller.testing import RestParticipant, continuous_tone, free_port
from controller.top import Target, TopError, render
from mixer.sim.participant import SimulatedParticipant
from tests.reliability.processes import ROOT, Service, media_ports, services

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}


def voicemix(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mixer.cli", *argv], capture_output=True, text=True,
                          timeout=30, env={**ENV, **(env or {})}, cwd=ROOT)


def screen(snapshot: dict, before: dict | None = None) -> str:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(render(snapshot, before))
    return console.file.getvalue()


async def join_engine(probe: httpx.AsyncClient, url: str, conference: str, name: str, freq: float):
    sim = SimulatedParticipant(name, freq, continuous_tone(freq, 30), srtp=(name == "bob"))
    response = await probe.post(f"{url}/conferences/{conference}/legs",
                                json={"sdp": await sim.offer(), "label": name})
    assert response.status_code == 201, response.text
    sim.accept(response.json()["sdp"])
    sim.start()
    return sim


def test_top_and_stats_against_an_engine_process(tmp_path):
    async def scenario():
        with services() as started:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            engine = Service("engine", ["engine", "--control", f"127.0.0.1:{port}", "--ports",
                                        media_ports()], tmp_path).start()
            started.append(engine)
            probe = httpx.AsyncClient(timeout=5.0)
            await engine.wait_ready(probe, f"{url}/stats")
            assert (await probe.post(f"{url}/conferences", json={"id": "standup"})).status_code == 201
            people = [await join_engine(probe, url, "standup", name, freq)
                      for name, freq in (("alice", 440.0), ("bob", 660.0))]
            await asyncio.sleep(1.5)

            stats = await asyncio.to_thread(voicemix, "stats", "--json", url)
            assert stats.returncode == 0, stats.stderr
            snapshot = json.loads(stats.stdout)
            assert snapshot["kind"] == "engine"
            (row,) = snapshot["engines"]
            assert row["state"] == "up" and row["legs"] == 2 and row["conferences"] == 1
            assert row["packets_in"] > 80
            (conference,) = snapshot["conferences"]
            assert conference["id"] == "standup" and conference["mode"] == "mcu"
            legs = {leg["label"]: leg for leg in snapshot["legs"]}
            assert set(legs) == {"alice", "bob"} and legs["bob"]["srtp"] is True
            for leg in legs.values():
                assert leg["packets_in"] > 40 and leg["jitter_ms"] is not None
                assert 4.0 <= leg["mos"] <= 4.5   # a clean loopback call
            assert set(conference["speakers"]) == {legs["alice"]["id"], legs["bob"]["id"]}

            shown = await asyncio.to_thread(voicemix, "top", "--once", "--interval", "0.5", url)
            assert shown.returncode == 0, shown.stderr
            for text in ("engines", "standup", "alice", "bob", "opus srtp", "up"):
                assert text in shown.stdout, (text, shown.stdout)

            # headless: two snapshots give rates; a drain shows
            target = Target(url)
            first = await asyncio.to_thread(target.snapshot)
            await asyncio.sleep(0.5)
            assert (await probe.post(f"{url}/drain", json={"timeout_s": 60})).status_code == 202
            second = await asyncio.to_thread(target.snapshot)
            text = screen(second, first)
            assert "draining" in text, text
            conference_line = next(line for line in text.splitlines() if "│ standup" in line
                                   and "mcu" in line)
            assert "alice" in conference_line and "bob" in conference_line, text  # the speakers
            engine_line = next(line for line in text.splitlines() if "draining" in line)
            cells = [cell.strip() for cell in engine_line.split("│") if cell.strip()]
            rate_in = float(cells[-3])
            assert 50 <= rate_in <= 200, engine_line   # two legs at 50 packets/s each
            for sim in people:
                sim.close()
            await probe.aclose()

    uvloop.run(asyncio.wait_for(scenario(), 120))


def test_top_and_stats_against_a_serve_process_over_https(tmp_path):
    async def scenario():
        with services() as started:
            api = free_port()
            data_dir = tmp_path / "data"
            serve = Service("serve", ["serve", "--listen", f"127.0.0.1:{api}", "--data-dir",
                                      str(data_dir)], tmp_path, env={
                "VOICEMIX_TURN_ENABLED": "false", "VOICEMIX_MONITOR_INTERVAL_S": "0.2"}).start()
            started.append(serve)
            url = f"https://127.0.0.1:{api}"
            probe = httpx.AsyncClient(timeout=5.0, verify=False)
            await serve.wait_ready(probe, f"{url}/v1/health")
            admin_key = json.loads((data_dir / "secrets.json").read_text())["admin_key"]
            cert = str(data_dir / "controller-cert.pem")
            async with httpx.AsyncClient(base_url=url, verify=ssl.create_default_context(cafile=cert),
                                         timeout=10.0) as http:
                admin = {"Authorization": f"Bearer {admin_key}"}
                for name in ("alice", "bob"):
                    assert (await http.post("/v1/identities", json={"id": name},
                                            headers=admin)).status_code == 201
                tokens = {}
                for name in ("alice", "bob"):
                    token = (await http.post(f"/v1/identities/{name}/tokens", json={"scopes": ["voip"]},
                                             headers=admin)).json()["token"]
                    tokens[name] = {"Authorization": f"Bearer {token}"}
                call = (await http.post("/v1/calls", json={"mode": "mcu", "invite": ["bob"]},
                                        headers=tokens["alice"])).json()
                people = []
                for name, freq in (("alice", 520.0), ("bob", 710.0)):
                    p = RestParticipant(SimulatedParticipant(name, freq, continuous_tone(freq, 30)),
                                        tokens[name])
                    assert (await p.join(http, call["id"])).status_code == 201
                    p.sim.start()
                    people.append(p)
                await asyncio.sleep(1.5)

                # the admin key and the certificate come from the data directory
                stats = await asyncio.to_thread(voicemix, "stats", "--json", url, "--data-dir", str(data_dir))
                assert stats.returncode == 0, stats.stderr
                snapshot = json.loads(stats.stdout)
                assert snapshot["kind"] == "controller"
                assert snapshot["controller"]["calls_local"] == 1
                (engine,) = snapshot["engines"]
                assert engine["name"] == "local" and engine["state"] == "up" and engine["legs"] == 2
                (listed,) = snapshot["conferences"]
                assert listed["id"] == call["id"] and listed["engine"] == "local"
                legs = {leg["label"]: leg for leg in snapshot["legs"]}
                assert set(legs) == {"alice", "bob"}
                assert all(4.0 <= leg["mos"] <= 4.5 and leg["packets_in"] > 40 for leg in legs.values())

                shown = await asyncio.to_thread(voicemix, "top", "--once", "--interval", "0.3", url,
                                                "--data-dir", str(data_dir))
                assert shown.returncode == 0, shown.stderr
                for text in ("controller: calls here 1", "local", call["id"], "alice", "bob"):
                    assert text in shown.stdout, (text, shown.stdout)

                # without the admin key: a clear refusal, not a traceback
                refused = await asyncio.to_thread(voicemix, "stats", "--json", url, "--cacert", cert,
                                                  "--data-dir", str(tmp_path / "elsewhere"))
                assert refused.returncode == 1 and "admin key" in refused.stderr
                wrong = Target(url, "not-the-key", cert)
                try:
                    await asyncio.to_thread(wrong.snapshot)
                    raise AssertionError("a wrong admin key must be refused")
                except TopError as exc:
                    assert "401" in str(exc)
                nothing = await asyncio.to_thread(voicemix, "stats", "--json", f"http://127.0.0.1:{free_port()}")
                assert nothing.returncode == 1 and "voicemix stats:" in nothing.stderr
                for p in people:
                    p.sim.close()
            await probe.aclose()

    uvloop.run(asyncio.wait_for(scenario(), 120))
