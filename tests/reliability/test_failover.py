"""Failover: the media engine killed mid-call, and the controller killed and restarted mid-call.

Real processes (`voicemix engine`, `voicemix controller` started as `python -m mixer.cli ...`),
killed with SIGKILL, a real `redis-server`, real RTP participants joined through the REST API.
What a participant heard is measured from the audio it decoded (mixer.analysis.tone_envelope),
never from internal flags. Two cheaper in-process tests cover what a process kill cannot set up
on cue: an engine that lost the conference (restarted), and a controller that is alive but whose
lease ran out (split brain).
"""
from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvloop

from controller.calls import cancel_and_wait
from controller.cdr import parse_iso
from mixer.engine.client import HttpEngine
from controller.registry import MemoryRegistry, RedisRegistry
from controller.testing import (
    RestParticipant, continuous_tone, free_port, redis_server, running_controller,
)
from mixer import _rtp
from mixer.analysis import tone_envelope, tone_levels_db
from mixer.rtp.dtmf import DTMF_KEYS, TelephoneEvent
from mixer.sdp import parse as parse_sdp
from mixer.codec import MIX_RATE
from mixer.sim.participant import SimulatedParticipant
from tests.reliability import processes
from tests.reliability.processes import (
    ADMIN, Service, engine_and_controller, engine_service, media_ports, services, user,
)

ALICE_HZ, BOB_HZ, BOT_HZ = 520.0, 710.0, 930.0
# The longest stretch a listener may miss a talker: the decoder conceals up to 3 frames (G.711
# repetition; Opus PLC likewise), as in tests/controller/test_call_lifecycle.py.
MAX_GAP_MS = 60.0
MONITOR_INTERVAL_S = 0.2
FAILURE_POLLS = 3
LEASE_S = 1.5


SCENARIO_LIMIT_S = 180.0  # a guard against hangs (a failure, not a hung CI), far above any run


def run(coro):
    return uvloop.run(asyncio.wait_for(coro, SCENARIO_LIMIT_S))


CONTROLLER_ENV = {"VOICEMIX_MONITOR_INTERVAL_S": str(MONITOR_INTERVAL_S),
                  "VOICEMIX_ENGINE_FAILURE_POLLS": str(FAILURE_POLLS),
                  "VOICEMIX_CONTROLLER_LEASE_S": str(LEASE_S)}


def decode(data: bytes, path: Path) -> np.ndarray:
    """A downloaded recording as ffmpeg decodes it (48 kHz mono)."""
    path.write_bytes(data)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-ar", str(MIX_RATE), "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype="<i2")


def controller_service(log_dir: Path, name: str, port: int, data_dir: Path, engine_url: str,
                       redis_url: str | None = None) -> Service:
    return processes.controller_service(log_dir, name, port, data_dir, engine_url, redis_url,
                                        env=CONTROLLER_ENV)


# ------------------------------------------------------------------------------------- helpers
async def follow_events(http: httpx.AsyncClient, path: str, headers: dict, out: list,
                        subscribed: asyncio.Event) -> None:
    """Append a call's Server-Sent Events to `out` until the stream ends; `subscribed` is set once
    the controller has registered the stream."""
    async with http.stream("GET", path, headers=headers,
                           timeout=httpx.Timeout(10.0, read=None)) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith(": subscribed"):
                subscribed.set()
            elif line.startswith("data: "):
                out.append(json.loads(line[6:]))


def longest_gap(envelope: np.ndarray) -> tuple[float, int]:
    """Longest run (ms) where a continuous tone's envelope falls below half its median, and the
    index where it ends."""
    quiet = envelope < 0.5 * np.median(envelope)
    longest = run_length = end = 0
    for i, q in enumerate(quiet):
        run_length = run_length + 1 if q else 0
        if run_length > longest:
            longest, end = run_length, i
    return longest * 1000.0 / MIX_RATE, end


def gap_between(listener: SimulatedParticipant, talker_hz: float, start_s: float,
                end_s: float) -> tuple[float, float, float]:
    """(longest gap in ms, arrival time where it ends, seconds of audio) of `talker_hz` in what
    `listener` decoded from packets that arrived in [start_s, end_s) (monotonic)."""
    pcm, times = listener.heard_audio()
    envelope = tone_envelope(pcm, talker_hz)
    # concealed samples have no arrival time: they belong to the stretch they fill
    filled = np.copy(times)
    valid = ~np.isnan(filled)
    filled[~valid] = np.interp(np.flatnonzero(~valid), np.flatnonzero(valid), filled[valid])
    window = (filled >= start_s) & (filled < end_s)
    gap, end = longest_gap(envelope[window])
    return gap, float(filled[window][end]), window.sum() / MIX_RATE


async def engine_view(probe: httpx.AsyncClient, engine_url: str, conference: str) -> dict:
    """The engine's own clock health (worst tick lateness of the last minute) and its jitter
    buffer underruns on the call's two voice legs."""
    stats = (await probe.get(f"{engine_url}/stats")).json()
    legs = (await probe.get(f"{engine_url}/conferences/{conference}")).json()["legs"]
    return {"late_max_ms": stats["tick_lateness_max_ms"] + 20 * stats["skipped_ticks"],
            "underruns": sum(leg["jitter_buffer"]["underruns"] for leg in legs
                             if leg["label"] in ("alice", "bob"))}


async def press_keys(participant: RestParticipant, answer_sdp: str, keys: str) -> None:
    """RFC 4733 key presses from the participant's RTP socket: updates every 20 ms, then the end
    packet three times (section 2.5)."""
    media = parse_sdp(answer_sdp).media[0]
    pt = next(int(value.split()[0]) for value in media.attributes("rtpmap")
              if "telephone-event" in value)
    for n, key in enumerate(keys):
        timestamp = random.getrandbits(31)
        event = DTMF_KEYS.index(key)
        packets = [TelephoneEvent(event, False, 10, 960 * (k + 1)) for k in range(4)]
        packets += [TelephoneEvent(event, True, 10, 960 * 5)] * 3
        for k, packet in enumerate(packets):
            participant.sim._sendto(_rtp.build_rtp(pt, (participant.sim._seq + k) & 0xFFFF,
                                                    timestamp, 0xD7F, packet.serialize(), k == 0))
            await asyncio.sleep(0.02)
        participant.sim._seq = (participant.sim._seq + len(packets)) & 0xFFFF


def leg_records(records: list[dict]) -> dict[str, dict]:
    return {r["participant_id"]: r for r in records if r["kind"] == "leg"}


# --------------------------------------------------------------------------- engine killed mid-call
def test_engine_killed_mid_call_ends_the_call_with_engine_failed_and_cdrs(tmp_path):
    async def scenario():
        with services() as started:
            probe = httpx.AsyncClient()
            deployed = await engine_and_controller(tmp_path, started, probe, CONTROLLER_ENV)
            engine, engine_url, base = deployed.engine, deployed.engine_url, deployed.base_url
            control_port, ports = deployed.control_port, deployed.media_ports
            async with httpx.AsyncClient(base_url=base, timeout=10.0) as http:
                alice, bob = await user(http, "alice"), await user(http, "bob")
                call = (await http.post("/v1/calls", json={"mode": "mcu", "invite": ["bob"]},
                                        headers=alice)).json()
                path = f"/v1/calls/{call['id']}"
                events: list = []
                subscribed = asyncio.Event()
                stream = asyncio.create_task(follow_events(http, f"{path}/events", alice, events,
                                                           subscribed))
                await asyncio.wait_for(subscribed.wait(), 5)
                pa = RestParticipant(SimulatedParticipant("alice", ALICE_HZ,
                                                          continuous_tone(ALICE_HZ, 8)), alice)
                pb = RestParticipant(SimulatedParticipant("bob", BOB_HZ,
                                                          continuous_tone(BOB_HZ, 8)), bob)
                for p in (pa, pb):
                    assert (await p.join(http, call["id"])).status_code == 201
                    p.sim.start()
                recording = await http.post(f"{path}/recording", headers=alice, json={
                    "action": "start", "tracks": "mix+participants"})
                assert recording.status_code == 200, recording.text
                recording_id = recording.json()["id"]
                recording_at = time.time()
                await asyncio.sleep(1.5)  # the monitor samples the legs several times
                before = (await http.get(path, headers=alice)).json()
                assert all(p["stats"]["packets_in"] > 20 for p in before["participants"])

                killed_at = time.time()
                await engine.kill()
                # meanwhile (before FAILURE_POLLS polls have failed) the call answers 503
                meanwhile = await http.get(path, headers=bob)
                assert meanwhile.status_code == 503, meanwhile.text
                assert meanwhile.json()["error"]["code"] == "engine_unavailable"
                assert set(meanwhile.json()["error"]) == {"code", "message"}
                assert "127.0.0.1" not in meanwhile.json()["error"]["message"]

                await asyncio.wait_for(stream, 10)  # the stream ends with the call
                ended_after = time.time() - killed_at
                for p in (pa, pb):
                    p.sim.close()
                kinds = [e["type"] for e in events]
                print(f"engine killed: call ended {ended_after:.2f} s later "
                      f"({FAILURE_POLLS} polls at {MONITOR_INTERVAL_S} s); events {kinds}")
                assert kinds[-1] == "call_ended" and events[-1]["reason"] == "engine_failed"
                assert "engine_unavailable" in kinds
                assert kinds.index("engine_unavailable") < kinds.index("call_ended")
                (cut,) = [e for e in events if e["type"] == "recording_stopped"]
                assert cut["reason"] == "engine_failed" and cut["duration_s"] > 0.5
                failed = {e["participant_id"] for e in events
                          if e["type"] == "participant_left" and e["reason"] == "engine_failed"}
                assert failed == {pa.id, pb.id}
                gone = await http.get(path, headers=alice)
                assert gone.status_code == 404 and gone.json()["error"]["code"] == "no_such_call"

                # the CDRs: written once, from what the monitor sampled before the engine died
                records = (await http.get("/v1/cdrs", headers=ADMIN)).json()["records"]
                assert sorted(r["kind"] for r in records) == ["call", "leg", "leg"]
                assert {r["end_reason"] for r in records} == {"engine_failed"}
                legs = leg_records(records)
                assert set(legs) == {pa.id, pb.id}
                for leg in legs.values():
                    assert leg["codec"] == "opus" and leg["mode"] == "mcu"
                    assert leg["packets_in"] > 50 and leg["packets_out"] > 50
                    assert leg["bytes_in"] > 0 and leg["jitter_buffer_ms"] > 0
                    assert leg["jitter_max_ms"] >= leg["jitter_mean_ms"] >= 0
                    assert 1.0 <= leg["mos"] <= 4.5
                    assert parse_iso(leg["started_at"]) < killed_at <= parse_iso(leg["ended_at"])
                    assert leg["duration_s"] > 1.4
                (call_record,) = [r for r in records if r["kind"] == "call"]
                assert call_record["participants"] == 2 and call_record["mos"] is not None
                assert call_record["started_at"] == call["created_at"]
                (recorded,) = call_record["recordings"]
                assert recorded["id"] == recording_id and recorded["state"] == "interrupted"
                # the recording cannot be served while no engine answers for it
                assert (await http.get(f"/v1/recordings/{recording_id}",
                                       headers=alice)).status_code == 503
                # the store answers every way it did before: filters, a user's view, CSV
                assert (await http.get("/v1/cdrs", params={"from": call["created_at"]},
                                       headers=ADMIN)).json()["records"] == records
                bob_view = (await http.get("/v1/cdrs", headers=bob)).json()["records"]
                assert {r["participant_id"] for r in bob_view} == {None, pb.id}
                csv_lines = (await http.get("/v1/cdrs", params={"format": "csv"},
                                            headers=ADMIN)).text.splitlines()
                assert len(csv_lines) == 4 and all("engine_failed" in line for line in csv_lines[1:])
                stats = (await http.get("/v1/stats", headers=ADMIN)).json()
                assert stats["controller"]["calls_engine_failed"] == 1
                assert "error" in stats["engines"][engine_url]

                # a healthy engine on the same address and data: it repairs the recording the
                # killed one left (the file up to its last page on disk), and new calls work
                replacement = engine_service(tmp_path, "engine2", control_port, ports).start()
                started.append(replacement)
                await replacement.wait_ready(probe, f"{engine_url}/stats")
                repaired = (await probe.get(f"{engine_url}/recordings/{recording_id}")).json()
                assert repaired["state"] == "interrupted", repaired
                download = await http.get(f"/v1/recordings/{recording_id}", headers=bob)
                assert download.status_code == 200, download.text
                pcm = decode(download.content, tmp_path / "interrupted.ogg")
                print(f"recording cut by the engine kill: {len(pcm) / MIX_RATE:.2f} s of "
                      f"{killed_at - recording_at:.2f} s kept")
                assert 0.9 <= len(pcm) / MIX_RATE <= killed_at - recording_at + 0.1
                heard = tone_levels_db(pcm, [ALICE_HZ, BOB_HZ])
                assert min(heard.values()) > -25, heard
                again = await http.post("/v1/calls", json={"mode": "mcu"}, headers=alice)
                assert again.status_code == 201, again.text
                pc = RestParticipant(SimulatedParticipant("alice2", ALICE_HZ,
                                                          continuous_tone(ALICE_HZ, 2)), alice)
                assert (await pc.join(http, again.json()["id"])).status_code == 201
                pc.sim.start()
                await asyncio.sleep(0.6)
                state = (await http.get(f"/v1/calls/{again.json()['id']}", headers=alice)).json()
                assert state["participants"][0]["stats"]["packets_in"] > 5
                assert (await http.delete(f"/v1/calls/{again.json()['id']}",
                                          headers=alice)).status_code == 204
                pc.sim.close()
                records = (await http.get("/v1/cdrs", headers=ADMIN)).json()["records"]
                assert [r["end_reason"] for r in records if r["call_id"] == again.json()["id"]] \
                    == ["ended", "ended"]
            await probe.aclose()
    run(scenario())


# ----------------------------------------------------------------- controller killed and restarted
@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        if url is None:
            pytest.skip("redis-server is not installed (Debian package redis-server): the "
                        "controller restart test needs the shared registry")
        yield url


def test_controller_killed_and_restarted_keeps_media_and_resumes_the_call(tmp_path, redis_url):
    async def scenario():
        with services() as started:
            control_port, api_port, ports = free_port(), free_port(), media_ports()
            engine_url = f"http://127.0.0.1:{control_port}"
            data_dir = tmp_path / "data"
            probe = httpx.AsyncClient()
            engine = engine_service(tmp_path, "engine", control_port, ports).start()
            started.append(engine)
            first = controller_service(tmp_path, "controller1", api_port, data_dir, engine_url,
                                       redis_url).start()
            started.append(first)
            await engine.wait_ready(probe, f"{engine_url}/stats")
            base = f"http://127.0.0.1:{api_port}"
            await first.wait_ready(probe, f"{base}/v1/health")
            http = httpx.AsyncClient(base_url=base, timeout=10.0)
            # made now, used after the restart (see Service.wait_ready)
            after = httpx.AsyncClient(base_url=base, timeout=10.0)
            try:
                alice, bob = await user(http, "alice"), await user(http, "bob")
                call = (await http.post("/v1/calls", json={"mode": "mcu", "invite": ["bob"]},
                                        headers=alice)).json()
                path = f"/v1/calls/{call['id']}"
                pa = RestParticipant(SimulatedParticipant("alice", ALICE_HZ,
                                                          continuous_tone(ALICE_HZ, 20)), alice)
                pb = RestParticipant(SimulatedParticipant("bob", BOB_HZ,
                                                          continuous_tone(BOB_HZ, 20)), bob)
                for p in (pa, pb):
                    assert (await p.join(http, call["id"])).status_code == 201
                start = asyncio.get_running_loop().time() + 0.05
                pa.sim.start(start)
                pb.sim.start(start)
                # a bot and a recording: both made by the engine, so the controller's death
                # touches neither
                bot = await http.post(f"{path}/participants",
                                      json={"kind": "bot", "play": f"tone:{BOT_HZ:g}"}, headers=alice)
                assert bot.status_code == 201
                recording = await http.post(f"{path}/recording", json={"action": "start"},
                                            headers=alice)
                assert recording.status_code == 200
                recording_at = time.monotonic()
                await asyncio.sleep(1.5)
                before = (await http.get(path, headers=alice)).json()
                assert before["type"] == "group" and len(before["participants"]) == 3
                joined = {p["id"]: p["joined_at"] for p in before["participants"]}

                second = controller_service(tmp_path, "controller2", api_port, data_dir,
                                            engine_url, redis_url)
                engine_before = await engine_view(probe, engine_url, call["id"])
                killed_at = time.monotonic()
                await first.kill()
                started.append(second.start())
                await second.wait_ready(probe, f"{base}/v1/health")
                serving_at = time.monotonic()
                old, http = http, after
                await old.aclose()

                # the new controller serves the call: same tokens (same data dir), per-leg stats
                state = await http.get(path, headers=bob)
                assert state.status_code == 200, state.text
                voip = {p["id"]: p for p in state.json()["participants"] if p["kind"] == "voip"}
                assert set(voip) == {pa.id, pb.id}
                assert all(p["stats"]["packets_in"] > 100 for p in voip.values())
                # it adopts the call once the first controller's lease has run out and resumes
                # monitoring; the bot plays on and the recording goes on, in the engine
                for _ in range(100):
                    stats = (await http.get("/v1/stats", headers=ADMIN)).json()["controller"]
                    if stats["calls_adopted"] == 1:
                        break
                    await asyncio.sleep(0.1)
                assert stats["calls_adopted"] == 1 and stats["calls_local"] == 1
                adopted_at = time.monotonic()
                state = (await http.get(path, headers=bob)).json()
                assert {p["id"] for p in state["participants"]} == set(joined)
                (bot_view,) = [p for p in state["participants"] if p["kind"] == "bot"]
                assert bot_view["stats"]["state"] == "playing"
                assert state["recording"] == recording.json()["id"]
                events: list = []
                subscribed = asyncio.Event()
                stream = asyncio.create_task(follow_events(http, f"{path}/events", alice, events,
                                                           subscribed))
                await asyncio.wait_for(subscribed.wait(), 5)
                await asyncio.sleep(0.5)
                measured_until = time.monotonic()
                engine_after = await engine_view(probe, engine_url, call["id"])
                # the new monitor reports speaker changes: mute bob, and only alice is talking
                muted = await http.patch(f"{path}/participants/{pb.id}", json={"muted": True},
                                         headers=alice)
                assert muted.status_code == 200
                for _ in range(50):
                    if any(e["type"] == "speakers" and e["participant_ids"] == [pa.id]
                           for e in events):
                        break
                    await asyncio.sleep(0.1)
                assert any(e["type"] == "speakers" and e["participant_ids"] == [pa.id]
                           for e in events), events
                # the recording, stopped through the new controller, runs from its start before
                # the kill to now: nothing was lost with the controller
                stopped = await http.post(f"{path}/recording", json={"action": "stop"}, headers=bob)
                stopped_at = time.monotonic()
                assert stopped.status_code == 200, stopped.text
                ogg = await http.get(f"/v1/recordings/{recording.json()['id']}", headers=bob)
                assert ogg.status_code == 200, ogg.text
                recorded = decode(ogg.content, tmp_path / "across-the-kill.ogg")
                print(f"recording across the controller kill: {len(recorded) / MIX_RATE:.2f} s "
                      f"for {stopped_at - recording_at:.2f} s")
                assert len(recorded) / MIX_RATE == pytest.approx(stopped_at - recording_at, abs=0.3)
                kill_sample = int((killed_at - recording_at) * MIX_RATE)
                for a, b in ((0.3, killed_at - recording_at - 0.1),
                             (killed_at - recording_at + 0.1, adopted_at - recording_at)):
                    window = recorded[int(a * MIX_RATE):int(b * MIX_RATE)]
                    heard = tone_levels_db(window, [ALICE_HZ, BOB_HZ, BOT_HZ])
                    assert min(heard.values()) > -30, (a, b, heard)
                assert kill_sample < len(recorded)
                ended = await http.delete(path, headers=bob)
                assert ended.status_code == 204, ended.text
                await asyncio.wait_for(stream, 5)
                assert events[-1]["type"] == "call_ended" and events[-1]["reason"] == "ended"
                for p in (pa, pb):
                    p.sim.close()

                # media never stopped: in what each decoded, the other's tone has no gap beyond
                # concealment from just before the kill until the new controller served the call.
                # On a loaded machine two clocks outside the controller can stall for tens of ms
                # and show as dips anywhere in a call: the participants' (they run on this test's
                # loop: a late send empties the engine's jitter buffer) and the engine's (a late
                # tick runs before it reads the packets that arrived meanwhile). Both are measured
                # here and allowed for; losing the media across a restart would be a gap of
                # seconds.
                print(f"controller killed: new one serving after {serving_at - killed_at:.2f} s, "
                      f"call adopted after {adopted_at - killed_at:.2f} s; engine: worst tick "
                      f"lateness {engine_after['late_max_ms']:.1f} ms, jitter buffer underruns "
                      f"{engine_before['underruns']} before, {engine_after['underruns']} after")
                for listener, talker, talker_hz in ((pa, pb, BOB_HZ), (pb, pa, ALICE_HZ)):
                    gap, gap_end, seconds = gap_between(listener.sim, talker_hz, killed_at - 0.5,
                                                        measured_until)
                    sends = np.array(talker.sim.send_times)
                    sends = sends[(sends > killed_at - 0.5) & (sends < measured_until)]
                    send_stall = np.diff(sends).max() * 1000 - 20
                    allowed = MAX_GAP_MS + max(send_stall, 0) + engine_after["late_max_ms"]
                    print(f"{listener.sim.name} hears the other: longest gap {gap:.1f} ms (ending "
                          f"{gap_end - killed_at:+.2f} s from the kill) over {seconds:.2f} s; "
                          f"talker's worst sending delay {send_stall:.1f} ms; allowed {allowed:.0f} ms")
                    # ticks the engine skipped in a stall are time no audio was sent for
                    assert seconds > 0.8 * (measured_until - killed_at + 0.5) \
                        - engine_after["late_max_ms"] / 1000
                    assert gap <= allowed, f"{listener.sim.name} lost the other for {gap:.0f} ms"

                # the bot played on through the kill: each participant hears it after adoption
                for listener in (pa, pb):
                    pcm, times = listener.sim.heard_audio()
                    valid = ~np.isnan(times)
                    after_kill = pcm[valid & (times > killed_at + 0.2) & (times < measured_until)]
                    assert tone_levels_db(after_kill, [BOT_HZ])[BOT_HZ] > -30

                # the CDRs: the right start times (from before the kill); every leg, the bot's
                # too, ended by the hang-up
                records = (await http.get("/v1/cdrs", headers=ADMIN)).json()["records"]
                legs = leg_records(records)
                assert set(legs) == set(joined)
                (bot_id,) = [pid for pid in joined if pid not in (pa.id, pb.id)]
                assert legs[bot_id]["participant_kind"] == "bot"
                assert legs[bot_id]["end_reason"] == "ended"
                assert legs[bot_id]["seconds_played"] > killed_at - recording_at
                for pid in (pa.id, pb.id):
                    assert legs[pid]["end_reason"] == "ended"
                    assert legs[pid]["started_at"] == joined[pid]
                    assert legs[pid]["packets_in"] > 100 and legs[pid]["jitter_buffer_ms"] > 0
                    assert 4.0 <= legs[pid]["mos"] <= 4.5
                (call_record,) = [r for r in records if r["kind"] == "call"]
                assert call_record["started_at"] == call["created_at"]
                assert call_record["end_reason"] == "ended" and call_record["participants"] == 3
                assert call_record["recording_ids"] == [recording.json()["id"]]
                assert call_record["duration_s"] > time.monotonic() - killed_at
                engine_stats = httpx.get(f"{engine_url}/stats").json()
                assert engine_stats["conferences"] == 0 and engine_stats["legs"] == 0
            finally:
                for client in (http, after, probe):
                    await client.aclose()
    run(scenario())


def test_hung_engine_is_declared_failed_by_poll_timeouts_and_cleaned_when_it_wakes(tmp_path):
    """SIGSTOP: the engine's sockets stay open but nothing answers (a hung process, a lost
    network). Polls time out; the call ends; the engine, resumed, gets its conference deleted."""
    async def scenario():
        with services() as started:
            probe = httpx.AsyncClient()
            control_port = free_port()
            engine_url = f"http://127.0.0.1:{control_port}"
            engine = engine_service(tmp_path, "engine", control_port, media_ports()).start()
            started.append(engine)
            await engine.wait_ready(probe, f"{engine_url}/stats")
            async with running_controller(tmp_path / "data", [HttpEngine(engine_url)],
                                          monitor_interval_s=MONITOR_INTERVAL_S,
                                          engine_poll_timeout_s=0.5,
                                          engine_failure_polls=FAILURE_POLLS) as c:
                alice = await c.user("alice")
                call = (await c.client.post("/v1/calls", json={"mode": "mcu"}, headers=alice)).json()
                path = f"/v1/calls/{call['id']}"
                events: list = []
                subscribed = asyncio.Event()
                stream = asyncio.create_task(follow_events(c.client, f"{path}/events", alice,
                                                           events, subscribed))
                await asyncio.wait_for(subscribed.wait(), 5)
                pa = RestParticipant(SimulatedParticipant("alice", ALICE_HZ,
                                                          continuous_tone(ALICE_HZ, 6)), alice)
                assert (await pa.join(c.client, call["id"])).status_code == 201
                pa.sim.start()
                await asyncio.sleep(1.0)
                stopped_at = time.monotonic()
                engine.process.send_signal(signal.SIGSTOP)
                try:
                    await asyncio.wait_for(stream, 10)
                finally:
                    engine.process.send_signal(signal.SIGCONT)
                print(f"engine hung: call ended {time.monotonic() - stopped_at:.2f} s later "
                      f"({FAILURE_POLLS} polls at {MONITOR_INTERVAL_S} s, 0.5 s poll timeout)")
                pa.sim.close()
                assert events[-1]["type"] == "call_ended" and events[-1]["reason"] == "engine_failed"
                records = (await c.client.get("/v1/cdrs", headers=c.admin)).json()["records"]
                (leg,) = [r for r in records if r["kind"] == "leg"]
                assert leg["end_reason"] == "engine_failed" and leg["packets_in"] > 20
                for _ in range(50):  # the resumed engine handles the delete sent meanwhile
                    stats = (await probe.get(f"{engine_url}/stats")).json()
                    if stats["conferences"] == 0:
                        break
                    await asyncio.sleep(0.1)
                assert stats["conferences"] == 0 and stats["legs"] == 0
            await probe.aclose()
    run(scenario())


# ----------------------------------------------------------------- in-process: what kills cannot cue
def test_engine_that_lost_the_conference_ends_the_call_from_samples(tmp_path):
    """An engine restarted between two polls answers 404 for the call: the call ends at once."""
    async def scenario():
        async with running_controller(tmp_path, monitor_interval_s=MONITOR_INTERVAL_S) as c:
            alice = await c.user("alice")
            call = (await c.client.post("/v1/calls", json={"mode": "mcu"}, headers=alice)).json()
            path = f"/v1/calls/{call['id']}"
            events: list = []
            subscribed = asyncio.Event()
            stream = asyncio.create_task(follow_events(c.client, f"{path}/events", alice, events,
                                                       subscribed))
            await asyncio.wait_for(subscribed.wait(), 5)
            pa = RestParticipant(SimulatedParticipant("alice", ALICE_HZ,
                                                      continuous_tone(ALICE_HZ, 4)), alice)
            assert (await pa.join(c.client, call["id"])).status_code == 201
            pa.sim.start()
            await asyncio.sleep(1.0)
            c.engine.delete_conference(call["id"])  # what a restarted engine no longer has
            await asyncio.wait_for(stream, 5)
            pa.sim.close()
            assert events[-1]["type"] == "call_ended" and events[-1]["reason"] == "engine_failed"
            records = (await c.client.get("/v1/cdrs", headers=c.admin)).json()["records"]
            (leg,) = [r for r in records if r["kind"] == "leg"]
            assert leg["end_reason"] == "engine_failed" and leg["packets_in"] > 20
            assert (await c.client.get(path, headers=alice)).status_code == 404
    run(scenario())


def test_a_live_controller_keeps_its_calls_and_one_whose_lease_ran_out_hands_them_over(
        tmp_path, redis_url):
    async def scenario():
        shared = {"redis_url": redis_url, "monitor_interval_s": MONITOR_INTERVAL_S,
                  "controller_lease_s": 0.6}
        async with running_controller(tmp_path, **shared) as a:
            engines = list(a.server.calls.engines.values())  # B in front of the same engine
            async with running_controller(tmp_path, engines, **shared) as b:  # same secrets
                alice = await a.user("alice")
                call = (await a.client.post("/v1/calls", json={"mode": "mcu"}, headers=alice)).json()
                path = f"/v1/calls/{call['id']}"
                events: list = []
                subscribed = asyncio.Event()
                stream = asyncio.create_task(follow_events(b.client, f"{path}/events", alice,
                                                           events, subscribed))
                await asyncio.wait_for(subscribed.wait(), 5)
                bot = await a.client.post(f"{path}/participants",
                                          json={"kind": "bot", "play": "tone:930"}, headers=alice)
                assert bot.status_code == 201
                keypad = RestParticipant(SimulatedParticipant("alice", ALICE_HZ,
                                                              continuous_tone(ALICE_HZ, 1)), alice)
                joined = await keypad.join(a.client, call["id"])
                assert joined.status_code == 201
                await press_keys(keypad, joined.json()["sdp"], "12")
                await asyncio.sleep(1.5)  # more than two leases: A renews, B leaves the call alone
                assert b.server.calls.calls_adopted == 0
                assert call["id"] in a.server.calls._monitors

                # A stalls (its lease is not renewed, as when its loop or its Redis link hangs):
                # B claims the call; A, when it looks again, lets go. The bot, an engine player,
                # is nobody's to remove: it plays on
                await cancel_and_wait(a.server.calls._supervisor)
                a.server.calls._supervisor = None
                for _ in range(50):
                    if call["id"] not in a.server.calls._monitors and b.server.calls.calls_adopted:
                        break
                    await asyncio.sleep(0.1)
                assert b.server.calls.calls_adopted == 1
                assert call["id"] in b.server.calls._monitors
                assert call["id"] not in a.server.calls._monitors
                registry = await b.server.registry.get(call["id"])
                assert registry["controller"] == b.server.calls.instance
                assert set(registry["participants"]) == {keypad.id, bot.json()["id"]}
                player = a.engine.get_player(call["id"], bot.json()["id"])
                assert player["state"] == "playing"
                records = (await b.client.get("/v1/cdrs", headers=b.admin)).json()["records"]
                assert [r for r in records if r["kind"] == "leg"] == []
                # B's monitor goes on from the digits A published: none repeated, new ones once
                await press_keys(keypad, joined.json()["sdp"], "3")
                await asyncio.sleep(1.0)
                # B serves and ends it; A, stopping later, has nothing of it left to end
                assert (await b.client.delete(path, headers=alice)).status_code == 204
                await asyncio.wait_for(stream, 5)
                keypad.sim.close()
                digits = [e["digit"] for e in events if e["type"] == "dtmf"]
                assert digits == ["1", "2", "3"], events
    run(scenario())


# --------------------------------------------------------------------------- registry: leases, claims
@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_registry_leases_and_claims(kind, request):
    url = request.getfixturevalue("redis_url") if kind == "redis" else None

    async def scenario():
        registry = MemoryRegistry() if kind == "memory" else RedisRegistry(
            url, prefix=f"failover-{random.getrandbits(32):x}:")
        for i in range(3):
            await registry.create({"id": f"c{i}", "owner": "alice", "engine": "e1",
                                   "controller": "dead"}, {"alice"}, set())
        assert sorted(await registry.call_ids()) == ["c0", "c1", "c2"]
        assert await registry.owners(["c0", "nope"]) == {"c0": ("dead", "e1")}
        # of many controllers claiming one call from the same dead one, exactly one wins
        results = await asyncio.gather(*(registry.claim("c0", "dead", f"live{i}") for i in range(8)))
        assert sum(results) == 1
        winner = f"live{results.index(True)}"
        assert (await registry.get("c0"))["controller"] == winner
        assert await registry.claim("c0", "dead", "late") is False  # no longer "dead"'s
        assert await registry.claim("nope", "dead", "late") is False
        await registry.delete("c1")
        assert sorted(await registry.call_ids()) == ["c0", "c2"]
        await registry.update("c1", type="group")  # no resurrection into the index either
        assert "c1" not in await registry.call_ids()
        await registry.heartbeat("live0", 0.3)
        await registry.heartbeat("live1", 30)
        assert await registry.alive({"live0", "live1", "dead"}) >= {"live0", "live1"}
        if registry.shared:  # Redis: leases expire and can be dropped; memory: one process, alive
            assert "dead" not in await registry.alive({"dead"})
            await asyncio.sleep(0.5)
            await registry.drop_heartbeat("live1")
            assert await registry.alive({"live0", "live1"}) == set()
        await registry.close()
    run(scenario())
