"""What issue 18's checks cost: the engine's control secret, the REST limits, a plain leg's consent.

Prints CPU time per call (median of 7 runs of N calls each), and the control API's request cost
with and without a secret, interleaved in one run (GET /stats over keep-alive, on loopback).

    .venv/bin/python bench/control_auth.py
"""
from __future__ import annotations

import asyncio
import logging
import statistics
import time
from types import SimpleNamespace

import uvloop
from aiohttp import ClientSession

from controller.limits import RestLimits
from mixer.engine.control import start_control_api
from mixer.engine.control_auth import ControlGuard
from mixer.engine.engine import Engine
from mixer.legs.symmetric import SymmetricRtp
from mixer.settings import EngineSettings

SECRET = "correct-horse-battery-staple-42"


def per_call_ns(fn, n: int = 100_000, runs: int = 7) -> float:
    samples = []
    for _ in range(runs):
        start = time.process_time_ns()
        for _ in range(n):
            fn()
        samples.append((time.process_time_ns() - start) / n)
    return statistics.median(samples)


def micro() -> None:
    guard = ControlGuard(SECRET)
    header = f"Bearer {SECRET}"
    wrong = "Bearer " + "x" * len(SECRET)
    print(f"ControlGuard.check, right secret: {per_call_ns(lambda: guard.check('a', header, 1.0)):.0f} ns")
    failing = ControlGuard(SECRET, failure_limit=10**12)
    logging.disable(logging.WARNING)  # a refusal logs a line: the cost of a log call is not ours
    print(f"ControlGuard.check, wrong secret (same length, logging off): "
          f"{per_call_ns(lambda: failing.check('a', wrong, 1.0)):.0f} ns")
    logging.disable(logging.NOTSET)
    settings = SimpleNamespace(rest_rate_per_address=1e9, rest_burst_per_address=1e9,
                               rest_rate_per_identity=1e9, rest_burst_per_identity=1e9,
                               auth_failure_limit=10, auth_failure_window_s=60, auth_cooldown_s=60)
    limits = RestLimits(settings)
    print(f"RestLimits.check_address: {per_call_ns(lambda: limits.check_address('10.0.0.1', 1.0)):.0f} ns")
    print(f"RestLimits.identity_request: {per_call_ns(lambda: limits.identity_request('alice', 1.0)):.0f} ns")
    symmetric = SymmetricRtp(("127.0.0.1", 5000), ("127.0.0.1", 5001), False)
    symmetric.on_media(("127.0.0.1", 6000), False, False)
    print(f"SymmetricRtp.accepts (per packet): {per_call_ns(lambda: symmetric.accepts('127.0.0.1')):.0f} ns")


async def requests_per_second(port: int, headers: dict, n: int) -> float:
    async with ClientSession(headers=headers) as http:
        start = time.perf_counter()
        for _ in range(n):
            async with http.get(f"http://127.0.0.1:{port}/stats") as response:
                await response.read()
                assert response.status == 200
        return n / (time.perf_counter() - start)


async def end_to_end() -> None:
    open_engine, secret_engine = Engine(EngineSettings()), Engine(EngineSettings(control_secret=SECRET))
    runners = []
    try:
        open_runner, open_port = await start_control_api(open_engine)
        secret_runner, secret_port = await start_control_api(secret_engine)
        runners = [open_runner, secret_runner]
        rates = {"open": [], "secret": []}
        for _ in range(5):  # interleaved: the machine's drift hits both alike
            rates["open"].append(await requests_per_second(open_port, {}, 300))
            rates["secret"].append(await requests_per_second(
                secret_port, {"Authorization": f"Bearer {SECRET}"}, 300))
        a, b = statistics.median(rates["open"]), statistics.median(rates["secret"])
        print(f"control GET /stats: {a:.0f} req/s open, {b:.0f} req/s with the secret "
              f"(ratio {b / a:.3f})")
    finally:
        for runner in runners:
            await runner.cleanup()


if __name__ == "__main__":
    micro()
    uvloop.run(end_to_end())
