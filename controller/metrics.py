"""The controller's Prometheus metrics: `GET /metrics` (admin key) and, when
`VOICEMIX_METRICS_LISTEN` is set, the same text without authentication on a separate plain-HTTP
listener (meant for loopback, where a local Prometheus agent scrapes it).

`ControllerCollector` reads counters the controller keeps anyway (the call service's, the API's
authentication failures, responses by status) when scraped. In `voicemix serve` the registry also
holds the in-process engine's and the TURN server's collectors (added by `controller/serve.py`), so one scrape shows the whole
process.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from controller.limits import LIMITS
from mixer.metrics import CONTENT_TYPE, exposition, serve_metrics  # noqa: F401 (CONTENT_TYPE: app)

log = logging.getLogger("voicemix.controller")

PREFIX = "voicemix_controller_"
ENGINE_STATE_TIMEOUT_S = 2.0

# CallService.stats() key -> (family, help, label) for its counters by label
LABELLED = {
    "calls_by_mode": ("calls_created", "calls set up, by mode", "mode"),
    "calls_ended_by_reason": ("calls_ended", "calls ended, by reason", "reason"),
    "call_failures": ("call_setup_failures", "call set-ups refused, by the engine's error code",
                      "reason"),
    "participants_added": ("participants_added", "participants added, by kind", "kind"),
    "participant_failures": ("participant_failures",
                             "participants refused by the engine, by error code", "reason"),
}
PLAIN = {
    "calls_adopted": ("calls_adopted", "calls adopted from a dead controller (Redis registry)"),
    "events_published": ("events_published", "call events published"),
    "events_dropped": ("events_dropped", "call events dropped for slow readers"),
}


class ResponseCounter:
    """ASGI middleware counting responses by HTTP status (one increment per request)."""

    def __init__(self, app, counts: Counter) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                self.counts[message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counting_send)


class ControllerCollector(Collector):
    """Families of one controller: its call service, API counters and the engines it places on."""

    def __init__(self, service, auth_failures: Counter, responses: Counter,
                 limits_hit: Counter | None = None) -> None:
        self.service = service
        self.limits_hit = limits_hit if limits_hit is not None else Counter()
        self.auth_failures = auth_failures
        self.responses = responses
        self.engine_states: dict[str, dict | None] = {}  # refreshed before each scrape

    def describe(self) -> list:
        return []

    async def refresh(self) -> None:
        """Ask every engine for its state (concurrently, bounded): up, draining, legs."""
        async def state(name: str, engine) -> tuple[str, dict | None]:
            try:
                return name, await asyncio.wait_for(engine.stats(), ENGINE_STATE_TIMEOUT_S)
            except Exception:  # down, hung, refusing: all "not up" here
                return name, None
        self.engine_states = dict(await asyncio.gather(
            *(state(name, engine) for name, engine in self.service.engines.items())))

    def collect(self) -> Iterator:
        stats = self.service.stats()
        yield GaugeMetricFamily(PREFIX + "calls", "calls this controller monitors now",
                                value=stats["calls_local"])
        for key, (name, documentation, label) in LABELLED.items():
            family = CounterMetricFamily(PREFIX + name, documentation, labels=[label])
            for value, count in sorted(stats.get(key, {}).items()):
                family.add_metric([value], count)
            yield family
        for key, (name, documentation) in PLAIN.items():
            yield CounterMetricFamily(PREFIX + name, documentation, value=stats.get(key, 0))
        family = CounterMetricFamily(PREFIX + "token_failures",
                                     "requests refused for their credentials, by reason",
                                     labels=["reason"])
        for reason, count in sorted(self.auth_failures.items()):
            family.add_metric([reason], count)
        yield family
        family = CounterMetricFamily(PREFIX + "limits_hit",
                                     "requests refused by a rate limit, a failed-token cool-down "
                                     "or a quota (429), by limit", labels=["limit"])
        for limit in LIMITS:
            family.add_metric([limit], self.limits_hit.get(limit, 0))
        yield family
        family = CounterMetricFamily(PREFIX + "http_responses", "REST API responses by status",
                                     labels=["status"])
        for status, count in sorted(self.responses.items()):
            family.add_metric([str(status)], count)
        yield family
        up = GaugeMetricFamily(PREFIX + "engine_up", "1 if the engine answered the last scrape",
                               labels=["engine"])
        draining = GaugeMetricFamily(PREFIX + "engine_draining",
                                     "1 if the engine is draining (no new calls placed there)",
                                     labels=["engine"])
        legs = GaugeMetricFamily(PREFIX + "engine_legs", "legs on the engine", labels=["engine"])
        for name, state in sorted(self.engine_states.items()):
            up.add_metric([name], 0 if state is None else 1)
            draining.add_metric([name], 1 if state and state.get("draining") else 0)
            if state is not None:
                legs.add_metric([name], state.get("legs", 0))
        yield up
        yield draining
        yield legs


class ControllerMetrics:
    """The registry a controller serves: its own families, in-process engines', TURN's."""

    def __init__(self, service) -> None:
        self.auth_failures: Counter[str] = Counter()
        self.responses: Counter[int] = Counter()
        self.limits_hit: Counter[str] = Counter()   # requests refused by a rate limit or quota
        self.collector = ControllerCollector(service, self.auth_failures, self.responses,
                                             self.limits_hit)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        self._before: list[Callable[[], Awaitable[None]]] = []
        self._listener: web.AppRunner | None = None

    def add(self, collector: Collector, before: Callable[[], Awaitable[None]] | None = None) -> None:
        """Another in-process service's families (`voicemix serve`: the engine's, TURN's);
        `before` is awaited before each scrape (the engine's: wait for the gap after a tick)."""
        self.registry.register(collector)
        if before is not None:
            self._before.append(before)

    async def exposition(self) -> bytes:
        await self.collector.refresh()
        for before in self._before:
            await before()
        return exposition(self.registry)

    async def listen(self, address: str) -> int:
        """Serve GET /metrics without authentication on `address` (HOST:PORT); the bound port."""
        self._listener, bound = await serve_metrics(self.exposition, address)
        return bound

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.cleanup()
            self._listener = None
