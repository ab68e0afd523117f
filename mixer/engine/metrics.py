"""The engine's Prometheus metrics, read from its objects at scrape time (no per-packet cost).

`EngineCollector` sums what the legs and conferences count (`counters()`: (family, labels, value)
rows) over the live ones plus what retired ones left in `Engine.retired`, adds `mode` and
`transport` labels, and exposes the histograms kept where the values are produced (the clock's tick
lateness and duration, the MCU's encode/decode times and jitter buffer delays). A leg kind or a
conference mode adds a family by returning another row from its `counters()`; `FAMILIES` gives it
its help text (an unknown one is exposed too, with a generic help).

The control API serves it at `GET /metrics`, after the next tick (`TickClock.after_tick`), so the
scrape runs in the idle gap between ticks.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from mixer.metrics import FixedHistogram

PREFIX = "voicemix_engine_"

# counter rows of legs and conferences: name (without the prefix and "_total") -> help
FAMILIES = {
    "packets_received": "RTP packets accepted from participants (after SRTP and parse checks)",
    "received_bytes": "bytes of accepted RTP packets",
    "packets_sent": "RTP packets sent to participants (SFU slot streams included)",
    "sent_bytes": "payload bytes of RTP packets sent",
    "packets_dropped": "datagrams dropped on arrival, by reason",
    "send_dropped": "packets the kernel refused to send (or sent on a closed socket)",
    "rtcp_nacks_received": "RTCP generic NACKs received (RFC 4585)",
    "rtcp_nacks_sent": "RTCP generic NACKs sent",
    "ssrc_changes": "times a participant's stream changed SSRC",
    "dtmf_packets": "RFC 4733 telephone-event packets received",
    "send_gaps": "outgoing streams resumed after skipped ticks (marker bit set)",
    "packets_withheld": "packets a plain leg did not send: no media had come from the offered "
                        "host or any other yet (no reflection)",
    "media_latches": "plain legs' destination moved to where media came from (symmetric RTP, "
                     "RFC 4961): a client behind NAT, or a new port of the participant's host",
    "speaker_switches": "talkers that entered the mixed (MCU) or forwarded (SFU) set",
    "dominant_speaker_switches": "changes of the SFU's dominant speaker",
    "decodes": "frames decoded by the MCU",
    "encodes": "frames encoded by the MCU, shared mix or a talker's own mix-minus",
    "stalls": "ticks that came after skipped ones (the process stalled)",
    "stale_frames": "frames too old to play after a stall, dropped by jitter buffers",
    "sfu_packets_forwarded": "packets the SFU forwarded (one per subscriber slot)",
    "sfu_packets_not_forwarded": "packets from senders not among the forwarded",
    "sfu_packets_stale": "packets older than sfu_max_packet_age_ms when read, not forwarded",
    "sfu_preroll_packets": "cached packets sent to a slot that took a new speaker",
    "sfu_nack_retransmits": "NACKed packets resent from the SFU's cache",
    "sfu_nacks_forwarded": "NACKs passed on to the sender (packet no longer cached)",
    "relay_packets": "packets a relay conference forwarded to the other leg of a 1:1 call",
    "relay_packets_not_relayed": "packets a relay conference did not forward (muted, late, duplicate)",
    "relay_nacks_forwarded": "NACKs a relay conference passed to the sender in its numbering",
    "relay_switches": "relay conferences switching between forwarding and mixing, by the state entered",
    "ice_check_errors": "ICE connectivity checks refused or ignored by WebRTC legs, by reason",
    "ice_consent_losses": "WebRTC legs that stopped sending because consent expired (RFC 7675)",
    "dtls_handshakes": "DTLS-SRTP handshakes completed by WebRTC legs",
    "webrtc_failures": "WebRTC legs that failed to connect (ICE or DTLS), by reason",
}
HISTOGRAMS = {
    "jitter_buffer_delay_seconds": "MCU jitter buffers' target playout delay, each leg sampled every 0.5 s",
    "encode_seconds": "time to encode one 20 ms frame",
    "decode_seconds": "time to decode (or conceal) one 20 ms frame",
}


class EngineCollector(Collector):
    """Metric families of one `mixer.engine.engine.Engine`, built from its objects when collected."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def describe(self) -> list:
        return []  # families are only known when collected (legs and modes come and go)

    def collect(self) -> Iterator:
        engine = self.engine
        counters: Counter[tuple[str, tuple]] = Counter(engine.retired.values)
        histograms: dict[tuple[str, tuple], FixedHistogram] = {
            key: h.copy() for key, h in engine.retired.histograms.items()}
        legs: Counter[tuple[str, str]] = Counter()
        conferences: Counter[str] = Counter()
        speakers: Counter[str] = Counter()
        groups: dict[tuple, list] = {}
        players: Counter[str] = Counter()
        services: Counter[tuple[str, str]] = Counter()
        for conference in engine.conferences.values():
            mode = conference.mode
            conferences[mode] += 1
            speakers[mode] += len(getattr(conference, "speakers", ()) or ())
            mode_label = (("mode", mode),)
            for family, extra, value in getattr(conference, "counters", list)():
                counters[(family, mode_label + extra)] += value
            for family, extra, histogram in getattr(conference, "histograms", list)():
                key = (family, mode_label + extra)
                if key in histograms:
                    histograms[key].merge(histogram)
                else:
                    histograms[key] = histogram.copy()
            for leg in conference.legs.values():
                groups.setdefault((mode, leg.transport, type(leg)), []).append(leg)
            # media services (mixer/media): forks send through a leg of their own
            players[mode] += len(getattr(conference, "players", ()) or ())
            media = getattr(conference, "media", None)
            for service in (media.services.values() if media is not None else ()):
                kind = type(service).__name__.lower()   # fork, recording
                services[(mode, kind)] += 1
                leg = getattr(service, "leg", None)
                if kind == "fork" and leg is not None:
                    groups.setdefault((mode, "fork", type(leg)), []).append(leg)
        # sum each kind of leg column by column: one tuple per leg, no per-counter dict updates
        for (mode, transport, kind), members in groups.items():
            legs[(mode, transport)] += len(members)
            labels = (("mode", mode), ("transport", transport))
            sums = map(sum, zip(*(leg.counter_values() for leg in members)))
            for (family, extra), value in zip(kind.COUNTERS, sums):
                counters[(family, labels + extra)] += value
        yield from self._state(engine, conferences, legs, speakers)
        family = GaugeMetricFamily(PREFIX + "media_services",
                                   "engine-side media services attached now (players, recordings, forks)",
                                   labels=["mode", "service"])
        for mode in sorted(players):
            family.add_metric([mode, "player"], players[mode])
        for (mode, kind), count in sorted(services.items()):
            family.add_metric([mode, kind], count)
        yield family
        yield from _counter_families(counters)
        clock = engine.clock
        yield _histogram(PREFIX + "tick_lateness_seconds",
                         "how late each 20 ms tick started after its deadline",
                         [((), clock.lateness_seconds)])
        yield _histogram(PREFIX + "tick_duration_seconds",
                         "time each tick's work took (every conference's mixing or forwarding)",
                         [((), clock.duration_seconds)])
        by_family: dict[str, list] = {}
        for (family, labels), histogram in sorted(histograms.items()):
            by_family.setdefault(family, []).append((labels, histogram))
        for family, rows in by_family.items():
            yield _histogram(PREFIX + family, HISTOGRAMS.get(family, family.replace("_", " ")), rows)

    @staticmethod
    def _state(engine, conferences: Counter, legs: Counter, speakers: Counter) -> Iterator:
        family = GaugeMetricFamily(PREFIX + "conferences", "conferences hosted now", labels=["mode"])
        for mode in sorted(set(conferences) | set(engine.conferences_created)):
            family.add_metric([mode], conferences[mode])
        yield family
        family = GaugeMetricFamily(PREFIX + "legs", "participants' media legs now",
                                   labels=["mode", "transport"])
        for (mode, transport) in sorted(set(legs) | set(engine.legs_joined)):
            family.add_metric([mode, transport], legs[(mode, transport)])
        yield family
        family = GaugeMetricFamily(PREFIX + "speakers", "talkers mixed or forwarded now",
                                   labels=["mode"])
        for mode in sorted(set(conferences) | set(engine.conferences_created)):
            family.add_metric([mode], speakers[mode])
        yield family
        family = CounterMetricFamily(PREFIX + "conferences_created", "conferences created",
                                     labels=["mode"])
        for mode, count in sorted(engine.conferences_created.items()):
            family.add_metric([mode], count)
        yield family
        family = CounterMetricFamily(PREFIX + "legs_joined", "legs added to conferences",
                                     labels=["mode", "transport"])
        for (mode, transport), count in sorted(engine.legs_joined.items()):
            family.add_metric([mode, transport], count)
        yield family
        yield GaugeMetricFamily(PREFIX + "ports_in_use", "media UDP ports held by legs",
                                value=engine.ports.in_use)
        yield GaugeMetricFamily(PREFIX + "draining",
                                "1 while draining (no new conferences), else 0",
                                value=1 if engine.draining else 0)
        family = CounterMetricFamily(PREFIX + "control_refusals",
                                     "control API requests refused: missing or wrong secret, "
                                     "or an address cooling down after repeated failures",
                                     labels=["reason"])
        for reason in ("missing", "wrong", "cooldown"):
            family.add_metric([reason], engine.control_refusals.get(reason, 0))
        yield family
        yield CounterMetricFamily(PREFIX + "ticks", "20 ms ticks run", value=engine.clock.ticks)
        yield CounterMetricFamily(PREFIX + "ticks_skipped",
                                  "ticks skipped because the loop fell more than 3 behind",
                                  value=engine.clock.skipped)
        if engine.started_at is not None:
            yield GaugeMetricFamily(PREFIX + "start_time_seconds",
                                    "when the engine started (Unix time)", value=engine.started_at)


def _counter_families(counters: Counter) -> Iterator:
    by_family: dict[str, list] = {}
    for (family, labels), value in counters.items():
        by_family.setdefault(family, []).append((labels, value))
    for family in sorted(by_family):
        rows = sorted(by_family[family])
        names = [name for name, _ in rows[0][0]]
        metric = CounterMetricFamily(PREFIX + family, FAMILIES.get(family, family.replace("_", " ")),
                                     labels=names)
        for labels, value in rows:
            metric.add_metric([v for _, v in labels], value)
        yield metric


def _histogram(name: str, documentation: str, rows: list) -> HistogramMetricFamily:
    names = [label for label, _ in rows[0][0]] if rows else []
    family = HistogramMetricFamily(name, documentation, labels=names)
    for labels, histogram in rows:
        family.add_metric([v for _, v in labels], histogram.cumulative(), sum_value=histogram.total)
    return family


def engine_registry(engine, process: bool = True) -> CollectorRegistry:
    """A registry with the engine's families (and this process' CPU, memory and fds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine))
    if process:
        ProcessCollector(registry=registry)
    return registry


