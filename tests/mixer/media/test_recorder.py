"""Recordings, piece by piece, with synthetic packets on a synthetic clock: a participant track
survives reordering, loss, an SSRC change, a restart and a drifting sender clock; the mix keeps
wall-clock time across skipped ticks; a failing disk ends a recording without disturbing the
tick; a killed engine's recording is repaired. Files are checked by decoding them with ffmpeg.
The end-to-end recordings (real UDP, controller API) are in tests/controller/test_recording.py."""
from __future__ import annotations

import asyncio
import errno
import json
import random
import subprocess
import time

import numpy as np
import pytest
import uvloop

from mixer import _g711, _rtp
from mixer._opus import OpusEncoder
from mixer.analysis import tone, tone_envelope, tone_levels_db
from mixer.codec import FRAME_SAMPLES, MIX_RATE
from mixer.engine.engine import Engine
from mixer.media.recorder import (
    FAILED, INTERRUPTED, MixTrack, ParticipantTrack, Recording, read_metadata,
)
from mixer.settings import EngineSettings

HZ = 700.0


def decode(path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-ar", str(MIX_RATE), "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<i2")


def opus_payloads(seconds: float, hz: float = HZ) -> list[bytes]:
    encoder = OpusEncoder(48000, 1, "voip", 20, 32000, 5, False, 0, False)
    pcm = tone(hz, seconds, amplitude=0.3)
    return [encoder.encode(np.ascontiguousarray(pcm[i:i + FRAME_SAMPLES]))
            for i in range(0, len(pcm) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]


def packet(seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 111) -> _rtp.RtpPacket:
    return _rtp.RtpPacket.parse(_rtp.build_rtp(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload))


def drive(track: ParticipantTrack, deliveries: list[tuple[float, _rtp.RtpPacket]], end_ms: float) -> None:
    """Packets in arrival order, releases every 20 ms tick, then the end."""
    deliveries = sorted(deliveries, key=lambda d: d[0])
    index = 0
    for tick in range(int(end_ms // 20) + 1):
        now = tick * 20.0
        while index < len(deliveries) and deliveries[index][0] <= now:
            track.on_packet(deliveries[index][1], deliveries[index][0])
            index += 1
        track.release(now)
    track.finish(end_ms)


@pytest.mark.parametrize("fmt", ["ogg", "wav"])
def test_a_track_survives_reordering_loss_an_ssrc_change_and_a_restart(tmp_path, fmt):
    rng = random.Random(5)
    payloads = opus_payloads(4.0)
    deliveries = []
    lost = set(rng.sample(range(100), 6))
    for k, payload in enumerate(payloads[:100]):  # 2 s, SSRC 1, reordered by up to 50 ms
        if k not in lost:
            deliveries.append((20.0 * k + rng.uniform(0, 50), packet(1000 + k, 5000 + 960 * k, 1, payload)))
    for k, payload in enumerate(payloads[100:150]):  # the client restarts: new SSRC, 300 ms later
        deliveries.append((2300.0 + 20 * k, packet(60000 + k, 7 + 960 * k, 2, payload)))
    for k, payload in enumerate(payloads[150:]):     # same SSRC, timestamps jump (a restart)
        deliveries.append((3300.0 + 20 * k, packet(60050 + k, 99_000_000 + 960 * k, 2, payload)))
    path = tmp_path / f"t.{fmt}"
    track = ParticipantTrack("leg", "alice", "opus", path, fmt, 32000, 0.0, 0.0, 30.0)
    drive(track, deliveries, 4400.0)
    meta = track.metadata()
    assert meta["ssrc_changes"] == 1 and meta["restarts"] == 1
    assert meta["packets"] == 200 - len(lost) and meta["late"] == 0
    pcm = decode(path)
    assert len(pcm) / MIX_RATE == pytest.approx(4.4 + 0.03, abs=0.03)
    envelope = tone_envelope(pcm, HZ)
    on = envelope > 0.1

    def fraction(a, b):
        return on[int(a * MIX_RATE):int(b * MIX_RATE)].mean()
    assert fraction(0.1, 1.95) > 0.85         # the first stream, 6 losses concealed
    assert fraction(2.1, 2.25) < 0.1          # the 300 ms the client was away (after the tail)
    assert fraction(2.4, 3.25) > 0.9          # the second SSRC
    assert fraction(3.4, 4.3) > 0.9           # after the timestamp jump
    # where things are: the second stream starts 2.33 s in (arrival 2.3 s + 30 ms of delay;
    # the sender's encoder delay, 6.5 ms, and the envelope's 20 ms window come on top)
    start = np.flatnonzero(on[int(2.2 * MIX_RATE):])[0] / MIX_RATE + 2.2
    assert 2.33 <= start <= 2.33 + 0.035


def test_a_g711_track_is_transcoded_into_ogg(tmp_path):
    pcm = tone(440.0, 1.0, rate=8000, amplitude=0.3)
    deliveries = [(20.0 * k, packet(k, 160 * k, 9, _g711.ulaw_encode(pcm[160 * k:160 * (k + 1)]), pt=0))
                  for k in range(50)]
    path = tmp_path / "g711.ogg"
    track = ParticipantTrack("leg", "phone", "PCMU", path, "ogg", 32000, 0.0, 0.0, 30.0)
    drive(track, deliveries, 1000.0)
    assert track.metadata()["transcoded"] is True
    decoded = decode(path)
    assert tone_levels_db(decoded[4800:-4800], [440.0])[440.0] > -15


def test_a_drifting_sender_clock_is_followed(tmp_path):
    """A sender whose clock runs 1% fast: its timestamps run ahead of the arrivals by 100 ms
    over 10 s. The track is re-anchored a frame at a time and stays with the wall clock."""
    payloads = opus_payloads(10.0)
    deliveries = [(19.8 * k, packet(k, 960 * k, 3, p)) for k, p in enumerate(payloads)]
    path = tmp_path / "drift.wav"
    track = ParticipantTrack("leg", "fast", "opus", path, "wav", 32000, 0.0, 0.0, 30.0)
    drive(track, deliveries, 19.8 * len(payloads))
    meta = track.metadata()
    assert meta["drift_corrections"] >= 2 and meta["overlaps"] >= 3
    # it ends within two frames and a bit of the wall clock (a correction waits for a window of
    # 100 packets and a 30 ms excess: up to 50 ms ahead before one comes)
    assert meta["duration_s"] == pytest.approx(19.8 * len(payloads) / 1000 + 0.03, abs=0.06)


def test_the_mix_keeps_wall_time_across_skipped_ticks(tmp_path):
    path = tmp_path / "mix.ogg"
    mix = MixTrack(path, "ogg", 32000, origin_ms=1000.0)
    frame = tone(HZ, 0.02, amplitude=0.3)
    for tick in list(range(50)) + list(range(100, 150)):  # a 1 s stall: 50 ticks skipped
        mix.write(1000.0 + 20 * tick, frame)
    mix.finish(1000.0 + 20 * 150 + 7)
    pcm = decode(path)
    assert len(pcm) / MIX_RATE == pytest.approx(3.0, abs=0.021)  # wall time, within a frame
    assert mix.silence_samples == 50 * FRAME_SAMPLES
    envelope = tone_envelope(pcm, HZ)
    assert (envelope[int(1.2 * MIX_RATE):int(1.9 * MIX_RATE)] < 0.02).all()
    assert (envelope[int(2.1 * MIX_RATE):int(2.9 * MIX_RATE)] > 0.2).all()


def test_a_failing_disk_ends_the_recording_and_spares_the_tick(tmp_path):
    recording = Recording("r1", "room", tmp_path / "r1", "wav", "mix", 0.0)
    recording.on_mix(0.0, np.zeros(FRAME_SAMPLES, dtype=np.int16))

    def full(_data):
        raise OSError(errno.ENOSPC, "No space left on device")
    recording.mix.handle.write = full
    for tick in range(1, 200):  # about 0.3 s: the WAV writer's buffer fills and the write fails
        recording.on_mix(20.0 * tick, np.ones(FRAME_SAMPLES, dtype=np.int16))
    assert recording.state == FAILED and "No space" in recording.error
    metadata = recording.stop(4000.0)
    assert metadata["state"] == FAILED
    assert read_metadata(tmp_path / "r1")["state"] == FAILED


def test_a_killed_engines_recording_is_repaired_at_the_next_start(tmp_path):
    settings = EngineSettings(data_dir=tmp_path, media_ports="45000-45099")
    engine = Engine(settings)
    engine.create_conference("mcu", "room")
    engine.add_player("room", tone=HZ)
    started = engine.start_recording("room", tracks="mix+participants", recording_id="cut")
    conference = engine.conferences["room"]
    began = engine.clock.now_ms()
    for tick in range(150):  # 3 s of ticks, then the process "dies": nothing finishes the files
        conference.tick(began + 20 * tick)
    directory = tmp_path / "recordings" / "cut"
    assert read_metadata(directory)["state"] == "recording"
    for path in directory.glob("*.ogg"):  # what a SIGKILL leaves: the pages flushed so far
        data = path.read_bytes()
        path.write_bytes(data[:len(data) - 37])
    engine.conferences.clear()
    engine.stop()
    again = Engine(settings)
    (repaired,) = again.repair_recordings()
    assert repaired["id"] == "cut" and repaired["state"] == INTERRUPTED
    assert 1.9 <= repaired["duration_s"] <= 3.0
    pcm = decode(again.recording_file("cut"))
    assert len(pcm) / MIX_RATE == pytest.approx(repaired["duration_s"], abs=0.03)
    assert tone_levels_db(pcm, [HZ])[HZ] > -20
    assert started["path"].endswith("mix.ogg")
    assert again.repair_recordings() == []  # once


def test_a_stalled_engine_records_silence_for_the_time_it_lost(tmp_path):
    """The real clock: the process stops for 0.6 s (the loop blocked); ticks are skipped, and the
    recording still lasts as long as the wall-clock time it ran, within a frame."""
    async def scenario():
        engine = Engine(EngineSettings(data_dir=tmp_path, media_ports="45100-45199"))
        engine.start()
        engine.create_conference("mcu", "room")
        engine.add_player("room", tone=HZ)
        began = time.monotonic()
        recording = engine.start_recording("room", format="wav")
        await asyncio.sleep(0.5)
        time.sleep(0.6)  # a stall: no tick runs
        await asyncio.sleep(0.5)
        stopped = engine.stop_recording("room", recording["id"])
        wall = time.monotonic() - began
        skipped = engine.stats()["skipped_ticks"]
        engine.stop()
        return stopped, wall, skipped

    stopped, wall, skipped = uvloop.run(scenario())
    assert skipped >= 20
    pcm = decode(stopped["path"])
    assert len(pcm) / MIX_RATE == pytest.approx(stopped["duration_s"], abs=0.001)
    assert stopped["duration_s"] == pytest.approx(wall, abs=0.03)  # one frame, and the first tick
    quiet = tone_envelope(pcm, HZ) < 0.02
    assert quiet[int(0.55 * MIX_RATE):int(1.0 * MIX_RATE)].mean() > 0.8  # the stall is silence


def test_recording_requests_are_checked(tmp_path):
    engine = Engine(EngineSettings(data_dir=tmp_path, max_recordings_per_conference=1))
    engine.create_conference("sfu", "room")
    from mixer.engine.errors import EngineError
    for kwargs, code in ((dict(format="mp3"), "bad_format"), (dict(tracks="all"), "bad_tracks"),
                         (dict(recording_id="../x"), "bad_id")):
        with pytest.raises(EngineError) as exc:
            engine.start_recording("room", **kwargs)
        assert exc.value.code == code
    first = engine.start_recording("room", recording_id="one")
    with pytest.raises(EngineError) as exc:
        engine.start_recording("room")
    assert exc.value.code == "too_many_recordings"
    with pytest.raises(EngineError) as exc:
        engine.recording_file("one")
    assert exc.value.code == "recording_active"
    engine.stop_recording("room", "one")
    with pytest.raises(EngineError) as exc:
        engine.start_recording("room", recording_id="one")
    assert (exc.value.status, exc.value.code) == (409, "recording_exists")
    assert engine.recording_info("one")["state"] == "stopped"
    with pytest.raises(EngineError) as exc:
        engine.recording_file("one", "nobody")
    assert exc.value.code == "no_such_track"
    assert json.loads((tmp_path / "recordings" / "one" / "recording.json").read_text())["id"] == first["id"]
    engine.delete_conference("room")


def test_stopping_the_engine_finishes_its_recordings(tmp_path):
    async def scenario():
        engine = Engine(EngineSettings(data_dir=tmp_path, media_ports="45200-45299"))
        engine.start()
        engine.create_conference("sfu", "room")
        engine.add_player("room", tone=HZ)
        recording = engine.start_recording("room", tracks="mix+participants")
        await asyncio.sleep(0.6)
        engine.stop()  # SIGTERM's path: every conference deleted, every recording finished
        return recording

    recording = uvloop.run(scenario())
    metadata = read_metadata(tmp_path / "recordings" / recording["id"])
    assert metadata["state"] == "stopped" and 0.4 < metadata["duration_s"] < 0.8
    pcm = decode(metadata["path"])
    assert len(pcm) / MIX_RATE == pytest.approx(metadata["duration_s"], abs=0.001)
    assert tone_levels_db(pcm[4800:], [HZ])[HZ] > -25  # the SFU's player, in the mixdown
    (player_track,) = metadata["tracks"]
    assert player_track["kind"] == "player"
