"""The MCU's FEC follows what receivers report (RTCP RR fraction lost), per listener group.

A real call on loopback: one talker, a listener behind a lossy downlink (the impairment proxy
drops 10 % of what the engine sends it), and a clean listener. The lossy listener's reports put
it, and with it the listeners' shared encoder, in a FEC tier; nobody's reports of a clean call do.
"""
from __future__ import annotations

import asyncio

import numpy as np
import uvloop

from mixer.engine.engine import Engine
from mixer.mcu.encoding import tier_hint
from mixer.settings import EngineSettings
from mixer.sim.call import join
from mixer.sim.impair import Impairment, join_through
from mixer.sim.participant import SimulatedParticipant, talk_signal

SECONDS = 5.0


async def call(lossy_percent: float) -> tuple[dict, dict]:
    engine = Engine(EngineSettings(media_ports="44400-44599"))
    engine.start()
    conference = engine.create_conference("mcu")["id"]
    pattern = np.ones(int(SECONDS * 4), dtype=bool)
    talker = SimulatedParticipant("talker", 440.0, talk_signal(440.0, pattern))
    quiet = np.zeros(int(SECONDS * 48000), dtype=np.int16)
    lossy = SimulatedParticipant("lossy", 0.0, quiet)
    clean = SimulatedParticipant("clean", 0.0, quiet)
    await join(engine, conference, talker)
    lossy_leg, link = await join_through(engine, conference, lossy, Impairment(),
                                         Impairment(loss=lossy_percent / 100), seed=3)
    clean_leg = await join(engine, conference, clean)
    start = asyncio.get_running_loop().time() + 0.05
    for person in (talker, lossy, clean):
        person.start(start)
    await asyncio.sleep(SECONDS)
    state = engine.get_conference(conference)
    legs = {leg["id"]: leg for leg in state["legs"]}
    engine.stop()
    for person in (talker, lossy, clean):
        person.close()
    link.close()
    return {"lossy": legs[lossy_leg], "clean": legs[clean_leg]}, state["stats"]


def test_a_lossy_listener_turns_on_fec_for_its_group_and_a_clean_call_has_none():
    legs, stats = uvloop.run(call(10.0))
    assert legs["lossy"]["reported_loss_percent"] > 3.0
    assert legs["lossy"]["fec_tier"] >= 1
    assert legs["clean"]["fec_tier"] == 0
    assert tier_hint(stats["listener_fec_tiers"]["opus"]) > 0   # the group's shared encoder

    legs, stats = uvloop.run(call(0.0))
    assert legs["lossy"]["fec_tier"] == 0 and legs["clean"]["fec_tier"] == 0
    assert stats["listener_fec_tiers"].get("opus", 0) == 0
