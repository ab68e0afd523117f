"""pytest-benchmark of one MCU tick at N=100 with 3 talkers: ours (`McuConference`) vs the naive MCU.

    python -m pytest bench/test_bench_mcu.py -q --benchmark-only

One call = one 20 ms `conference.tick()`: playout decisions for all 100 legs, decode/mix/encode, and
100 real UDP sends (real MediaLegs on sockets from PortAllocator, answered by `answer_audio`, sending
to one local sink socket). Before every round, untimed, each leg's jitter buffer gets that frame's
prepared RtpPacket (3 talkers: a loud tone, RFC 6464 level with V=1; 97 others: comfort noise, level
127 V=0), as the receive path would have filed it. Correctness assertions only, never timing; the
process-level scale test with CPU, lateness and memory is `bench/mcu_scale.py`.
"""
from __future__ import annotations

import itertools

import pytest

from mixer.mcu.conference import McuConference

from mcu_naive import NaiveMcuConference
from mcu_scale import TALKERS
from mcu_tickbench import WARMUP_TICKS, TickBench

N = 100


@pytest.fixture
def make_bench():
    benches = []

    def make(conference_type: type) -> TickBench:
        bench = TickBench(conference_type, N)
        benches.append(bench)
        bench.warm_up()
        return bench

    yield make
    for bench in benches:
        bench.close()


def _run(benchmark, bench: TickBench, rounds: int) -> tuple[dict, int]:
    before = dict(bench.conference.stats())
    sent_before = [leg.sent.packets for leg in bench.legs]
    benchmark.pedantic(bench.tick, setup=bench.setup_round, rounds=rounds, iterations=1)
    bench.drain()
    after = bench.conference.stats()
    ticks = after["ticks"] - before["ticks"]
    assert 1 <= ticks <= rounds  # one round only under --benchmark-disable
    # every leg sent exactly one packet per tick, and they arrived at the sink
    for leg, sent in zip(bench.legs, sent_before):
        assert leg.sent.packets - sent == ticks
    assert bench.received >= (WARMUP_TICKS + ticks) * N * 0.99
    return {key: after[key] - before[key] for key in ("decodes", "shared_encodes", "own_encodes")}, ticks


@pytest.mark.benchmark(group="mcu-tick-n100")
def test_mcu_tick_ours(benchmark, make_bench):
    """Decode only the 3 talkers (chosen by RFC 6464 level), 1 shared encode + 3 own encodes."""
    bench = make_bench(McuConference)
    counts, ticks = _run(benchmark, bench, rounds=200)
    assert len(bench.conference.speakers) == TALKERS
    assert {v.leg.id for v in bench.conference.speakers} == {leg.id for leg in bench.legs[:TALKERS]}
    assert counts["decodes"] == TALKERS * ticks
    assert counts["own_encodes"] == TALKERS * ticks
    assert counts["shared_encodes"] == ticks


@pytest.mark.benchmark(group="mcu-tick-n100")
def test_mcu_tick_naive(benchmark, make_bench):
    """The classic MCU: 100 decodes, 100 mix-minus, 100 encodes per tick."""
    bench = make_bench(NaiveMcuConference)
    counts, ticks = _run(benchmark, bench, rounds=30)
    assert counts["decodes"] == N * ticks
    assert counts["own_encodes"] == N * ticks
    assert counts["shared_encodes"] == 0


def test_naive_mixes_everyone_but_self():
    """The baseline is a correct MCU: a talker's mix-minus lacks its own tone, listeners hear all."""
    import numpy as np

    from mixer.analysis import tone_levels_db
    from mixer.codec import FrameDecoder
    from mcu_scale import TALKER_TONES_HZ

    bench = TickBench(NaiveMcuConference, n=5)
    try:
        payloads: dict[str, list[bytes]] = {leg.id: [] for leg in bench.legs}
        originals = {leg.id: leg.send_payload for leg in bench.legs}
        for leg in bench.legs:
            def capture(payload, wall_s, marker=False, leg=leg):
                payloads[leg.id].append(payload)
                originals[leg.id](payload, wall_s, marker)
            leg.send_payload = capture
        for _ in itertools.repeat(None, 60):
            args, _ = bench.setup_round()
            bench.tick(*args)
        tones = TALKER_TONES_HZ[:TALKERS]
        for index, leg in enumerate(bench.legs):
            decoder = FrameDecoder("opus")
            pcm = []
            for payload in payloads[leg.id][10:]:
                decoder.decode(payload)
                pcm.append(decoder.take_frame().copy())
            levels = tone_levels_db(np.concatenate(pcm), tones)
            for t, freq in enumerate(tones):
                if t == index:
                    assert levels[freq] < -40, f"talker {index} hears itself"
                else:
                    assert levels[freq] > -30, f"leg {index} misses talker {t}"
    finally:
        bench.close()
