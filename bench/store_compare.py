"""The two stores side by side: SQLite (embedded) and PostgreSQL (a real server started here, with
its durable defaults: fsync on, synchronous_commit on), everything pinned to one core (this
process, and the PostgreSQL server it starts, whose backends inherit the pinning).

Per store:
- revocation check: `TokenAuthority.verify()` of a valid token, median microseconds, with the
  JWT check alone (no store) as the baseline; with the cache off (a store query per request) and
  with the default cache warm;
- authenticated REST requests/s: `GET /v1/turn/credentials` (a token check and an HMAC, no other
  store use) over HTTPS keep-alive, 8 concurrent clients, cache on (1 s) and off;
- call setups/s: create + two joins with real SDP offers, then the hang-up with its CDRs (three
  records committed before the DELETE answers), 8 concurrent and one at a time.

    python bench/store_compare.py            # ~2 min
    python bench/store_compare.py --quick    # ~30 s, noisier
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jwt
import uvloop

from controller.store import Store, database_for
from controller.testing import PostgresServer, postgres_bin_dir, running_controller
from controller.tokens import ALGORITHM, ISSUER, TokenAuthority
from mixer.sdp import offer_audio

STORES = ("sqlite", "postgresql")


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def revocation_check(url: str | None, data: Path, checks: int) -> dict[str, float]:
    store = Store(database_for(url, data))
    await store.open()
    await store.create_identity("alice")
    results = {}
    try:
        for label, ttl in (("store", 0.0), ("cached", 60.0)):
            tokens = TokenAuthority("s" * 32, store, revocation_cache_s=ttl)
            token, _, _ = tokens.issue("alice", ["voip"], 3600)
            await tokens.verify(token)  # warm: statement prepared, cache filled
            samples = []
            for _ in range(checks):
                began = time.perf_counter()
                await tokens.verify(token)
                samples.append(time.perf_counter() - began)
            results[label] = median_us(samples)
        samples = []
        for _ in range(checks):  # the JWT alone: signature, claims, no store
            began = time.perf_counter()
            jwt.decode(token, "s" * 32, algorithms=[ALGORITHM], issuer=ISSUER, leeway=5,
                       options={"require": ["exp", "iat", "sub", "jti", "iss"]})
            samples.append(time.perf_counter() - began)
        results["jwt"] = median_us(samples)
    finally:
        await store.close()
    return results


async def requests_per_s(url: str | None, data: Path, requests: int, cache_s: float,
                         concurrency: int = 8) -> float:
    async with running_controller(data, database_url=url, revocation_cache_s=cache_s) as c:
        alice = await c.user("alice")
        left = [requests]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                response = await c.client.get("/v1/turn/credentials", headers=alice)
                assert response.status_code == 200, response.text
        left[0] = 50
        await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm up
        left[0] = requests
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - began)


async def call_setups_per_s(url: str | None, data: Path, calls: int,
                            concurrency: int) -> tuple[float, float]:
    """(calls/s, p50 setup ms): create + 2 joins, then hang-up (CDRs committed)."""
    offers = [offer_audio(local_ip="127.0.0.1", local_port=20000 + 2 * i, codecs=("opus",),
                          rtcp_mux=True)[0] for i in range(2 * (calls + 10))]
    async with running_controller(data, database_url=url, monitor_interval_s=5.0) as c:
        alice, bob = await c.user("alice"), await c.user("bob")
        http = c.client
        latencies: list[float] = []
        queue = list(range(calls + 10))

        async def worker(count: list[int]) -> None:
            while count[0] > 0 and queue:
                count[0] -= 1
                i = queue.pop()
                began = time.perf_counter()
                call = (await http.post("/v1/calls", json={"mode": "mcu", "invite": ["bob"]},
                                        headers=alice)).json()
                path = f"/v1/calls/{call['id']}/participants"
                first = await http.post(path, json={"sdp": offers[2 * i]}, headers=alice)
                second = await http.post(path, json={"sdp": offers[2 * i + 1]}, headers=bob)
                latencies.append(time.perf_counter() - began)
                assert first.status_code == second.status_code == 201, second.text
                assert (await http.delete(f"/v1/calls/{call['id']}",
                                          headers=alice)).status_code == 204
        warm = [10]
        await asyncio.gather(*(worker(warm) for _ in range(concurrency)))
        latencies.clear()
        count = [calls]
        began = time.perf_counter()
        await asyncio.gather(*(worker(count) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        written = len(await c.server.store.query_cdrs(None, None, None))
        assert written == 3 * (calls + 10), written  # every hang-up's CDRs, once
        return calls / elapsed, statistics.median(latencies) * 1000


async def measure(store: str, url_for, quick: bool) -> dict:
    checks, requests, calls = (500, 500, 40) if quick else (3000, 3000, 200)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out["check"] = await revocation_check(url_for("check"), tmp / "check", checks)
        out["rps_cached"] = await requests_per_s(url_for("rps1"), tmp / "rps1", requests, 1.0)
        out["rps_uncached"] = await requests_per_s(url_for("rps0"), tmp / "rps0", requests, 0.0)
        out["setup_8"] = await call_setups_per_s(url_for("setup8"), tmp / "setup8", calls, 8)
        out["setup_1"] = await call_setups_per_s(url_for("setup1"), tmp / "setup1", calls // 2, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cpu", type=int, default=0, help="the core everything runs on")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})  # before PostgreSQL starts: it inherits the core
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        print("PostgreSQL is not installed (Debian package postgresql)")
        return 2
    results = {}
    with PostgresServer(bin_dir, durable=True) as server:
        names = iter(range(1000))
        results["sqlite"] = uvloop.run(measure("sqlite", lambda _: None, args.quick))
        results["postgresql"] = uvloop.run(measure(
            "postgresql", lambda tag: server.create_database(f"bench_{tag}_{next(names)}"),
            args.quick))
    load = os.getloadavg()[0]
    print(f"stores on one core (cpu {args.cpu}; PostgreSQL {bin_dir.parent.name}, durable "
          f"defaults); load average {load:.1f} from other work on this machine")
    print(f"{'':38s}{'sqlite':>12s}{'postgresql':>12s}{'pg/sqlite':>11s}")

    def row(label: str, a: float, b: float, unit: str, fmt: str = "{:10.1f}") -> None:
        print(f"  {label:36s}{fmt.format(a)} {unit:1s}{fmt.format(b)} {unit:1s}{b / a:9.2f}x")
    s, p = results["sqlite"], results["postgresql"]
    row("token check, JWT alone (us)", s["check"]["jwt"], p["check"]["jwt"], "")
    row("token check + store query (us)", s["check"]["store"], p["check"]["store"], "")
    row("token check + warm cache (us)", s["check"]["cached"], p["check"]["cached"], "")
    row("  added by the store query (us)", s["check"]["store"] - s["check"]["jwt"],
        p["check"]["store"] - p["check"]["jwt"], "")
    row("  added with the cache (us)", s["check"]["cached"] - s["check"]["jwt"],
        p["check"]["cached"] - p["check"]["jwt"], "")
    row("auth'd requests/s, cache 1 s", s["rps_cached"], p["rps_cached"], "", "{:10.0f}")
    row("auth'd requests/s, cache off", s["rps_uncached"], p["rps_uncached"], "", "{:10.0f}")
    row("call setups/s, 8 concurrent", s["setup_8"][0], p["setup_8"][0], "", "{:10.1f}")
    row("call setups/s, one at a time", s["setup_1"][0], p["setup_1"][0], "", "{:10.1f}")
    row("  setup p50 one at a time (ms)", s["setup_1"][1], p["setup_1"][1], "", "{:10.2f}")
    ratio = s["setup_8"][0] / p["setup_8"][0]
    print(f"target: PostgreSQL within 1.5x of SQLite on call setup -> {ratio:.2f}x slower "
          f"({'met' if ratio <= 1.5 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
