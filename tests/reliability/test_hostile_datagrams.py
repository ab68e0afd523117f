"""Random datagrams aimed at one leg of a live call: counted as drops, and nobody else hears a
difference. A real call (4 simulated participants, Opus) runs twice with the same seed: clean, and
with a stranger sending 400 random datagrams a second at p1's port (garbage, RTP-shaped garbage,
RTCP-shaped garbage, RTP with p1's payload type and a garbage payload)."""
from __future__ import annotations

import asyncio
import random
import socket

import uvloop

from mixer import _rtp
from mixer.engine.engine import Engine
from mixer.sim.call import CallConfig, run_call

CONFIG = CallConfig(participants=4, duration_s=3.0, seed=21)


def hostile(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    body = rng.randbytes(rng.randrange(0, 400))
    if kind == 0:
        return body
    if kind == 1:
        return bytes([0x80 | rng.randrange(64), rng.randrange(256)]) + body
    if kind == 2:
        return bytes([0x80 | rng.randrange(32), rng.choice((200, 201, 202, 203, 205, 206))]) + body
    return _rtp.build_rtp(111, rng.randrange(65536), rng.getrandbits(32), rng.getrandbits(32), body)


async def attacked_call():
    engine = Engine()
    engine.start()
    sent = 0
    stop = asyncio.Event()

    async def attacker():
        nonlocal sent
        rng = random.Random(99)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        target = None
        while not stop.is_set():
            if target is None:
                legs = [leg for c in engine.conferences.values() for leg in c.legs.values() if leg.label == "p1"]
                target = ("127.0.0.1", legs[0].local_port) if legs else None
            else:
                for _ in range(8):
                    sock.sendto(hostile(rng), target)
                    sent += 1
            await asyncio.sleep(0.02)
        sock.close()

    task = asyncio.create_task(attacker())
    try:
        result = await run_call(CONFIG, engine=engine)
    finally:
        stop.set()
        await task
        engine.stop()
    return result, sent


def test_random_datagrams_at_one_leg_are_dropped_and_disturb_nobody_else():
    clean = uvloop.run(run_call(CONFIG))
    attacked, sent = uvloop.run(attacked_call())
    victim = next(l for l in attacked.listeners if l.name == "p1")
    drops = victim.engine_leg["drops"]
    assert sent > 800
    assert sum(drops.values()) > 0.5 * sent
    assert victim.engine_leg["ssrc_changes"] > 0  # some garbage was well-formed RTP (see test_security)
    for before, after in zip(clean.listeners, attacked.listeners):
        assert not after.missing or after.missing == ["p1"], (after.name, after.missing)
        assert after.own_level_db < -40.0  # mix-minus intact
        for voice, level in before.heard.items():
            if voice != "p1":  # p1's own stream is what the stranger can disturb (xfail in test_security)
                assert abs(after.heard[voice] - level) < 3.0, (after.name, voice, level, after.heard[voice])
