"""Phone trees end to end: prompts are engine players the caller hears (by spectrum), keys drive
the tree by RFC 4733 (sipp playing the digit pcaps it ships, and a phone of ours) and in-band
(baresip playing a WAV of Q.23 tones: the engine's Goertzel detector), to the right branch:
a transfer into a call, a recorded message, no input. The number's event stream shows the path
and the digits."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from controller.testing import collect_events  # noqa: E402
from mixer._dtmf_detect import dtmf_tone  # noqa: E402
from mixer.analysis import tone_levels_db  # noqa: E402
from mixer.rtp.dtmf import TelephoneEvent  # noqa: E402
from mixer import _rtp  # noqa: E402
from tests.controller.pstn.baresip import BARESIP, Baresip, write_wav  # noqa: E402
from tests.controller.pstn.kit import Carrier, engine_address  # noqa: E402
from tests.controller.pstn.test_pstn_service import NUMBER, new_call, pstn_controller, wait_for  # noqa: E402
from tests.controller.pstn.test_sipp_interop import PCAPS, SCENARIOS, SIPP, local, sipp  # noqa: E402

pytestmark = pytest.mark.store_independent   # the tree and its media; the store is tested elsewhere


def run(coro):
    return uvloop.run(coro)


def peak_level(audio: np.ndarray, freq: float, rate: int = 8000, window_s: float = 0.25) -> float:
    """The tone's level in its loudest quarter second (a prompt is short in a long recording)."""
    n = int(rate * window_s)
    return max((tone_levels_db(audio[i:i + n], [freq], rate=rate)[freq]
                for i in range(0, max(1, len(audio) - n), n // 2)), default=-120.0)


def tree(call_id: str) -> dict:
    return {"start": "welcome", "nodes": {
        "welcome": {"play": {"file": "welcome.wav"}, "next": "menu"},
        "menu": {"gather": {"prompt": {"tone": 660, "ms": 400}, "digits": 1, "timeout_s": 2,
                            "retries": 1}, "branches": {"1": "sales", "2": "message"},
                 "no_input": "bye"},
        "sales": {"transfer": {"call": call_id}},
        "message": {"record": {"prompt": {"tone": 1000, "ms": 150}, "max_s": 1.5}, "next": "bye"},
        "bye": {"hangup": {"prompt": {"file": "bye.ogg"}}}}}


async def setup_tree(c) -> tuple[str, dict]:
    prompts = c.server.settings.data_dir / "media"   # the in-process engine's player directory
    prompts.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(8000 * 0.5)) / 8000   # an 8 kHz WAV, resampled by the player
    with wave.open(str(prompts / "welcome.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes())
    t = np.arange(int(48000 * 0.4)) / 48000   # an Ogg Opus prompt (libopus through ffmpeg)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "s16le", "-ar", "48000", "-ac", "1", "-i", "-",
                    "-c:a", "libopus", str(prompts / "bye.ogg")], check=True,
                   input=(np.sin(2 * np.pi * 880 * t) * 8000).astype("<i2").tobytes())
    call_id, alice = await new_call(c)
    response = await c.client.post("/v1/numbers", json={"number": NUMBER, "route": {"ivr": tree(call_id)}},
                                   headers=c.admin)
    assert response.status_code == 201, response.text
    return call_id, alice


async def watch(c) -> tuple[list, asyncio.Task]:
    events: list = []
    task = asyncio.ensure_future(collect_events(c.client, f"/v1/numbers/{NUMBER}/events", c.admin, events))
    await asyncio.sleep(0.2)
    return events, task


@pytest.mark.skipif(SIPP is None, reason="sipp (Debian package sip-tester) is not installed")
def test_rfc4733_key_from_sipp_transfers_the_caller_into_the_call(tmp_path):
    async def main():
        (tmp_path / "pcap").symlink_to(PCAPS)
        async with pstn_controller(tmp_path / "c") as c:
            call_id, alice = await setup_tree(c)
            events, reader = await watch(c)
            scenario = tmp_path / "ivr_dtmf_1.xml"   # sipp reads pcap paths when it loads
            scenario.write_text((SCENARIOS / "ivr_dtmf_uac.xml").read_text().replace("@DIGIT@", "1"))
            code, errors = await sipp("-sf", str(scenario), f"127.0.0.1:{c.sip_port}",
                                      "-s", NUMBER, "-m", "1", *local(), cwd=tmp_path)
            assert code == 0, errors
            await asyncio.sleep(0.3)
            reader.cancel()
            records = (await c.client.get("/v1/cdrs", headers=c.admin)).json()["records"]
        return events, records, call_id

    events, records, call_id = run(main())
    nodes = [e["node"] for e in events if e["type"] == "ivr_node"]
    assert nodes == ["welcome", "menu", "sales"]
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["1"]
    assert [e["call"] for e in events if e["type"] == "ivr_transferred"] == [call_id]
    leg = next(r for r in records if r.get("participant_kind") == "pstn")
    assert leg["call_id"] == call_id and leg["end_reason"] == "remote_hangup"
    assert leg["pstn"]["ivr"]["path"] == ["welcome", "menu", "sales"]


def test_our_phone_hears_the_prompts_and_gets_hung_up_on_without_input(tmp_path):
    async def main():
        carrier = await Carrier().start()
        async with pstn_controller(tmp_path / "c") as c:
            await setup_tree(c)
            events, reader = await watch(c)
            session, phone = await carrier.call(c.sip_port, NUMBER)
            answer = await asyncio.wait_for(session.answered, 5)
            phone.remote = engine_address(answer)
            phone.play(np.zeros(8000 * 8, dtype=np.int16))   # silence: a caller who presses nothing
            await asyncio.wait_for(session.ended, 15)
            reader.cancel()
            records = (await c.client.get("/v1/cdrs", headers=c.admin)).json()["records"]
        await carrier.stop()
        return events, phone.audio(), session.end_reason, records

    events, audio, end, records = run(main())
    assert end == "remote_bye"   # the tree hung up
    assert [e["node"] for e in events if e["type"] == "ivr_node"] == ["welcome", "menu", "bye"]
    levels = {f: peak_level(audio, f) for f in (440.0, 660.0, 880.0)}
    assert all(level > -35 for level in levels.values()), levels   # every prompt reached the phone
    record = next(r for r in records if r["kind"] == "pstn")
    assert record["ivr"]["path"] == ["welcome", "menu", "bye"] and record["end_reason"] == "ivr_hangup"


def test_a_prompt_file_the_engine_lacks_is_skipped_and_said(tmp_path):
    """Prompt files are the engine's (perhaps on another host): the controller cannot check them
    when the tree is saved; one the engine does not have is skipped, with an event."""
    async def main():
        carrier = await Carrier().start()
        async with pstn_controller(tmp_path / "c") as c:
            lost = {"start": "hello", "nodes": {
                "hello": {"play": {"file": "not-there.ogg"}, "next": "bye"},
                "bye": {"hangup": {"prompt": {"tone": 880, "ms": 300}}}}}
            response = await c.client.post("/v1/numbers", json={"number": NUMBER, "route": {"ivr": lost}},
                                           headers=c.admin)
            assert response.status_code == 201, response.text
            events, reader = await watch(c)
            session, phone = await carrier.call(c.sip_port, NUMBER)
            answer = await asyncio.wait_for(session.answered, 5)
            phone.remote = engine_address(answer)
            phone.play(np.zeros(8000 * 3, dtype=np.int16))
            await asyncio.wait_for(session.ended, 10)
            reader.cancel()
        await carrier.stop()
        return events, phone.audio()

    events, audio = run(main())
    failed = [e for e in events if e["type"] == "ivr_prompt_failed"]
    assert [(e["file"], e["code"]) for e in failed] == [("not-there.ogg", "no_such_file")]
    assert [e["node"] for e in events if e["type"] == "ivr_node"] == ["hello", "bye"]
    assert peak_level(audio, 880.0) > -35   # the tree went on to its next prompt


def test_rfc4733_from_our_phone_records_a_message(tmp_path):
    async def main():
        carrier = await Carrier().start()
        async with pstn_controller(tmp_path / "c") as c:
            await setup_tree(c)
            events, reader = await watch(c)
            session, phone = await carrier.call(c.sip_port, NUMBER)
            answer = await asyncio.wait_for(session.answered, 5)
            phone.remote = engine_address(answer)
            await asyncio.sleep(1.0)
            for i, (duration, end) in enumerate([(160, False), (320, False), (480, True), (480, True)]):
                payload = TelephoneEvent(2, end, 10, duration).serialize()
                phone.transport.sendto(_rtp.build_rtp(101, 500 + i, 80000, 0x77, payload, i == 0), phone.remote)
                await asyncio.sleep(0.02)
            t = np.arange(8000 * 3) / 8000   # the message: a 700 Hz tone
            phone.play((np.sin(2 * np.pi * 700 * t) * 8000).astype(np.int16))
            await asyncio.wait_for(session.ended, 15)
            reader.cancel()
            recorded = next(e for e in events if e["type"] == "ivr_recorded")
            recording = await c.server.store.get_recording(recorded["recording_id"])
        await carrier.stop()
        return events, recording

    events, recording = run(main())
    assert [e["node"] for e in events if e["type"] == "ivr_node"] == ["welcome", "menu", "message", "bye"]
    assert recording["path"].endswith(".ogg") and recording["format"] == "ogg"
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", recording["path"], "-f", "s16le", "-ac", "1",
                          "-ar", "48000", "-"], check=True, capture_output=True).stdout
    pcm = np.frombuffer(raw, dtype="<i2")   # the engine's Ogg Opus file, as ffmpeg decodes it
    assert 1.0 < recording["duration_s"] < 3.0
    assert tone_levels_db(pcm, [700.0])[700.0] > -35   # the caller's message is in the file


@pytest.mark.skipif(BARESIP is None, reason="baresip (Debian package baresip-core) is not installed")
def test_inband_tones_from_baresip_drive_the_tree(tmp_path, monkeypatch):
    # baresip always offers telephone-event, and the engine listens for tones in the audio only
    # of legs without it unless told to listen on every G.711 leg: a caller behind a gateway
    # that passes keys in-band although it negotiated RFC 4733
    monkeypatch.setenv("VOICEMIX_INBAND_DTMF", "always")

    async def main():
        silence = np.zeros(8000 * 2, dtype=np.int16)
        key = dtmf_tone("2", 8000 // 10, level_dbm0=-8.0)   # 100 ms of the '2' tone pair
        wav = write_wav(tmp_path / "keys.wav", np.concatenate([silence, key, np.zeros(8000 * 6, np.int16)]))
        phone = Baresip(tmp_path / "baresip", wav=wav, codecs="PCMU")
        async with pstn_controller(tmp_path / "c") as c:
            await setup_tree(c)
            events, reader = await watch(c)
            await phone.start(f"/dial sip:{NUMBER}@127.0.0.1:{c.sip_port}", seconds=8)
            await wait_for(lambda: asyncio.sleep(0, [e for e in events if e["type"] == "ivr_ended"]), timeout=15)
            reader.cancel()
        await phone.stop()
        return events, phone.heard()

    events, (heard, rate) = run(main())
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["2"]
    assert [e["node"] for e in events if e["type"] == "ivr_node"][:3] == ["welcome", "menu", "message"]
    assert peak_level(heard, 440.0, rate) > -35   # the welcome prompt reached baresip
