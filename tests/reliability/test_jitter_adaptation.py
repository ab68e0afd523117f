"""The jitter buffer adapts through the real engine: its target delay rises when the network's
jitter rises and comes back down when the jitter goes away (read from Engine.get_conference)."""
from __future__ import annotations

import numpy as np
import uvloop

from mixer.sim.call import CallConfig
from mixer.sim.impair import Impairment, jitter_phases, run_impaired_call, sample_jitter_buffers

CLEAN_S, JITTER_S, TOTAL_S = 2.5, 4.0, 11.0


def test_target_delay_follows_jitter_up_and_back_down():
    rough = Impairment(jitter_ms=80.0)  # uniform 0..80 ms one way, on every uplink
    result = uvloop.run(run_impaired_call(
        CallConfig(participants=3, duration_s=TOTAL_S, seed=5), Impairment(), Impairment(),
        sample_every_s=0.25, sample=sample_jitter_buffers, during=jitter_phases(CLEAN_S, JITTER_S, rough)))
    t = np.array([s["t"] for s in result.samples])
    target = np.array([s["target_delay_ms"] for s in result.samples])  # samples x legs
    jitter = np.array([s["jitter_ms"] for s in result.samples])
    before = target[(t > 1.0) & (t < CLEAN_S)]
    during = target[(t > CLEAN_S + 1.0) & (t < CLEAN_S + JITTER_S)]
    after = target[t > TOTAL_S - 1.5]
    # every leg: more delay under jitter than before it, and less again at the end
    assert (during.max(axis=0) >= before.max(axis=0) + 20.0).all(), (before.max(axis=0), during.max(axis=0))
    assert (after.mean(axis=0) <= during.max(axis=0) - 20.0).all(), (during.max(axis=0), after.mean(axis=0))
    # RFC 3550 interarrival jitter seen by the engine rose with it
    assert (jitter[(t > CLEAN_S + 1.0) & (t < CLEAN_S + JITTER_S)].max(axis=0) > 5.0).all()
    # and the call stayed whole: everyone heard everyone
    assert result.call.ok, [(l.name, l.missing) for l in result.call.listeners]
