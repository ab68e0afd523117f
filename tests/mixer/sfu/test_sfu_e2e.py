"""End-to-end SFU conferences on loopback: real UDP, real Opus, real SRTP, real speaker choice.

Every check is made on what a subscriber received: its streams (by SSRC), their numbering, and the
tones in the audio each decodes to.
"""
from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from mixer.analysis import TEST_TONES_HZ, tone, tone_levels_db
from mixer.engine.engine import Engine, EngineError
from mixer.settings import EngineSettings
from mixer.sim.call import HEARD_THRESHOLD_DB, CallConfig, join, run_call
from mixer.sim.participant import SimulatedParticipant, talk_pattern, talk_signal
from mixer.sdp import offer_audio

WARMUP_S = 0.6
LOUD = 0.2        # about -14 dBFS: speech level
QUIET = 0.0004    # about -68 dBFS: a muted mic's hiss, below the voice threshold


def _participants(amplitudes: list[float], seconds: float, srtp: bool = False,
                  audio_level: bool = True) -> list[SimulatedParticipant]:
    return [SimulatedParticipant(f"p{i + 1}", TEST_TONES_HZ[i],
                                 tone(TEST_TONES_HZ[i], seconds, amplitude=a, phase=i),
                                 srtp=srtp, send_audio_level=audio_level)
            for i, a in enumerate(amplitudes)]


async def _run_sfu(participants: list[SimulatedParticipant], seconds: float,
                   settings: EngineSettings | None = None) -> tuple[dict, dict]:
    engine = Engine(settings or EngineSettings(media_ports="41000-41999"))
    engine.start()
    try:
        conference_id = engine.create_conference("sfu")["id"]
        leg_ids = [await join(engine, conference_id, p) for p in participants]
        start = asyncio.get_running_loop().time() + 0.05
        for p in participants:
            p.start(start)
        await asyncio.sleep(seconds + 0.3)
        conference = engine.get_conference(conference_id)
        engine.delete_conference(conference_id)
    finally:
        engine.stop()
        await asyncio.sleep(0.05)
        for p in participants:
            p.close()
    legs = {leg["id"]: leg for leg in conference["legs"]}
    return conference, {p.name: legs[leg_id] for p, leg_id in zip(participants, leg_ids)}


def _assert_continuous(packets: list) -> None:
    """In arrival order, each packet is the previous one's sequence number plus one and its
    timestamp is later by at least one frame: one stream, no gap a receiver would count as loss."""
    for (_, seq0, ts0, _), (_, seq1, ts1, _) in zip(packets, packets[1:]):
        assert seq1 == (seq0 + 1) & 0xFFFF, f"sequence jumps from {seq0} to {seq1}"
        assert 960 <= (ts1 - ts0) & 0xFFFFFFFF < 48000 * 5, f"timestamp jumps from {ts0} to {ts1}"


def _tones_heard(listener: SimulatedParticipant, freqs: list[float]) -> dict[float, float]:
    """Loudest level of each tone over all the listener's streams, after the warm-up."""
    best = {f: -120.0 for f in freqs}
    skip = int(WARMUP_S * 48000)
    for pcm, _times, decoder in listener.heard_streams().values():
        assert decoder.errors == 0
        for f, level in tone_levels_db(pcm[skip:], freqs).items():
            best[f] = max(best[f], level)
    return best


@pytest.mark.parametrize("srtp", [False, True], ids=["rtp", "srtp"])
def test_each_subscriber_gets_the_three_loud_senders_minus_itself(srtp: bool) -> None:
    seconds = 3.0
    amplitudes = [LOUD, QUIET, LOUD, QUIET, LOUD, QUIET]
    people = _participants(amplitudes, seconds, srtp=srtp)
    conference, legs = uvloop.run(_run_sfu(people, seconds))
    loud = {p.freq_hz for p, a in zip(people, amplitudes) if a == LOUD}
    freqs = [p.freq_hz for p in people]
    for listener in people:
        streams = listener.received.streams
        expected = loud - {listener.freq_hz}
        assert len(streams) == len(expected), f"{listener.name} got {len(streams)} streams"
        for packets in streams.values():
            _assert_continuous(packets)
        heard = _tones_heard(listener, freqs)
        for f in freqs:
            if f in expected:
                assert heard[f] > -25, f"{listener.name} hears {f} Hz only at {heard[f]:.1f} dBFS"
            else:
                assert heard[f] < -60, f"{listener.name} hears {f} Hz at {heard[f]:.1f} dBFS"
        leg = legs[listener.name]
        assert leg["srtp"] is srtp and leg["drops"]["srtp"] == 0
        assert leg["forwarded"] is (listener.freq_hz in loud)
    assert sorted(conference["stats"]["speakers"]) == sorted(
        legs[p.name]["id"] for p, a in zip(people, amplitudes) if a == LOUD)
    assert conference["stats"]["packets_not_forwarded"] > 0  # the quiet ones cost no sends
    # three talkers for three slots: no claim decides a slot, so none is checked by decoding
    assert not conference["stats"]["contended"]
    assert all(leg["level_decodes"] == 0 for leg in legs.values())


def test_speaker_changes_keep_every_stream_continuous_and_clean() -> None:
    """Five people talk in turns, two slots: slots change speaker many times, and each outgoing
    stream still numbers without gaps, keeps time, and decodes without a single concealed frame."""
    seconds, n = 5.0, 5
    people = []
    for i in range(n):
        freq = TEST_TONES_HZ[i]
        pattern = talk_pattern(i, n, seconds)
        people.append(SimulatedParticipant(f"p{i + 1}", freq, talk_signal(freq, pattern)))
    settings = EngineSettings(media_ports="41000-41999", sfu_last_n=2)
    conference, legs = uvloop.run(_run_sfu(people, seconds, settings))
    assert conference["stats"]["speaker_changes"] >= 4
    switches = 0
    for listener in people:
        assert 1 <= len(listener.received.streams) <= 2
        for packets in listener.received.streams.values():
            _assert_continuous(packets)
        for pcm, _times, decoder in listener.heard_streams().values():
            assert decoder.errors == 0 and decoder.concealed == 0
        heard = _tones_heard(listener, [p.freq_hz for p in people])
        for other in people:
            if other is not listener:
                assert heard[other.freq_hz] > -30, f"{listener.name} missed {other.name}"
        assert heard[listener.freq_hz] < -60, f"{listener.name} heard itself"
        switches += sum(slot["switches"] for slot in legs[listener.name]["slots"])
    assert switches > 0


def test_senders_without_audio_levels_are_chosen_by_decoded_level() -> None:
    seconds = 2.5
    amplitudes = [LOUD, QUIET, QUIET, LOUD]
    people = _participants(amplitudes, seconds, audio_level=False)
    conference, legs = uvloop.run(_run_sfu(people, seconds))
    assert sorted(conference["stats"]["speakers"]) == sorted(
        [legs["p1"]["id"], legs["p4"]["id"]])
    assert all(leg["level_decodes"] > 0 for leg in legs.values())
    heard = _tones_heard(people[1], [p.freq_hz for p in people])
    assert heard[people[0].freq_hz] > -25 and heard[people[3].freq_hz] > -25
    assert heard[people[2].freq_hz] < -60


def test_a_broken_sender_disturbs_nobody() -> None:
    """One loud sender is replaced mid-call by garbage, a flood and silence from its port; the
    other subscribers keep receiving the remaining loud voice without a gap."""
    seconds = 3.0

    async def scenario():
        people = _participants([LOUD, LOUD, QUIET, QUIET], seconds)
        engine = Engine(EngineSettings(media_ports="41000-41999", max_packet_rate=400))
        engine.start()
        conference_id = engine.create_conference("sfu")["id"]
        leg_ids = [await join(engine, conference_id, p) for p in people]
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        for p in people:
            p.start(start)
        await asyncio.sleep(1.0)
        # p1 stops sending media, and a stranger floods p1's port with garbage and bad RTP
        people[0].stop()
        bad = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        target = engine.get_conference(conference_id)["legs"][0]["local_port"]
        for i in range(3000):
            junk = bytes([0x80, 111]) + bytes(i % 7) if i % 2 else b"\xff" * (i % 40)
            bad.sendto(junk, ("127.0.0.1", target))
            if i % 200 == 0:
                await asyncio.sleep(0.005)
        bad.close()
        await asyncio.sleep(seconds - 1.0)
        conference = engine.get_conference(conference_id)
        engine.delete_conference(conference_id)
        engine.stop()
        await asyncio.sleep(0.05)
        for p in people:
            p.close()
        return people, conference, leg_ids

    people, conference, leg_ids = uvloop.run(scenario())
    legs = {leg["id"]: leg for leg in conference["legs"]}
    drops = legs[leg_ids[0]]["drops"]
    assert drops["malformed"] + drops["rate_limited"] + drops["payload_type"] > 1000
    for listener in people[2:]:
        p2_stream = [packets for packets in listener.received.streams.values()
                     if len(packets) > 100]
        assert p2_stream, f"{listener.name} lost p2's stream"
        for packets in listener.received.streams.values():
            _assert_continuous(packets)
        heard = _tones_heard(listener, [people[1].freq_hz])
        assert heard[people[1].freq_hz] > -25


def test_sfu_answers_only_opus() -> None:
    async def scenario():
        engine = Engine(EngineSettings(media_ports="41000-41999"))
        engine.start()
        conference_id = engine.create_conference("sfu")["id"]
        offer, _ = offer_audio(local_ip="127.0.0.1", local_port=5004, codecs=("PCMU",))
        try:
            with pytest.raises(EngineError) as raised:
                await engine.add_leg(conference_id, offer)
            return raised.value
        finally:
            engine.stop()

    error = uvloop.run(scenario())
    assert error.status == 488 and error.code == "no_common_codec"


def test_turn_taking_call_through_the_sfu_loses_nothing_and_adds_little_delay() -> None:
    """Five people talk in turns through last-3 with SRTP, the same call `voicemix demo --mode sfu`
    runs: speakers leave and re-enter slots, and still nobody sees a lost packet, everyone hears
    everyone else and not themselves, and a new speaker's first syllable is not clipped by the
    switch (the pre-roll: how long that adds is measured by `voicemix demo`, not asserted here)."""
    result = uvloop.run(run_call(CallConfig(participants=5, duration_s=4.0, srtp=True, mode="sfu")))
    for listener in result.listeners:
        assert not listener.missing, f"{listener.name} did not hear {listener.missing}"
        assert listener.own_level_db < HEARD_THRESHOLD_DB
        assert listener.loss_percent == 0.0
    assert result.conference_stats["speaker_changes"] >= 5
    assert result.conference_stats["preroll_packets"] > 0


def test_forged_audio_levels_lose_their_slots_to_a_real_talker() -> None:
    """Two senders claim the loudest RFC 6464 level on near-silence to hold both slots. Their
    claims are checked against their decoded audio; once disbelieved, they are judged by what they
    send, and the one real talker takes a slot and is heard."""
    seconds = 4.0
    liars = [SimulatedParticipant(f"liar{i}", TEST_TONES_HZ[i],
                                  tone(TEST_TONES_HZ[i], seconds, amplitude=QUIET, phase=i),
                                  claimed_level=0) for i in range(2)]
    honest = SimulatedParticipant("honest", TEST_TONES_HZ[2], tone(TEST_TONES_HZ[2], seconds, amplitude=LOUD))
    listener = SimulatedParticipant("listener", TEST_TONES_HZ[3],
                                    tone(TEST_TONES_HZ[3], seconds, amplitude=QUIET))
    settings = EngineSettings(media_ports="41000-41999", sfu_last_n=2)
    conference, legs = uvloop.run(_run_sfu([*liars, honest, listener], seconds, settings))
    assert [legs[p.name]["levels_trusted"] for p in liars] == [False, False]
    assert legs["honest"]["levels_trusted"] and legs["listener"]["levels_trusted"]
    assert legs["honest"]["id"] in conference["stats"]["speakers"]
    assert legs["honest"]["forwarded"]
    heard = _tones_heard(listener, [p.freq_hz for p in (*liars, honest)])
    assert heard[honest.freq_hz] > -25, f"the real talker is heard only at {heard[honest.freq_hz]:.1f} dBFS"
