"""Run a real group call on loopback: an engine, simulated participants, and what each one heard.

Used by `voicemix demo`, the end-to-end tests and the benchmarks, so all three measure the same thing.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mixer.analysis import TEST_TONES_HZ, onset_latencies_ms, tone_levels_db
from mixer.engine.engine import Engine
from mixer.sim.participant import Impairment, SimulatedParticipant, talk_pattern, talk_signal

HEARD_THRESHOLD_DB = -40.0  # a tone above this level (dBFS) in what a listener received is "heard"
WARMUP_S = 0.5              # skipped at the start of each recording (jitter buffers filling)


@dataclass
class CallConfig:
    participants: int = 4
    duration_s: float = 5.0
    codec: str = "opus"               # opus, PCMU, PCMA, or mixed (rotates through all three)
    srtp: bool = False
    loss_percent: float = 0.0
    jitter_ms: float = 0.0
    seed: int = 1
    mode: str = "mcu"                 # mcu (one mixed stream back) or sfu (one stream per speaker)


@dataclass
class ListenerReport:
    name: str
    codec: str
    tone_hz: float
    heard: dict[str, float]           # other participant -> level of their voice (dBFS)
    missing: list[str]                # others whose voice was not heard
    own_level_db: float               # own voice in what came back (must be absent)
    loss_percent: float
    jitter_ms: float
    latency_ms: list[float]
    rtt_ms: float | None
    engine_leg: dict = field(repr=False, default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.missing and self.own_level_db < HEARD_THRESHOLD_DB

    def latency_percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latency_ms, q)) if self.latency_ms else None


@dataclass
class CallResult:
    listeners: list[ListenerReport]
    engine_stats: dict
    conference_stats: dict

    @property
    def ok(self) -> bool:
        return all(listener.ok for listener in self.listeners)

    def latencies(self) -> list[float]:
        return [x for listener in self.listeners for x in listener.latency_ms]


def _codec_for(index: int, codec: str) -> str:
    return ("opus", "PCMU", "PCMA")[index % 3] if codec == "mixed" else codec


def make_participants(config: CallConfig) -> list[SimulatedParticipant]:
    result = []
    for i in range(config.participants):
        freq = TEST_TONES_HZ[i % len(TEST_TONES_HZ)]
        pattern = talk_pattern(i, config.participants, config.duration_s)
        result.append(SimulatedParticipant(
            f"p{i + 1}", freq, talk_signal(freq, pattern), codec=_codec_for(i, config.codec),
            srtp=config.srtp,
            impairment=Impairment(config.loss_percent, config.jitter_ms, config.seed + i)))
    return result


async def join(engine: Engine, conference_id: str, participant: SimulatedParticipant) -> str:
    """Offer/answer through the engine's control API; returns the leg id."""
    answer = await engine.add_leg(conference_id, await participant.offer(), label=participant.name)
    participant.accept(answer["sdp"])
    return answer["id"]


async def run_call(config: CallConfig, engine: Engine | None = None,
                   progress: Callable[[float, Engine], None] | None = None,
                   participants: list[SimulatedParticipant] | None = None) -> CallResult:
    """Start (or reuse) an engine, run the call for `duration_s`, and analyse every listener.

    The simulated participants (their signals are synthesised up front, tens of ms) are made
    before an engine of our own starts: they share its event loop, and would otherwise hold up
    the engine's first ticks. A caller that passes its running engine passes them made, too."""
    if participants is None:
        participants = make_participants(config)
    own_engine = engine is None
    if own_engine:
        engine = Engine()
        engine.start()
    conference_id = engine.create_conference(config.mode)["id"]
    leg_ids = [await join(engine, conference_id, p) for p in participants]
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    for p in participants:
        p.start(start)
    elapsed = 0.0
    while elapsed < config.duration_s:
        await asyncio.sleep(min(0.25, config.duration_s - elapsed))
        elapsed = loop.time() - start
        if progress is not None:
            progress(min(elapsed, config.duration_s), engine)
    await asyncio.sleep(0.3)  # the last mixes in flight
    conference = engine.get_conference(conference_id)
    legs = {leg["id"]: leg for leg in conference["legs"]}
    engine_stats = engine.stats()
    engine.delete_conference(conference_id)
    if own_engine:
        engine.stop()
    await asyncio.sleep(0.05)  # RTCP BYE from the engine reaches the clients before they close
    for p in participants:
        p.close()
    listeners = [_analyse(p, participants, legs.get(leg_id, {}))
                 for p, leg_id in zip(participants, leg_ids)]
    return CallResult(listeners, engine_stats, conference["stats"])


def _analyse(listener: SimulatedParticipant, everyone: list[SimulatedParticipant],
             engine_leg: dict) -> ListenerReport:
    """What `listener` heard: each voice's level (the loudest over the streams it received: one
    from an MCU, one per forwarded speaker from an SFU), onset latencies, loss and jitter."""
    skip = int(WARMUP_S * 48000)
    freqs = [p.freq_hz for p in everyone]
    streams = [(pcm, times) for pcm, times, _ in listener.heard_streams().values()] or \
        [(np.zeros(0, dtype=np.int16), np.zeros(0))]
    per_stream = [tone_levels_db(pcm[skip:], freqs) for pcm, _ in streams]
    levels = {f: max(levels[f] for levels in per_stream) for f in freqs}
    heard, missing, latencies = {}, [], []
    for other in everyone:
        if other is listener:
            continue
        level = levels[other.freq_hz]
        if level > HEARD_THRESHOLD_DB:
            heard[other.name] = round(level, 1)
            for (pcm, times), stream_levels in zip(streams, per_stream):
                if stream_levels[other.freq_hz] > HEARD_THRESHOLD_DB:
                    latencies += onset_latencies_ms(other.signal, np.array(other.send_times), pcm,
                                                    times, other.freq_hz)
        else:
            missing.append(other.name)
    receives = [r.stats() for r in listener.receive_by_ssrc.values()]
    expected = sum(r["expected"] for r in receives)
    lost = sum(r["lost"] for r in receives)
    return ListenerReport(
        name=listener.name, codec=listener.codec, tone_hz=listener.freq_hz, heard=heard,
        missing=missing, own_level_db=round(levels[listener.freq_hz], 1),
        loss_percent=round(100.0 * lost / expected, 2) if expected else 100.0,
        jitter_ms=max((r["jitter_ms"] for r in receives), default=0.0),
        latency_ms=latencies, rtt_ms=listener.round_trip.stats()["rtt_ms"], engine_leg=engine_leg)
