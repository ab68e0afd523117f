"""Players: the sources frame by frame (tone, WAV at several rates, Ogg Opus), and players in real
MCU and SFU conferences heard by every participant over real UDP, through the in-process engine
and the HTTP control API."""
from __future__ import annotations

import asyncio
import contextlib
import os
import wave
from pathlib import Path

import numpy as np
import pytest
import uvloop

from mixer._opus import OpusEncoder, packet_duration
from mixer.analysis import tone, tone_levels_db
from mixer.codec import FRAME_SAMPLES, MIX_RATE
from mixer.engine.client import EngineError, HttpEngine, InProcessEngine
from mixer.engine.control import start_control_api
from mixer.engine.engine import Engine
from mixer.media.ogg import OggOpusWriter
from mixer.media.player import (
    FAILED, FINISHED, PLAYING, STOPPED, Player, PlayerError, ToneSource, open_file,
)
from mixer.settings import EngineSettings
from mixer.sim.call import join
from mixer.sim.participant import SimulatedParticipant

PLAYER_HZ, ALICE_HZ, BOB_HZ, CAROL_HZ = 1170.0, 520.0, 710.0, 930.0


def write_wav(path: Path, pcm: np.ndarray, rate: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.astype("<i2").tobytes())
    return path


def write_ogg(path: Path, pcm: np.ndarray) -> Path:
    encoder = OpusEncoder(48000, 1, "audio", 20, 64000, 5, False, 0, False)
    with open(path, "wb") as out:
        writer = OggOpusWriter(out, pre_skip=encoder.lookahead)
        for k in range(len(pcm) // FRAME_SAMPLES):
            packet = encoder.encode(np.ascontiguousarray(pcm[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]))
            writer.write(packet, packet_duration(packet))
        writer.close()
    return path


def play_all(source, limit: int = 100000) -> np.ndarray:
    frames = []
    while len(frames) < limit and (frame := source.read()) is not None:
        frames.append(frame.copy())
    return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)


# ------------------------------------------------------------------------------------ sources
def test_tone_is_one_clean_sine_across_frames():
    source = ToneSource(440.5, 1.0)
    pcm = play_all(source)
    assert len(pcm) == MIX_RATE
    spectrum = np.abs(np.fft.rfft(pcm.astype(float)))
    assert abs(np.argmax(spectrum) - 440.5) <= 1
    # no discontinuity at frame edges: the biggest sample-to-sample step is that of the sine
    assert np.abs(np.diff(pcm.astype(int))).max() <= 2 * np.pi * 440.5 / MIX_RATE * 0.2 * 32767 + 2
    with pytest.raises(PlayerError):
        ToneSource(5.0, 1.0)


@pytest.mark.parametrize("rate,channels", [(48000, 1), (16000, 1), (8000, 1), (24000, 2)])
def test_wav_files_play_at_48k_mono(tmp_path, rate, channels):
    pcm = tone(700.0, 1.0, rate=rate, amplitude=0.3)
    if channels == 2:
        pcm = np.stack([pcm, pcm], axis=1).ravel()
    source = open_file(write_wav(tmp_path / "a.wav", pcm, rate, channels))
    out = play_all(source)
    assert abs(len(out) - MIX_RATE) <= FRAME_SAMPLES
    levels = tone_levels_db(out[4800:-4800], [700.0, 1400.0])
    assert levels[700.0] > -13 and levels[1400.0] < -50


def test_ogg_opus_files_play_with_pre_skip_removed(tmp_path):
    pcm = tone(930.0, 2.0, amplitude=0.3)
    source = open_file(write_ogg(tmp_path / "a.ogg", pcm))
    out = play_all(source)
    assert abs(len(out) - len(pcm)) <= FRAME_SAMPLES  # pre-skip taken off, nothing added
    assert tone_levels_db(out[4800:-4800], [930.0])[930.0] > -13
    # aligned with the original within a millisecond (the pre-skip is the encoder's delay): a
    # chirp has one correlation peak, where a tone has one per period
    t = np.arange(MIX_RATE) / MIX_RATE
    chirp = (np.sin(2 * np.pi * (300 * t + 1500 * t * t)) * 0.3 * 32767).astype(np.int16)
    out = play_all(open_file(write_ogg(tmp_path / "chirp.ogg", chirp)))
    lag = np.argmax(np.correlate(out[9600:19200].astype(float),
                                 chirp[9600 - 480:19200 + 480].astype(float), "valid"))
    assert abs(lag - 480) <= 48


@pytest.mark.parametrize("content,code", [
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x44\xac\x00\x00\x88\x58\x01\x00\x02\x00\x10\x00data\x00\x00\x00\x00", "unsupported_file"),  # 44.1 kHz
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x03\x00\x01\x00\x80\xbb\x00\x00\x00\xee\x02\x00\x04\x00\x20\x00data\x00\x00\x00\x00", "unsupported_file"),  # float
    (b"OggS" + bytes(40), "unsupported_file"),
    (b"ID3\x03 an mp3", "unsupported_file"),
    (b"", "unsupported_file"),
])
def test_files_that_cannot_play_are_refused_at_once(tmp_path, content, code):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(PlayerError) as exc:
        open_file(path)
    assert exc.value.code == code
    with pytest.raises(PlayerError) as exc:
        open_file(tmp_path / "missing.wav")
    assert exc.value.code == "no_such_file"


def test_player_loops_stops_mutes_and_ends(tmp_path):
    path = write_wav(tmp_path / "short.wav", tone(500.0, 0.1, amplitude=0.3), 48000)
    once = Player("p1", open_file(path))
    frames = [once.frame(20.0 * i) for i in range(8)]
    assert sum(f is not None for f in frames) == 5 and once.state == FINISHED
    looped = Player("p2", open_file(path), loop=True, seconds=0.5)
    assert sum(looped.frame(20.0 * i) is not None for i in range(40)) == 25
    assert looped.state == FINISHED and looped.loops >= 4
    tone_player = Player("p3", ToneSource(440.0, None))
    tone_player.muted = True
    assert tone_player.frame(0.0) is None and tone_player.frames_played == 1
    tone_player.muted = False
    assert tone_player.frame(20.0) is not None
    tone_player.stop()
    assert tone_player.state == STOPPED and tone_player.frame(40.0) is None


def test_a_file_cut_mid_way_ends_playback_cleanly(tmp_path):
    path = write_ogg(tmp_path / "cut.ogg", tone(930.0, 3.0, amplitude=0.3))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] + b"\x00garbage" * 100)  # half a file, then junk
    player = Player("p", open_file(path))
    played = 0
    while player.frame(20.0 * played) is not None:
        played += 1
    assert player.state in (FINISHED, FAILED)
    assert 20 < played < 150


# ------------------------------------------------------------------------- in a real conference
@contextlib.asynccontextmanager
async def engine_and_client(kind: str, tmp_path: Path):
    settings = EngineSettings(media_ports="42000-42999", data_dir=tmp_path)
    engine = Engine(settings)
    engine.start()
    runner = None
    try:
        if kind == "http":
            runner, port = await start_control_api(engine)
            client = HttpEngine(f"http://127.0.0.1:{port}")
        else:
            client = InProcessEngine(engine)
        yield engine, client
        await client.close()
    finally:
        if runner is not None:
            await runner.cleanup()
        engine.stop()


def tones_heard(listener: SimulatedParticipant, freqs, skip_s: float = 0.4) -> dict:
    """Loudest level of each tone over every stream the listener got (one from an MCU, one per
    forwarded sender from an SFU)."""
    best = {f: -120.0 for f in freqs}
    for pcm, _, _ in listener.heard_streams().values():
        for f, level in tone_levels_db(pcm[int(skip_s * MIX_RATE):], freqs).items():
            best[f] = max(best[f], level)
    return best


@pytest.mark.parametrize("mode,kind", [("mcu", "in_process"), ("sfu", "in_process"), ("mcu", "http")])
def test_a_players_tone_is_heard_by_everyone(tmp_path, mode, kind):
    async def scenario():
        async with engine_and_client(kind, tmp_path) as (engine, client):
            await client.create_conference(mode, "room")
            people = [SimulatedParticipant("alice", ALICE_HZ, tone(ALICE_HZ, 3.0, amplitude=0.2)),
                      SimulatedParticipant("bob", BOB_HZ, tone(BOB_HZ, 3.0, amplitude=0.2)),
                      SimulatedParticipant("carol", CAROL_HZ, np.zeros(3 * MIX_RATE, dtype=np.int16))]
            for p in people:
                await join(engine, "room", p)
            start = asyncio.get_running_loop().time() + 0.05
            for p in people:
                p.start(start)
            player = await client.add_player("room", tone=PLAYER_HZ, seconds=1.5, label="announce")
            assert player["state"] == PLAYING and player["label"] == "announce"
            await asyncio.sleep(1.0)
            assert (await client.get_player("room", player["id"]))["state"] == PLAYING
            await asyncio.sleep(1.2)
            done = await client.get_player("room", player["id"])
            assert done["state"] == FINISHED and 74 <= done["frames_played"] <= 76
            conference = await client.get_conference("room")
            assert [p["id"] for p in conference["players"]] == [player["id"]]
            await client.remove_player("room", player["id"])
            with pytest.raises(EngineError) as exc:
                await client.get_player("room", player["id"])
            assert (exc.value.status, exc.value.code) == (404, "no_such_player")
            await client.delete_conference("room")
            for p in people:
                p.close()
            return people

    people = uvloop.run(scenario())
    for listener in people:
        heard = tones_heard(listener, [PLAYER_HZ])
        assert heard[PLAYER_HZ] > -25, f"{listener.name} heard the player at {heard[PLAYER_HZ]:.1f} dBFS"
    # the talkers still hear each other: the player is added, nobody is pushed out
    assert tones_heard(people[0], [BOB_HZ])[BOB_HZ] > -25
    assert tones_heard(people[2], [ALICE_HZ, BOB_HZ])[ALICE_HZ] > -25


def test_player_requests_are_checked(tmp_path):
    async def scenario():
        async with engine_and_client("http", tmp_path) as (engine, client):
            await client.create_conference("mcu", "room")
            media = tmp_path / "media"
            media.mkdir()
            write_wav(media / "hello.wav", tone(440.0, 0.5), 16000)
            (media / "bad.wav").write_bytes(b"RIFF....WAVE")
            outside = write_wav(tmp_path / "secret.wav", tone(440.0, 0.5), 16000)
            os.symlink(outside, media / "link.wav")
            cases = [
                (dict(), 422, "bad_field"),
                (dict(tone=440.0, file="hello.wav"), 422, "bad_field"),
                (dict(tone=5.0), 422, "bad_tone"),
                (dict(file="nope.wav"), 404, "no_such_file"),
                (dict(file="bad.wav"), 422, "unsupported_file"),
                (dict(file=str(outside)), 403, "file_forbidden"),
                (dict(file="../secret.wav"), 403, "file_forbidden"),
                (dict(file="link.wav"), 404, "no_such_file"),  # a link out is not followed out
                (dict(tone=440.0, seconds=-1), 422, "bad_field"),
                (dict(tone=440.0, player_id="a/b"), 400, "bad_id"),
            ]
            for kwargs, status, code in cases:
                with pytest.raises(EngineError) as exc:
                    await client.add_player("room", **kwargs)
                assert (exc.value.status, exc.value.code) == (status, code), kwargs
            ok = await client.add_player("room", file="hello.wav", player_id="hello")
            assert ok["source"]["rate"] == 16000 and ok["id"] == "hello"
            with pytest.raises(EngineError) as exc:
                await client.add_player("room", tone=300.0, player_id="hello")
            assert exc.value.code == "player_exists"
            muted = await client.update_player("room", "hello", muted=True)
            assert muted["muted"] is True
            with pytest.raises(EngineError) as exc:
                await client.add_player("nope", tone=300.0)
            assert exc.value.code == "no_such_conference"
    uvloop.run(scenario())


def test_only_so_many_players_play_at_once_and_finished_ones_make_room(tmp_path):
    settings = EngineSettings(max_players_per_conference=2, data_dir=tmp_path)
    engine = Engine(settings)
    engine.create_conference("mcu", "room")
    engine.add_player("room", tone=300.0)
    short = engine.add_player("room", tone=400.0, seconds=0.02)
    with pytest.raises(EngineError) as exc:
        engine.add_player("room", tone=500.0)
    assert (exc.value.status, exc.value.code) == (409, "too_many_players")
    conference = engine.conferences["room"]
    for i in range(3):
        conference.tick(20.0 * i)
    assert engine.get_player("room", short["id"])["state"] == FINISHED
    engine.add_player("room", tone=500.0)  # the finished one no longer counts
    assert short["id"] in {p["id"] for p in engine.get_conference("room")["players"]}
    # finished players stay listed for whoever polls them, but never more than the limit
    for i in range(10):
        engine.remove_player("room", engine.get_conference("room")["players"][-1]["id"])
        engine.add_player("room", tone=600.0, seconds=0.02)
        for k in range(2):
            conference.tick(100.0 * i + 20.0 * k)
    assert len(engine.get_conference("room")["players"]) <= 2 * settings.max_players_per_conference
    engine.delete_conference("room")
