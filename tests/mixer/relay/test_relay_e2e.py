"""Relay conferences end to end on loopback: real UDP, real Opus and G.711, real SRTP.

Every check is made on what a participant received: payload bytes against what the other side's
encoder produced, the numbering of the one stream it gets, and the tones it decodes. The live
switch (a third participant joins, then leaves) is measured as the longest stretch in which a
listener loses a continuous tone.
"""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import uvloop

from mixer.analysis import tone, tone_envelope, tone_levels_db
from mixer.engine.engine import Engine
from mixer.settings import EngineSettings
from mixer.sim.call import join
from mixer.sim.participant import SimulatedParticipant

RATE = 48000
HZ = (520.0, 710.0, 930.0)
# The longest stretch a listener may miss a continuous talker at a switch (issue 17).
MAX_GAP_MS = 60.0


class RecordingEncoder:
    """Wraps a participant's encoder to keep every payload it produced, in order."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.payloads: list[bytes] = []

    def encode(self, frame: np.ndarray) -> bytes:
        payload = self.encoder.encode(frame)
        self.payloads.append(payload)
        return payload


def talker(name: str, freq: float, seconds: float, **kwargs) -> SimulatedParticipant:
    p = SimulatedParticipant(name, freq, tone(freq, seconds, amplitude=0.2), **kwargs)
    p.encoder = RecordingEncoder(p.encoder)
    return p


def assert_one_continuous_stream(p: SimulatedParticipant, exact_step: int | None = None,
                                 min_packets: int = 50) -> None:
    """One SSRC; in arrival order each sequence number is the previous plus one; timestamps go
    forward by at least a frame (exactly `exact_step` when given) and track arrival time."""
    streams = p.received.streams
    assert len(streams) == 1, f"{p.name} got {len(streams)} streams"
    packets = next(iter(streams.values()))
    assert len(packets) > min_packets
    samples = 960 if p.codec == "opus" else 160
    clock = 48000 if p.codec == "opus" else 8000
    for (t0, seq0, ts0, _), (t1, seq1, ts1, _) in zip(packets, packets[1:]):
        assert seq1 == (seq0 + 1) & 0xFFFF, f"{p.name}: sequence jumps from {seq0} to {seq1}"
        step = (ts1 - ts0) & 0xFFFFFFFF
        if exact_step is not None:
            assert step == exact_step, f"{p.name}: timestamp step {step}"
        assert samples <= step < clock * 5, f"{p.name}: timestamp jumps by {step}"
    # timestamps follow wall time: media time and arrival time advance alike (within 150 ms,
    # generous for a loaded machine's scheduling)
    t_first, _, ts_first, _ = packets[0]
    t_last, _, ts_last, _ = packets[-1]
    media_s = ((ts_last - ts_first) & 0xFFFFFFFF) / clock
    assert abs(media_s - (t_last - t_first)) < 0.15, f"{p.name}: {media_s:.3f} s of media " \
        f"in {t_last - t_first:.3f} s"


async def run_relay(people: list[SimulatedParticipant], seconds: float, script=None,
                    settings: EngineSettings | None = None) -> tuple[dict, dict, list]:
    """Run a relay conference: the first two join, start talking, `script(engine, conference,
    start)` runs (or the call just lasts `seconds`). Returns the conference and leg stats, and
    the script's result; the conference's stats when the first two had joined are in
    `conference["joined"]`."""
    engine = Engine(settings or EngineSettings(media_ports="42000-42999"))
    engine.start()
    result = None
    try:
        conference_id = engine.create_conference("relay")["id"]
        for p in people[:2]:
            await join(engine, conference_id, p)
        joined = engine.get_conference(conference_id)["stats"]
        start = asyncio.get_running_loop().time() + 0.05
        for p in people[:2]:
            p.start(start)
        if script is not None:
            result = await script(engine, conference_id)
        else:
            await asyncio.sleep(seconds + 0.3)
        conference = engine.get_conference(conference_id)
        conference["joined"] = joined
        engine.delete_conference(conference_id)
    finally:
        engine.stop()
        await asyncio.sleep(0.05)
        for p in people:
            p.close()
    legs = {leg["label"]: leg for leg in conference["legs"]}
    return conference, legs, result


@pytest.mark.parametrize("srtp", [False, True], ids=["rtp", "srtp"])
@pytest.mark.parametrize("codec", ["opus", "PCMU"])
def test_one_to_one_is_forwarded_bit_exact(srtp: bool, codec: str) -> None:
    seconds = 2.0
    a = talker("a", HZ[0], seconds, srtp=srtp, codec=codec)
    b = talker("b", HZ[1], seconds, srtp=srtp, codec=codec)
    conference, legs, _ = uvloop.run(run_relay([a, b], seconds))
    stats = conference["stats"]
    assert stats["state"] == "forward" and stats["switches_to_forward"] == 1
    # nothing decoded or encoded since both joined (alone, the first leg was the mixer's)
    joined = conference["joined"]
    assert (stats["decodes"], stats["own_encodes"], stats["shared_encodes"]) == \
        (joined["decodes"], joined["own_encodes"], joined["shared_encodes"])
    for sender, receiver in ((a, b), (b, a)):
        sent = sender.encoder.payloads
        got = [payload for _, _, _, payload in receiver.received.packets]
        assert len(sent) >= 90
        # before the second leg joined, the first got the (silent) mix: then the relayed packets
        assert got[-len(sent):] == sent, f"{receiver.name} did not get {sender.name}'s payloads"
        assert_one_continuous_stream(receiver)
        assert receiver.bad_packets == 0
        leg = legs[receiver.name]
        assert leg["srtp"] is srtp and leg["drops"]["srtp"] == 0
        assert leg["relayed"] == len(sent)
    assert stats["packets_relayed"] == len(a.encoder.payloads) + len(b.encoder.payloads)


def test_opus_and_pcmu_one_to_one_hear_each_other_through_the_mixer() -> None:
    seconds = 2.5
    a = talker("a", HZ[0], seconds, codec="opus")
    b = talker("b", HZ[1], seconds, codec="PCMU")
    conference, _, _ = uvloop.run(run_relay([a, b], seconds))
    assert conference["stats"]["state"] == "mix"  # different codecs: transcoded, not forwarded
    for listener, other in ((a, b), (b, a)):
        pcm, _ = listener.heard_audio()
        levels = tone_levels_db(pcm[int(0.5 * RATE):], HZ[:2])
        assert levels[other.freq_hz] > -30, f"{listener.name} hears {levels}"
        assert levels[listener.freq_hz] < -45, f"{listener.name} hears itself: {levels}"
        assert_one_continuous_stream(listener)


def longest_gap(pcm: np.ndarray, freq: float) -> tuple[float, int]:
    """Longest run (ms) where a continuous tone's envelope is below half its median, and the
    sample index where it ends."""
    envelope = tone_envelope(pcm, freq)
    quiet = envelope < 0.5 * np.median(envelope)
    longest = run = end = 0
    for i, q in enumerate(quiet):
        run = run + 1 if q else 0
        if run > longest:
            longest, end = run, i
    return longest * 1000.0 / RATE, end


@pytest.mark.parametrize("srtp", [False, True], ids=["rtp", "srtp"])
def test_third_joins_and_leaves_switching_live(srtp: bool) -> None:
    """1:1 forwarded -> a third joins (mixed) -> it leaves (forwarded again): each of the first two
    keeps one continuous stream, hears the other throughout with no gap beyond MAX_GAP_MS
    around either switch, and hears the third only while it is there."""
    seconds = 4.5
    a = talker("a", HZ[0], seconds, srtp=srtp)
    b = talker("b", HZ[1], seconds, srtp=srtp)
    c = talker("c", HZ[2], 1.6, srtp=srtp)
    marks: dict[str, float] = {}

    async def script(engine: Engine, conference_id: str):
        await asyncio.sleep(1.5)
        states = [engine.get_conference(conference_id)["stats"]["state"]]
        marks["join"] = time.monotonic()
        leg_c = await join(engine, conference_id, c)
        c.start()
        states.append(engine.get_conference(conference_id)["stats"]["state"])
        await asyncio.sleep(1.5)
        marks["leave"] = time.monotonic()
        engine.remove_leg(conference_id, leg_c)
        states.append(engine.get_conference(conference_id)["stats"]["state"])
        await asyncio.sleep(1.3)
        return states

    conference, legs, states = uvloop.run(run_relay([a, b, c], seconds, script))
    assert states == ["forward", "mix", "forward"]
    stats = conference["stats"]
    assert stats["switches_to_mix"] == 1 and stats["switches_to_forward"] == 2
    for listener, other in ((a, b), (b, a)):
        assert_one_continuous_stream(listener)
        pcm, times = listener.heard_audio()
        for mark in ("join", "leave"):
            # the switch's neighbourhood only: farther away, a loaded machine's scheduling (the
            # engine or a participant starved of CPU) makes dips that are not the switch's
            window = (times >= marks[mark] - 0.15) & (times < marks[mark] + 0.25)
            assert window.sum() > 0.3 * RATE, "too little audio around the switch"
            gap, end = longest_gap(pcm[window], other.freq_hz)
            print(f"{listener.name}: longest gap of {other.name} around the {mark}: {gap:.1f} ms, "
                  f"ending {times[window][end] - marks[mark]:+.3f} s from it")
            assert gap <= MAX_GAP_MS, f"{listener.name} lost {other.name} for {gap:.0f} ms at {mark}"
        during = (times >= marks["join"] + 0.3) & (times < marks["leave"])
        after = times >= marks["leave"] + 0.3
        heard = tone_levels_db(pcm[during], HZ)
        assert heard[c.freq_hz] > -30 and heard[other.freq_hz] > -30, heard
        later = tone_levels_db(pcm[after], HZ)
        assert later[c.freq_hz] < -45 < later[other.freq_hz], later
    # no level jump: the other's tone as forwarded and as mixed with a third voice (one Opus
    # stream at the default bitrate now carries two tones, which costs a little of each)
    for listener, other in ((a, b), (b, a)):
        pcm, times = listener.heard_audio()
        before = (times >= marks["join"] - 1.0) & (times < marks["join"] - 0.1)
        during = (times >= marks["join"] + 0.3) & (times < marks["leave"] - 0.1)
        lb = tone_levels_db(pcm[before], [other.freq_hz])[other.freq_hz]
        ld = tone_levels_db(pcm[during], [other.freq_hz])[other.freq_hz]
        assert abs(lb - ld) < 3.0, f"{listener.name}: {other.name} at {lb:.1f} then {ld:.1f} dBFS"


def test_recording_switches_to_mixing_and_back(tmp_path) -> None:
    """A recording needs the mix: attaching one makes the relay mix, stopping it forwards again."""
    seconds = 3.0
    a = talker("a", HZ[0], seconds)
    b = talker("b", HZ[1], seconds)

    async def script(engine: Engine, conference_id: str):
        await asyncio.sleep(0.8)
        states = [engine.get_conference(conference_id)["stats"]["state"]]
        recording = engine.start_recording(conference_id)
        await asyncio.sleep(1.0)
        states.append(engine.get_conference(conference_id)["stats"]["state"])
        engine.stop_recording(conference_id, recording["id"])
        await asyncio.sleep(0.1)
        states.append(engine.get_conference(conference_id)["stats"]["state"])
        await asyncio.sleep(1.0)
        return states

    settings = EngineSettings(media_ports="42000-42999", recordings_dir=str(tmp_path))
    _, _, states = uvloop.run(run_relay([a, b], seconds, script, settings))
    assert states == ["forward", "mix", "forward"]
    for listener, other in ((a, b), (b, a)):
        assert_one_continuous_stream(listener)
        # the same voice forwarded, then decoded and encoded again by the mixer: no level jump
        pcm, _ = listener.heard_audio()
        forwarded = tone_levels_db(pcm[int(0.3 * RATE):int(0.8 * RATE)], [other.freq_hz])
        mixed = tone_levels_db(pcm[int(1.2 * RATE):int(1.7 * RATE)], [other.freq_hz])
        jump = mixed[other.freq_hz] - forwarded[other.freq_hz]
        print(f"{listener.name}: level of {other.name} forwarded -> mixed {jump:+.2f} dB")
        assert abs(jump) < 1.0, f"{listener.name}: {other.name} jumps by {jump:.1f} dB"


def test_webrtc_and_sdes_one_to_one_is_forwarded() -> None:
    """A WebRTC client (aiortc: ICE, DTLS-SRTP) and an SDES-SRTP client: forwarded, each leg with
    its own keys; the RTP client gets its peer's payloads in one continuous stream, and the
    browser hears the RTP client's tone from payloads the engine never re-encoded."""
    from mixer.sim.webrtc_peer import AiortcPeer

    sim = talker("sim", 660.0, 4.0, srtp=True)

    async def scenario():
        engine = Engine(EngineSettings(media_ports="42000-42999"))
        engine.start()
        peer = AiortcPeer("browser", 440.0)
        try:
            conference = engine.create_conference("relay")["id"]
            answer = await engine.add_leg(conference, await peer.offer(), "browser")
            await peer.accept(answer["sdp"])
            await join(engine, conference, sim)
            # (the browser alone was mixed: it may have sent a packet or two by now)
            joined = engine.get_conference(conference)["stats"]
            sim.start()
            await peer.connected()
            await asyncio.sleep(3.0)
            result = engine.get_conference(conference)
        finally:
            await peer.close()
            sim.close()
            engine.stop()
        return peer, joined, result

    peer, joined, conference = uvloop.run(scenario())
    stats = conference["stats"]
    assert stats["state"] == "forward"
    # nothing decoded or encoded since the second leg joined
    assert (stats["decodes"], stats["own_encodes"]) == (joined["decodes"], joined["own_encodes"])
    legs = {leg["label"]: leg for leg in conference["legs"]}
    browser = legs["browser"]
    assert browser["kind"] == "webrtc" and browser["webrtc"]["state"] == "connected"
    assert browser["relayed"] > 100 and legs["sim"]["relayed"] > 100
    assert sum(browser["drops"].values()) == 0, browser["drops"]
    assert peer.levels([440.0, 660.0])[660.0] > -30
    assert_one_continuous_stream(sim)
    pcm, _ = sim.heard_audio()
    levels = tone_levels_db(pcm[int(0.5 * RATE):], [440.0, 660.0])
    assert levels[440.0] > -30 > levels[660.0], levels


def test_mute_stops_relaying_and_a_nack_reaches_the_sender_in_its_numbering() -> None:
    """A muted leg's packets are not relayed (the other hears nothing of it, its stream just
    pauses); a NACK from the receiver for relayed packets is passed to the sender with the
    sender's own sequence numbers (RFC 4585 6.2.1), the relay terminating RTCP otherwise."""
    from mixer.rtp.rtcp import RtcpNack, RtcpReceiverReport, serialize_compound

    seconds = 3.0
    a = talker("a", HZ[0], seconds)
    b = talker("b", HZ[1], seconds)

    async def script(engine: Engine, conference_id: str):
        await asyncio.sleep(1.0)
        # b asks again for two packets it got from a: in b's numbering, which the relay rewrote
        (ssrc, packets), = b.received.streams.items()
        _, seq1, _, _ = packets[-5]
        _, seq2, _, _ = packets[-3]
        b._sendto(serialize_compound([RtcpReceiverReport(ssrc=b.ssrc, reports=[]),
                                      RtcpNack(sender_ssrc=b.ssrc, media_ssrc=ssrc,
                                               lost=[seq1, seq2])]))
        await asyncio.sleep(0.3)
        leg_a = next(leg for leg in engine.get_conference(conference_id)["legs"] if leg["label"] == "a")
        engine.update_leg(conference_id, leg_a["id"], muted=True)
        count = len(b.received.packets)
        await asyncio.sleep(0.8)
        muted_count = len(b.received.packets) - count
        engine.update_leg(conference_id, leg_a["id"], muted=False)
        await asyncio.sleep(0.8)
        return muted_count

    conference, legs, muted_count = uvloop.run(run_relay([a, b], seconds, script))
    stats = conference["stats"]
    assert stats["state"] == "forward"
    assert stats["nacks_forwarded"] == 1 and legs["a"]["nacks_out"] == 1
    assert legs["b"]["nacks_in"] == 1
    assert muted_count <= 2, f"b got {muted_count} packets of a muted a"
    assert stats["packets_not_relayed"] >= 30
    # after unmuting, b's stream goes on: one stream, numbering continuous
    assert_one_continuous_stream(b)
