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

Wall-clock rates move with whatever else runs on the machine; CPU per operation (this process
plus the PostgreSQL server's processes, from /proc) much less: read those first on a busy machine.
The stores take turns round by round, and each row is the median of the rounds.

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
BLOCK = 50
WARM_CALLS = 30
CLOCK_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of this process (controller, client, SQLite's thread) plus the PostgreSQL
    server's processes (the postmaster, its live backends, and those that exited), so both
    stores are charged for all the work they cause, whatever else loads the machine."""

    def __init__(self, postmaster_pid: int | None) -> None:
        self.postmaster_pid = postmaster_pid

    def _server_s(self) -> float:
        if self.postmaster_pid is None:
            return 0.0
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            pid, ppid = int(stat.parent.name), int(fields[1])
            if pid == self.postmaster_pid:  # utime, stime, and its waited-for children's
                total += sum(int(x) for x in fields[11:15]) * CLOCK_TICK_S
            elif ppid == self.postmaster_pid:
                total += (int(fields[11]) + int(fields[12])) * CLOCK_TICK_S
        return total

    def now(self) -> float:
        return time.process_time() + self._server_s()


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def revocation_check(url: str | None, data: Path, checks: int) -> dict[str, float]:
    """Median us of: the JWT alone, verify() asking the store, verify() with a warm cache. The
    three take turns in blocks of BLOCK checks (background load hits them alike; a block is
    long enough that what the one before left in the CPU caches hardly counts, which matters
    when a PostgreSQL backend shares the core)."""
    store = Store(database_for(url, data))
    await store.open()
    await store.create_identity("alice")
    uncached = TokenAuthority("s" * 32, store, revocation_cache_s=0.0)
    cached = TokenAuthority("s" * 32, store, revocation_cache_s=3600.0)
    token, _, _ = uncached.issue("alice", ["voip"], 3600)
    samples: dict[str, list[float]] = {"jwt": [], "store": [], "cached": []}
    try:
        await uncached.verify(token)  # warm: statement prepared
        await cached.verify(token)  # cache filled
        async def jwt_alone(token: str) -> None:
            jwt.decode(token, "s" * 32, algorithms=[ALGORITHM], issuer=ISSUER, leeway=5,
                       options={"require": ["exp", "iat", "sub", "jti", "iss"]})
        contenders = [("jwt", jwt_alone), ("cached", cached.verify), ("store", uncached.verify)]
        for _ in range(max(checks // BLOCK, 1)):
            for label, check in contenders:
                for _ in range(BLOCK):
                    began = time.perf_counter()
                    await check(token)
                    samples[label].append(time.perf_counter() - began)
    finally:
        await store.close()
    return {label: median_us(values) for label, values in samples.items()}


async def requests_per_s(url: str | None, data: Path, requests: int, cache_s: float,
                         cpu: CpuMeter, concurrency: int = 8) -> tuple[float, float]:
    """(requests/s, CPU us per request)."""
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
        began, cpu_began = time.perf_counter(), cpu.now()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu_s = time.perf_counter() - began, cpu.now() - cpu_began
        return requests / elapsed, cpu_s / requests * 1e6


async def call_setups_per_s(url: str | None, data: Path, calls: int, concurrency: int,
                            cpu: CpuMeter) -> tuple[float, float, float]:
    """(calls/s, p50 setup ms, CPU ms per call): create + 2 joins, then hang-up (CDRs
    committed)."""
    offers = [offer_audio(local_ip="127.0.0.1", local_port=20000 + 2 * i, codecs=("opus",),
                          rtcp_mux=True)[0] for i in range(2 * (calls + WARM_CALLS))]
    async with running_controller(data, database_url=url, monitor_interval_s=5.0) as c:
        alice, bob = await c.user("alice"), await c.user("bob")
        http = c.client
        latencies: list[float] = []
        queue = list(range(calls + WARM_CALLS))

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
        warm = [WARM_CALLS]  # the pool grows to its working size meanwhile
        await asyncio.gather(*(worker(warm) for _ in range(concurrency)))
        latencies.clear()
        count = [calls]
        began, cpu_began = time.perf_counter(), cpu.now()
        await asyncio.gather(*(worker(count) for _ in range(concurrency)))
        elapsed, cpu_s = time.perf_counter() - began, cpu.now() - cpu_began
        written = len(await c.server.store.query_cdrs(None, None, None))
        assert written == 3 * (calls + WARM_CALLS), written  # every hang-up's CDRs, once
        return calls / elapsed, statistics.median(latencies) * 1000, cpu_s / calls * 1000


async def measure(url_for, quick: bool, cpu: CpuMeter) -> dict:
    """One round of every measurement on one store."""
    checks, requests, calls = (500, 500, 40) if quick else (2000, 1500, 100)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out["check"] = await revocation_check(url_for("check"), tmp / "check", checks)
        out["rps_cached"] = await requests_per_s(url_for("rps1"), tmp / "rps1", requests, 1.0, cpu)
        out["rps_uncached"] = await requests_per_s(url_for("rps0"), tmp / "rps0", requests, 0.0,
                                                   cpu)
        out["setup_8"] = await call_setups_per_s(url_for("setup8"), tmp / "setup8", calls, 8, cpu)
        out["setup_1"] = await call_setups_per_s(url_for("setup1"), tmp / "setup1", calls // 2, 1,
                                                 cpu)
    return out


def median_of(rounds: list[dict], *path) -> float:
    values = []
    for result in rounds:
        for key in path:
            result = result[key]
        values.append(result)
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    parser.add_argument("--cpu", type=int, default=0, help="the core everything runs on")
    parser.add_argument("--synchronous-commit", choices=("on", "off"), default="on",
                        help="PostgreSQL's: off answers a commit before its WAL reaches the disk "
                             "(SQLite's WAL with synchronous=NORMAL does not fsync per commit "
                             "either)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})  # before PostgreSQL starts: it inherits the core
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        print("PostgreSQL is not installed (Debian package postgresql)")
        return 2
    rounds: dict[str, list[dict]] = {store: [] for store in STORES}
    with tempfile.TemporaryDirectory() as tmp:  # the first controller in a process runs slower
        uvloop.run(requests_per_s(None, Path(tmp), 300, 1.0, CpuMeter(None)))
    with PostgresServer(bin_dir, durable=True) as server:
        names = iter(range(10000))
        urls = {"sqlite": lambda _tag: None,
                "postgresql": lambda tag: server.create_database(f"bench_{tag}_{next(names)}")
                + f"?synchronous_commit={args.synchronous_commit}"}
        meters = {"sqlite": CpuMeter(None), "postgresql": CpuMeter(server.process.pid)}
        for _ in range(args.rounds):  # the stores take turns, so background load hits both
            for store in STORES:
                rounds[store].append(uvloop.run(measure(urls[store], args.quick, meters[store])))
    load = os.getloadavg()[0]
    print(f"stores on one core (cpu {args.cpu}; PostgreSQL {bin_dir.parent.name}, fsync on, "
          f"synchronous_commit {args.synchronous_commit}); medians of {args.rounds} rounds; load "
          f"average {load:.1f} at the end")
    print(f"{'':38s}{'sqlite':>12s}{'postgresql':>12s}{'pg/sqlite':>11s}")

    def row(label: str, *path, fmt: str = "{:10.1f}", minus: tuple | None = None) -> tuple:
        a, b = (median_of(rounds[store], *path) for store in STORES)
        if minus is not None:
            a -= median_of(rounds["sqlite"], *minus)
            b -= median_of(rounds["postgresql"], *minus)
        print(f"  {label:36s}{fmt.format(a)}  {fmt.format(b)}{b / a:9.2f}x")
        return a, b
    row("token check, JWT alone (us)", "check", "jwt")
    row("token check + store query (us)", "check", "store")
    row("token check + warm cache (us)", "check", "cached")
    row("  added by the store query (us)", "check", "store", minus=("check", "jwt"))
    row("  added with the cache (us)", "check", "cached", minus=("check", "jwt"))
    row("auth'd requests/s, cache 1 s", "rps_cached", 0, fmt="{:10.0f}")
    row("  CPU per request (us)", "rps_cached", 1, fmt="{:10.0f}")
    row("auth'd requests/s, cache off", "rps_uncached", 0, fmt="{:10.0f}")
    row("  CPU per request (us)", "rps_uncached", 1, fmt="{:10.0f}")
    setup = row("call setups/s, 8 concurrent", "setup_8", 0)
    setup_cpu = row("  CPU per call (ms)", "setup_8", 2, fmt="{:10.2f}")
    row("call setups/s, one at a time", "setup_1", 0)
    row("  setup p50 one at a time (ms)", "setup_1", 1, fmt="{:10.2f}")
    row("  CPU per call (ms)", "setup_1", 2, fmt="{:10.2f}")
    ratio = setup[0] / setup[1]  # time per setup, PostgreSQL over SQLite
    cpu_ratio = setup_cpu[1] / setup_cpu[0]
    print(f"call setup (8 concurrent, with hang-up and CDRs) on PostgreSQL takes {ratio:.2f}x "
          f"SQLite's wall time and {cpu_ratio:.2f}x its CPU (target: within 1.5x: "
          f"{'met' if max(ratio, cpu_ratio) <= 1.5 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
