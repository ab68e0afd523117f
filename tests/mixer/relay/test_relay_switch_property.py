"""Property test of the live switch: whatever sequence of joins, leaves and talk patterns a relay
conference goes through, the two participants who stay get one continuous RTP stream each.

Real engine, real UDP and Opus/G.711; hypothesis draws the sequence (a few examples: each one is
a real call of one to two seconds).
"""
from __future__ import annotations

import asyncio

import numpy as np
import uvloop
from hypothesis import HealthCheck, given, settings, strategies as st

from mixer.analysis import TEST_TONES_HZ
from mixer.engine.engine import Engine
from mixer.settings import EngineSettings
from mixer.sim.call import join
from mixer.sim.participant import SimulatedParticipant, talk_signal
from tests.mixer.relay.test_relay_e2e import assert_one_continuous_stream

SECONDS = 3.0
operations = st.lists(st.one_of(
    st.tuples(st.just("join"), st.sampled_from(["opus", "PCMU"])),
    st.tuples(st.just("leave"), st.integers(0, 3)),
    st.tuples(st.just("wait"), st.integers(20, 300)),
), min_size=1, max_size=6)
patterns = st.lists(st.booleans(), min_size=4, max_size=12)   # talk / silent per quarter second


def talker(name: str, freq: float, pattern: list[bool], codec: str = "opus") -> SimulatedParticipant:
    quarters = int(SECONDS * 4)
    spread = np.resize(np.array(pattern, dtype=bool), quarters)
    return SimulatedParticipant(name, freq, talk_signal(freq, spread), codec=codec)


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, talk_a=patterns, talk_b=patterns)
def test_any_joins_leaves_and_talk_keep_the_streams_continuous(ops, talk_a, talk_b) -> None:
    a = talker("a", TEST_TONES_HZ[0], talk_a)
    b = talker("b", TEST_TONES_HZ[1], talk_b)
    extras: list[tuple[SimulatedParticipant, str]] = []

    async def scenario():
        engine = Engine(EngineSettings(media_ports="44000-44999"))
        engine.start()
        try:
            conference = engine.create_conference("relay")["id"]
            for p in (a, b):
                await join(engine, conference, p)
            start = asyncio.get_running_loop().time() + 0.05
            a.start(start)
            b.start(start)
            await asyncio.sleep(0.3)
            for op, arg in ops:
                if op == "join":
                    extra = talker(f"x{len(extras)}", TEST_TONES_HZ[2 + len(extras) % 4],
                                   [True, False], codec=arg)
                    extras.append((extra, await join(engine, conference, extra)))
                    extra.start()
                elif op == "leave":
                    present = [(p, leg) for p, leg in extras if not p.finished.is_set()]
                    if present:
                        p, leg = present[arg % len(present)]
                        engine.remove_leg(conference, leg)
                        p.stop()
                else:
                    await asyncio.sleep(arg / 1000)
            await asyncio.sleep(0.3)
            stats = engine.get_conference(conference)["stats"]
            present = [p for p, _ in extras if not p.finished.is_set()]
        finally:
            engine.stop()
            await asyncio.sleep(0.05)
            for p in (a, b, *(p for p, _ in extras)):
                p.close()
        return stats, present

    stats, present = uvloop.run(scenario())
    assert stats["state"] == ("forward" if not present else "mix")
    for p in (a, b):
        assert_one_continuous_stream(p, min_packets=20)
        assert p.bad_packets == 0
