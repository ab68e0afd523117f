"""What the Prometheus collectors need below the process layer: fixed-bucket histograms and
counters that outlive the objects that counted them.

Nothing here touches a packet. A `FixedHistogram` is observed where the value is produced (once per
tick, once per encode, once per leg every half second); the collectors of `mixer/engine/metrics.py`
and `controller/metrics.py` read it, and every object's plain counters, only when scraped.

`exposition()` and `serve_metrics()` are shared by every process that serves metrics (engine,
controller, TURN); `serve_metrics` is the one piece here that does I/O, a listener on the caller's
event loop.

Counters of objects that go away (a leg that left, a conference that ended) are added into a
`RetiredCounters` when they go, so that a scrape, which sums what is alive plus what retired, never
sees a counter go down (Prometheus would take that for a restart).
"""
from __future__ import annotations

import ipaddress
import logging
from bisect import bisect_left
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, generate_latest

log = logging.getLogger("voicemix.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format

# Bucket bounds (seconds) for the engine's timing histograms.
TICK_LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
JITTER_DELAY_BUCKETS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.16, 0.2, 0.3, 0.5)
CODEC_TIME_BUCKETS = (0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002)


class FixedHistogram:
    """Counts of observations per bucket (`value <= bound`, Prometheus' `le`), their sum and count.

    One `bisect` and two additions per observation; `merge` adds another histogram with the same
    bounds (a conference's, when it ends, into the engine's)."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def merge(self, other: FixedHistogram) -> None:
        if other.bounds != self.bounds:
            raise ValueError("histograms with different buckets")
        for index, value in enumerate(other.counts):
            self.counts[index] += value
        self.total += other.total
        self.count += other.count

    def copy(self) -> FixedHistogram:
        result = FixedHistogram(self.bounds)
        result.merge(self)
        return result

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, cumulative count)] ending with ("+Inf", count), as Prometheus exposes buckets."""
        result, running = [], 0
        for bound, value in zip((*self.bounds, float("inf")), self.counts):
            running += value
            result.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return result

    def stats(self) -> dict:
        return {"buckets": dict(self.cumulative()), "sum": round(self.total, 6), "count": self.count}


class RetiredCounters:
    """Counters of objects that are gone, keyed by (family, labels); what a scrape adds to the sum
    over live objects."""

    def __init__(self) -> None:
        self.values: Counter[tuple[str, tuple]] = Counter()
        self.histograms: dict[tuple[str, tuple], FixedHistogram] = {}

    def add(self, samples: Iterable[tuple[str, tuple, float]]) -> None:
        for family, labels, value in samples:
            self.values[(family, labels)] += value

    def add_histogram(self, family: str, labels: tuple, histogram: FixedHistogram) -> None:
        mine = self.histograms.get((family, labels))
        if mine is None:
            self.histograms[(family, labels)] = histogram.copy()
        else:
            mine.merge(histogram)


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(registry)


async def serve_metrics(text: Callable[[], Awaitable[bytes]], address: str):
    """Serve `GET /metrics` (the bytes `text()` gives) without authentication on HOST:PORT, on
    this event loop (never a thread: collectors read objects the loop changes). Returns the
    runner (`cleanup()` stops it) and the bound port. A non-loopback address is logged."""
    from aiohttp import web  # only the processes that serve metrics need it

    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning("metrics listener on %s: not loopback, and it has no authentication", address)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=await text(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, int(port))
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    log.info("metrics listener started: http://%s:%d/metrics", host, bound)
    return runner, bound
