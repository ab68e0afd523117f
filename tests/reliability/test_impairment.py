"""The impairment proxy itself, and MCU calls through it: what loss and jitter do to what people hear.

Calls are real: an engine, simulated participants sending Opus over UDP, and every participant behind
its own ImpairedLink, so the engine's sends are impaired too. The assertions are qualitative (every
voice heard at 5% loss, quality no better at 20% than at 0%); the measured table is written by
`bench/impairment.py` to docs/reliability.md.
"""
from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest
import uvloop

from mixer.sim.call import CallConfig
from mixer.sim.impair import GilbertElliott, ImpairedLink, ImpairedPath, Impairment, expected_loss, run_impaired_call


def run(coroutine):
    return uvloop.run(coroutine)


# ------------------------------------------------------------------------------ the proxy alone
def fates(impairment: Impairment, seed: int, n: int) -> list:
    path = ImpairedPath(impairment, seed, lambda data: None)
    return [path.fate() for _ in range(n)]


def test_same_seed_same_fates_other_seed_other_fates():
    impairment = Impairment(loss=0.1, duplicate=0.05, reorder=0.05, jitter_ms=30, jitter="pareto")
    assert fates(impairment, 5, 2000) == fates(impairment, 5, 2000)
    assert fates(impairment, 5, 2000) != fates(impairment, 6, 2000)


@pytest.mark.parametrize("loss", [0.02, 0.05, 0.1, 0.2])
def test_random_loss_rate_and_isolated_losses(loss):
    dropped = np.array([f is None for f in fates(Impairment(loss=loss), 1, 20000)])
    assert abs(dropped.mean() - loss) < 0.01
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate(([0], dropped.astype(int), [0])))))[::2]
    assert runs.mean() < 1.0 / (1.0 - loss) + 0.05  # geometric run lengths: independent losses


def test_gilbert_elliott_has_the_asked_mean_loss_and_burst_length():
    model = GilbertElliott.for_loss(0.10, mean_burst=4.0)
    assert model.mean_loss == pytest.approx(0.10)
    dropped = np.array([f is None for f in fates(Impairment(burst=model), 2, 50000)])
    assert abs(dropped.mean() - 0.10) < 0.015
    edges = np.diff(np.concatenate(([0], dropped.astype(int), [0])))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    assert 3.4 < runs.mean() < 4.6
    assert expected_loss(Impairment(loss=0.1, burst=model)) == pytest.approx(1 - 0.9 * 0.9)


@pytest.mark.parametrize("kind", ["uniform", "normal", "exponential", "pareto"])
def test_jitter_distributions_are_positive_with_the_asked_scale(kind):
    delays = np.array([f[0] for f in fates(Impairment(delay_ms=10, jitter_ms=20, jitter=kind), 3, 5000)])
    assert delays.min() >= 10.0
    assert 3.0 < np.median(delays - 10.0) < 25.0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Impairment(loss=1.5)
    with pytest.raises(ValueError):
        Impairment(jitter="gamma")
    with pytest.raises(ValueError):
        GilbertElliott.for_loss(0.1, mean_burst=0.5)


def test_link_over_real_udp_loses_duplicates_and_reorders_both_ways():
    async def scenario():
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (client, server):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        up = Impairment(loss=0.1, duplicate=0.1)
        down = Impairment(jitter_ms=60)  # uniform 0..60 ms at one packet per 5 ms: reorders
        link = await ImpairedLink.open(client.getsockname(), up, down, seed=9)
        link.connect(server.getsockname())
        got_up, got_down = [], []
        try:
            for i in range(400):
                client.sendto(i.to_bytes(2, "big"), link.client_facing)
                server.sendto(i.to_bytes(2, "big"), link.engine_facing)
                await asyncio.sleep(0.005)
                got_up += _drain(server)  # keep the receive buffers from filling up
                got_down += _drain(client)
            await asyncio.sleep(0.15)
            got_up += _drain(server)
            got_down += _drain(client)
        finally:
            link.close()
            client.close()
            server.close()
        return link.stats(), got_up, got_down

    stats, got_up, got_down = run(scenario())
    assert stats["up"]["received"] == 400 and stats["down"]["received"] == 400
    assert len(got_up) == stats["up"]["forwarded"] == 400 - stats["up"]["lost"] + stats["up"]["duplicated"]
    assert 20 < stats["up"]["lost"] < 65 and stats["up"]["duplicated"] > 15
    assert len(set(got_up)) == 400 - stats["up"]["lost"]
    assert sorted(got_down) == list(range(400))             # no loss that way ...
    assert got_down != list(range(400))                     # ... but reordered


def _drain(sock: socket.socket) -> list[int]:
    out = []
    try:
        while True:
            out.append(int.from_bytes(sock.recv(64), "big"))
    except BlockingIOError:
        return out


def test_link_refuses_non_loopback_addresses():
    async def scenario():
        await ImpairedLink.open(("192.0.2.1", 5000))
    with pytest.raises(ValueError):
        run(scenario())


# ------------------------------------------------------------------------ calls through the proxy
def call(loss: float = 0.0, burst: GilbertElliott | None = None, seconds: float = 3.0):
    impairment = Impairment(loss=loss, burst=burst)
    return run(run_impaired_call(CallConfig(participants=4, duration_s=seconds, seed=11), impairment, impairment))


@pytest.fixture(scope="module")
def calls():
    return {"clean": call(), "5%": call(0.05), "20%": call(0.20),
            "bursty 10%": call(burst=GilbertElliott.for_loss(0.10, 3.0))}


def mean_quality(result, key: str) -> float:
    return float(np.mean([q[key] for q in result.quality.values()]))


def test_every_voice_is_heard_without_loss_and_at_5_percent(calls):
    for name in ("clean", "5%"):
        result = calls[name].call
        assert result.ok, [(l.name, l.missing, l.own_level_db) for l in result.listeners]


def test_the_proxy_really_lost_packets_both_ways(calls):
    for name, loss in (("5%", 5.0), ("20%", 20.0)):
        for link in calls[name].links.values():
            assert link["up"]["lost"] > 0 and link["down"]["lost"] > 0
        engine_seen = [l.engine_leg["jitter_buffer"]["lost"] for l in calls[name].call.listeners]
        assert sum(engine_seen) > 0  # the engine saw the uplink losses as losses


def test_quality_degrades_with_loss(calls):
    clean, heavy = calls["clean"], calls["20%"]
    assert mean_quality(heavy, "dropout_percent") > mean_quality(clean, "dropout_percent")
    assert mean_quality(heavy, "tone_snr_db") < mean_quality(clean, "tone_snr_db")
    # even at 20% loss both ways, concealment keeps most of the talk audible
    assert mean_quality(heavy, "dropout_percent") < 50.0


def test_bursty_loss_is_bursty_in_the_call(calls):
    bursts = [link[d]["mean_loss_burst"] for link in calls["bursty 10%"].links.values() for d in ("up", "down")]
    randoms = [link[d]["mean_loss_burst"] for link in calls["20%"].links.values() for d in ("up", "down")]
    assert np.mean(bursts) > np.mean(randoms) + 0.5
