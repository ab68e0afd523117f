"""Call setup through the signaling controller: latency p50/p99 and calls set up per second.

One call setup = POST /v1/calls + two POST .../participants with real SDP offers (Opus, rtcp-mux,
RFC 6464 level extension), each answered by the in-process engine (a UDP port pair bound per leg).
Measured with an async httpx client over HTTPS (keep-alive) against `ControllerServer`, with the
whole process (client, controller, engine) pinned to one core. The baseline, measured in the same
run, is the same three operations on the engine directly (no HTTP, TLS, auth, registry): the ratio
is what the controller costs on top of the media engine.

    python bench/controller_setup.py            # ~30 s
    python bench/controller_setup.py --calls 100
"""
from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import uvloop

from controller.testing import running_controller
from mixer.engine.engine import Engine
from mixer.sdp import offer_audio


def offers(count: int) -> list[str]:
    return [offer_audio(local_ip="127.0.0.1", local_port=20000 + 2 * (i % 10000), codecs=("opus",),
                        rtcp_mux=True, audio_level_ext_id=1)[0] for i in range(count)]


def percentiles(samples_ms: list[float]) -> str:
    p = np.percentile(samples_ms, [50, 99])
    return f"p50 {p[0]:7.2f} ms   p99 {p[1]:7.2f} ms"


async def engine_direct(calls: int, sdp: list[str]) -> tuple[list[float], float]:
    engine = Engine()
    engine.start()
    latencies = []
    began_all = time.perf_counter()
    try:
        for i in range(calls):
            began = time.perf_counter()
            conference = engine.create_conference("mcu")["id"]
            await engine.add_leg(conference, sdp[2 * i], "a")
            await engine.add_leg(conference, sdp[2 * i + 1], "b")
            latencies.append((time.perf_counter() - began) * 1000)
            engine.delete_conference(conference)
        elapsed = time.perf_counter() - began_all
    finally:
        engine.stop()
    return latencies, calls / elapsed


async def through_controller(calls: int, concurrency: int, sdp: list[str]) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as data:
        async with running_controller(Path(data), monitor_interval_s=5.0) as c:
            alice, bob = await c.user("alice"), await c.user("bob")
            http = c.client
            latencies: list[float] = []
            queue = list(range(calls))

            async def worker() -> None:
                while queue:
                    i = queue.pop()
                    began = time.perf_counter()
                    call = (await http.post("/v1/calls", json={"mode": "mcu", "invite": ["bob"]},
                                            headers=alice)).json()
                    path = f"/v1/calls/{call['id']}/participants"
                    first = await http.post(path, json={"sdp": sdp[2 * i]}, headers=alice)
                    second = await http.post(path, json={"sdp": sdp[2 * i + 1]}, headers=bob)
                    latencies.append((time.perf_counter() - began) * 1000)
                    assert first.status_code == second.status_code == 201, second.text
                    # hang up at once: live calls would make the engine's ticks, not the
                    # controller, the growing cost of a long run
                    assert (await http.delete(f"/v1/calls/{call['id']}", headers=alice)).status_code == 204

            # warm up the connection pool, TLS sessions and code paths
            warm = list(range(min(10, calls)))
            queue, rest = warm, queue
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            latencies.clear()
            queue = rest
            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - began
            return latencies, len(latencies) / elapsed


async def main(calls: int, concurrency: int) -> None:
    sdp = offers(2 * calls)
    direct, direct_rate = await engine_direct(calls, sdp)
    sequential, seq_rate = await through_controller(calls, 1, sdp)
    parallel, par_rate = await through_controller(calls, concurrency, sdp)
    print(f"call setup = create + 2 joins with real SDP offers; {calls} calls; one core "
          f"(client, controller and engine share it)")
    print("  (rates are whole cycles per second: setup, then hang-up with its CDRs)")
    print(f"  engine directly (baseline)        {percentiles(direct)}   {direct_rate:8.0f} calls/s")
    print(f"  controller HTTPS, 1 at a time     {percentiles(sequential)}   {seq_rate:8.0f} calls/s")
    print(f"  controller HTTPS, {concurrency:2d} concurrent   {percentiles(parallel)}   "
          f"{par_rate:8.0f} calls/s")
    print(f"  ratio controller/engine p50 latency: {np.median(sequential) / np.median(direct):.1f}x; "
          f"throughput {par_rate / direct_rate:.2f} of the engine-direct rate")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cpu", type=int, default=0, help="core to pin to")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    uvloop.run(main(args.calls, args.concurrency))
