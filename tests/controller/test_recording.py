"""Recording over HTTPS: the recorder hears the mix, the WAV decodes (ffmpeg as the peer) and
holds every voice; a bot plays it back into another call; bots play tones; CDRs link the file."""
import asyncio
import shutil
import subprocess
import wave

import numpy as np
import uvloop

from controller.testing import RestParticipant, continuous_tone, running_controller
from mixer.analysis import tone_levels_db
from mixer.codec import MIX_RATE
from mixer.sim.participant import SimulatedParticipant

ALICE_HZ, BOB_HZ, BOT_HZ = 520.0, 710.0, 1170.0


def run(coro):
    return uvloop.run(coro)


def decode_wav(data: bytes, tmp_path) -> np.ndarray:
    """The file's samples, decoded by ffmpeg when present (an independent reader), else wave."""
    path = tmp_path / "downloaded.wav"
    path.write_bytes(data)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                              "-ar", str(MIX_RATE), "-"], check=True, capture_output=True).stdout
        return np.frombuffer(raw, dtype="<i2")
    with wave.open(str(path)) as reader:
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")


def test_recording_holds_every_voice_and_plays_back_through_a_bot(tmp_path):
    async def scenario():
        async with running_controller(tmp_path / "data") as c:
            http = c.client
            alice, bob, eve = await c.user("alice"), await c.user("bob"), await c.user("eve")
            call = (await http.post("/v1/calls", json={"invite": ["bob"]}, headers=alice)).json()
            path = f"/v1/calls/{call['id']}"
            pa = RestParticipant(SimulatedParticipant("alice", ALICE_HZ, continuous_tone(ALICE_HZ, 4)), alice)
            pb = RestParticipant(SimulatedParticipant("bob", BOB_HZ, continuous_tone(BOB_HZ, 4),
                                                      codec="PCMA"), bob)
            for p in (pa, pb):
                assert (await p.join(http, call["id"])).status_code == 201
                p.sim.start()
            stopped = await http.post(f"{path}/recording", json={"action": "stop"}, headers=alice)
            assert stopped.status_code == 409 and stopped.json()["error"]["code"] == "not_recording"
            started = await http.post(f"{path}/recording", json={"action": "start"}, headers=bob)
            assert started.status_code == 200 and started.json()["state"] == "recording"
            recording_id = started.json()["id"]
            again = await http.post(f"{path}/recording", json={"action": "start"}, headers=alice)
            assert again.status_code == 409
            busy = await http.get(f"/v1/recordings/{recording_id}", headers=alice)
            assert busy.status_code == 409
            bot = await http.post(f"{path}/participants", json={"kind": "bot", "play": f"tone:{BOT_HZ}"},
                                  headers=alice)
            assert bot.status_code == 201
            bad = await http.post(f"{path}/participants", json={"kind": "bot", "play": "tone:abc"},
                                  headers=alice)
            assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_play"
            missing = await http.post(f"{path}/participants", json={"kind": "bot", "play": "nope"},
                                      headers=alice)
            assert missing.status_code == 404
            state = (await http.get(path, headers=alice)).json()
            assert state["type"] == "group"  # a bot turns a 1:1 call into a group call
            assert state["recording"] == recording_id
            assert sorted(p["kind"] for p in state["participants"]) == ["bot", "recorder", "voip", "voip"]
            await asyncio.sleep(2.0)
            stopped = await http.post(f"{path}/recording", json={"action": "stop"}, headers=alice)
            assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
            assert 1.5 < stopped.json()["duration_s"] < 4.0
            assert (await http.get(path, headers=alice)).json()["recording"] is None

            download = await http.get(f"/v1/recordings/{recording_id}", headers=bob)
            assert download.status_code == 200
            assert download.headers["content-type"] == "audio/wav"
            assert (await http.get(f"/v1/recordings/{recording_id}", headers=eve)).status_code == 403
            assert (await http.get("/v1/recordings/nope", headers=eve)).status_code == 404
            pcm = decode_wav(download.content, tmp_path)
            assert abs(len(pcm) / MIX_RATE - stopped.json()["duration_s"]) < 0.05
            levels = tone_levels_db(pcm[MIX_RATE // 2:], [ALICE_HZ, BOB_HZ, BOT_HZ, 3030.0])
            for freq in (ALICE_HZ, BOB_HZ, BOT_HZ):
                assert levels[freq] > -30, (freq, levels)
            assert levels[3030.0] < -40  # nobody spoke this tone

            # a bot plays the recording into a new call; a listener hears the recorded voices
            second = (await http.post("/v1/calls", headers=bob)).json()
            listener = RestParticipant(SimulatedParticipant(
                "listener", 3030.0, np.zeros(MIX_RATE * 3, dtype=np.int16)), bob)
            assert (await listener.join(http, second["id"])).status_code == 201
            listener.sim.start()
            playback = await http.post(f"/v1/calls/{second['id']}/participants",
                                       json={"kind": "bot", "play": recording_id}, headers=bob)
            assert playback.status_code == 201, playback.text
            await asyncio.sleep(1.5)
            assert (await http.delete(f"/v1/calls/{second['id']}", headers=bob)).status_code == 204
            listener.sim.close()
            heard, _ = listener.sim.heard_audio()
            heard_levels = tone_levels_db(heard[MIX_RATE // 2:], [ALICE_HZ, BOB_HZ, BOT_HZ])
            assert all(level > -35 for level in heard_levels.values()), heard_levels

            assert (await http.delete(path, headers=alice)).status_code == 204
            for p in (pa, pb):
                p.sim.close()
            records = (await http.get("/v1/cdrs", headers=c.admin)).json()["records"]
            (first_call,) = [r for r in records if r["kind"] == "call" and r["call_id"] == call["id"]]
            assert first_call["recording_ids"] == [recording_id]
            (recorder_leg,) = [r for r in records if r.get("participant_kind") == "recorder"]
            assert recorder_leg["recording_id"] == recording_id
            assert recorder_leg["end_reason"] == "recording_stopped"
            (bot_leg,) = [r for r in records if r.get("participant_kind") == "bot"
                          and r["call_id"] == call["id"]]
            assert bot_leg["packets_in"] > 50  # the bot talked
    run(scenario())


def test_recording_an_sfu_call_sums_the_forwarded_streams(tmp_path):
    """In an SFU call the recorder gets one stream per speaker, not a mix: the file must still hold
    every voice, at about its level, over the recording's whole length."""
    async def scenario():
        async with running_controller(tmp_path / "data") as c:
            http = c.client
            alice, bob = await c.user("alice"), await c.user("bob")
            call = (await http.post("/v1/calls", json={"mode": "sfu", "invite": ["bob"]},
                                    headers=alice)).json()
            path = f"/v1/calls/{call['id']}"
            people = [RestParticipant(SimulatedParticipant("alice", ALICE_HZ, continuous_tone(ALICE_HZ, 4)), alice),
                      RestParticipant(SimulatedParticipant("bob", BOB_HZ, continuous_tone(BOB_HZ, 4)), bob)]
            for p in people:
                assert (await p.join(http, call["id"])).status_code == 201
                p.sim.start()
            started = await http.post(f"{path}/recording", json={"action": "start"}, headers=alice)
            assert started.status_code == 200
            await asyncio.sleep(2.5)
            stopped = await http.post(f"{path}/recording", json={"action": "stop"}, headers=alice)
            assert stopped.status_code == 200
            download = await http.get(f"/v1/recordings/{started.json()['id']}", headers=alice)
            assert download.status_code == 200
            for p in people:
                p.sim.close()
            return stopped.json()["duration_s"], download.content

    duration, content = run(scenario())
    pcm = decode_wav(content, tmp_path)
    assert 2.0 < duration < 3.5 and abs(len(pcm) / MIX_RATE - duration) < 0.1
    body = pcm[int(0.5 * MIX_RATE):int((duration - 0.3) * MIX_RATE)]
    levels = tone_levels_db(body, [ALICE_HZ, BOB_HZ])
    assert levels[ALICE_HZ] > -20 and levels[BOB_HZ] > -20
    for half in (body[:len(body) // 2], body[len(body) // 2:]):  # both voices all along
        assert min(tone_levels_db(half, [ALICE_HZ, BOB_HZ]).values()) > -22
