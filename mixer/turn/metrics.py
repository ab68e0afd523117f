"""The TURN server's Prometheus metrics, read from `TurnServer` when scraped.

Every counter the server keeps (`TurnServer.counters`) is exposed: `requests_<method>`,
`responses_<method>`, `errors_<code>`, `allocations_created` and `allocations_<why ended>` have
families of their own; any other counter (a new one added to the server, too) appears as
`voicemix_turn_events_total{event="<name>"}`, so nothing counted is left out of the metrics.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "voicemix_turn_"
RELAY_TOTALS = ("to_peer_packets", "to_peer_bytes", "to_client_packets", "to_client_bytes")


class TurnCollector(Collector):
    def __init__(self, server) -> None:
        self.server = server

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator:
        server = self.server
        yield GaugeMetricFamily(PREFIX + "allocations", "TURN allocations now",
                                value=len(server.allocations))
        yield GaugeMetricFamily(PREFIX + "tcp_connections", "client TCP/TLS connections now",
                                value=len(server._links))
        yield GaugeMetricFamily(PREFIX + "relay_ports_in_use", "relayed UDP ports held",
                                value=server.relay_ports.in_use)
        relay = Counter(server.closed_totals)
        for allocation in server.allocations.values():
            stats = allocation.relay.stats()
            for name in RELAY_TOTALS:
                relay[name] += stats[name]
        packets = CounterMetricFamily(PREFIX + "relayed_packets", "packets relayed",
                                      labels=["direction"])
        octets = CounterMetricFamily(PREFIX + "relayed_bytes", "bytes relayed", labels=["direction"])
        for direction in ("to_peer", "to_client"):
            packets.add_metric([direction], relay[f"{direction}_packets"])
            octets.add_metric([direction], relay[f"{direction}_bytes"])
        yield packets
        yield octets
        families = {
            "requests": CounterMetricFamily(PREFIX + "requests", "STUN/TURN requests by method",
                                            labels=["method"]),
            "responses": CounterMetricFamily(PREFIX + "responses",
                                             "success responses by method", labels=["method"]),
            "errors": CounterMetricFamily(PREFIX + "error_responses",
                                          "error responses by STUN error code", labels=["code"]),
            "ended": CounterMetricFamily(PREFIX + "allocations_ended",
                                         "allocations that ended, by why", labels=["reason"]),
            "events": CounterMetricFamily(PREFIX + "events", "other counted events and drops",
                                          labels=["event"]),
        }
        created = 0
        auth_failures = 0
        for name, count in sorted(server.counters.items()):
            kind, _, rest = name.partition("_")
            if name == "allocations_created":
                created = count
            elif name == "auth_failures":
                auth_failures = count
            elif kind in ("requests", "responses", "errors") and rest:
                families[kind].add_metric([rest], count)
            elif kind == "allocations" and rest:
                families["ended"].add_metric([rest], count)
            else:
                families["events"].add_metric([name], count)
        yield CounterMetricFamily(PREFIX + "allocations_created", "allocations made", value=created)
        yield CounterMetricFamily(PREFIX + "auth_failures",
                                  "requests refused for credentials (401/438/441)",
                                  value=auth_failures)
        yield from families.values()
