"""Call detail records: one per leg when it leaves, one per call when it ends.

Jitter mean/max need more than the engine's last value, so `LegSamples` accumulates the engine's
RFC 3550 interarrival jitter of each leg every time the call monitor polls; the record itself is
built from the leg's final stats, read from the engine just before the leg is removed. When the
engine cannot answer any more (it died), the record is built from the last stats the monitor
polled instead: counters up to one monitor interval old, and the quality sampled so far.
"""
from __future__ import annotations

import csv
import datetime
import io
from dataclasses import dataclass

from controller import emodel


def iso(epoch_s: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> float:
    """ISO 8601 (a trailing Z or an offset; naive means UTC) to epoch seconds; ValueError if not."""
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


@dataclass
class LegSamples:
    """Polled jitter of one leg (ms) over its life, and the last stats polled."""

    count: int = 0
    total: float = 0.0
    peak: float = 0.0
    last: dict | None = None

    def add(self, leg_stats: dict) -> None:
        if leg_stats:
            self.last = leg_stats
        receive = leg_stats.get("receive")
        if not receive:
            return
        jitter = float(receive.get("jitter_ms", 0.0))
        self.count += 1
        self.total += jitter
        self.peak = max(self.peak, jitter)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


def _loss_percent(leg: dict) -> tuple[float, float]:
    """(uplink loss % the engine measured, downlink loss % the client reported in RTCP)."""
    receive = leg.get("receive") or {}
    uplink = float(receive.get("loss_percent", 0.0))
    rtcp = leg.get("rtcp") or {}
    sent = leg.get("packets_out", 0)
    lost = max(int(rtcp.get("remote_cumulative_lost", 0) or 0), 0)
    downlink = 100.0 * lost / (sent + lost) if sent + lost else 0.0
    return uplink, round(downlink, 2)


def _leg_readers(call: dict, participant: dict) -> list[str]:
    """Who may read a leg's record: its identity; for a bot, who added it; else everyone in the
    call."""
    if participant.get("identity"):
        return [participant["identity"]]
    if participant.get("added_by"):
        return [participant["added_by"]]
    return sorted(call.get("members", ()))


def leg_record(call: dict, participant: dict, leg: dict, samples: LegSamples,
               ended_at: float, reason: str) -> dict:
    """The CDR of one leg from its final engine stats, or (no final stats: the engine is gone)
    from the last stats the monitor polled."""
    started_at = participant["joined_at"]
    if leg:
        samples.add(leg)
    else:
        leg = samples.last or {}
    uplink_loss, downlink_loss = _loss_percent(leg)
    rtcp = leg.get("rtcp") or {}
    rtt = rtcp.get("rtt_mean_ms")
    jitter_buffer_ms = float((leg.get("jitter_buffer") or {}).get("target_delay_ms", 0.0))
    codec = leg.get("codec") or participant.get("codec") or "unknown"
    quality = emodel.quality(codec, max(uplink_loss, downlink_loss), rtt, jitter_buffer_ms)
    return {
        "kind": "leg",
        "call_id": call["id"],
        "participant_id": participant["id"],
        "participant_kind": participant["kind"],
        "identity": participant.get("identity"),
        "members": _leg_readers(call, participant),
        "mode": call["mode"],
        "codec": codec,
        "started_at": iso(started_at),
        "ended_at": iso(ended_at),
        "duration_s": round(ended_at - started_at, 3),
        "end_reason": reason,
        "packets_in": leg.get("packets_in", 0),
        "packets_out": leg.get("packets_out", 0),
        "bytes_in": leg.get("bytes_in", 0),
        "bytes_out": leg.get("bytes_out", 0),
        "jitter_mean_ms": round(samples.mean, 3),
        "jitter_max_ms": round(samples.peak, 3),
        "loss_percent": round(max(uplink_loss, downlink_loss), 2),
        "loss_percent_uplink": uplink_loss,
        "loss_percent_downlink": downlink_loss,
        "rtt_ms": rtt,
        "jitter_buffer_ms": jitter_buffer_ms,
        **quality,
        **({"seconds_played": leg.get("seconds_played", 0.0)} if participant["kind"] == "bot" else {}),
        "recording_id": call.get("recording") or None,
        "_started": started_at,
        "_ended": ended_at,
    }


def call_record(call: dict, legs: list[dict], ended_at: float, reason: str,
                recordings: list[dict]) -> dict:
    """The CDR of a whole call, summing its leg records (every leg that ever joined); with its
    recordings, each with its tracks' offsets (seconds from the mix's start) for alignment."""
    started_at = call["created_at"]
    ids = [r["id"] for r in recordings]
    mos = [leg["mos"] for leg in legs if leg["participant_kind"] == "voip"]
    return {
        "kind": "call",
        "call_id": call["id"],
        "participant_id": None,
        "participant_kind": None,
        "identity": call["owner"],
        "members": sorted(call.get("members", ())),
        "mode": call["mode"],
        "type": call.get("type"),
        "codec": ",".join(sorted({leg["codec"] for leg in legs})) or None,
        "started_at": iso(started_at),
        "ended_at": iso(ended_at),
        "duration_s": round(ended_at - started_at, 3),
        "end_reason": reason,
        "participants": len(legs),
        "packets_in": sum(leg["packets_in"] for leg in legs),
        "packets_out": sum(leg["packets_out"] for leg in legs),
        "bytes_in": sum(leg["bytes_in"] for leg in legs),
        "bytes_out": sum(leg["bytes_out"] for leg in legs),
        "jitter_mean_ms": round(sum(leg["jitter_mean_ms"] for leg in legs) / len(legs), 3) if legs else 0.0,
        "jitter_max_ms": max((leg["jitter_max_ms"] for leg in legs), default=0.0),
        "loss_percent": max((leg["loss_percent"] for leg in legs), default=0.0),
        "mos": round(sum(mos) / len(mos), 2) if mos else None,
        "mos_min": min(mos) if mos else None,
        "recording_id": ids[-1] if ids else None,
        "recording_ids": ids,
        "recordings": [{"id": r["id"], "format": r["format"], "state": r["state"],
                        "duration_s": r["duration_s"],
                        "tracks": [{"participant_id": t["participant_id"], "offset_s": t["offset_s"],
                                    "duration_s": t["duration_s"]} for t in r["tracks"]]}
                       for r in recordings],
        "_started": started_at,
        "_ended": ended_at,
    }


CSV_FIELDS = ("kind", "call_id", "participant_id", "participant_kind", "identity", "mode", "type",
              "codec", "started_at", "ended_at", "duration_s", "end_reason", "participants",
              "packets_in", "packets_out", "bytes_in", "bytes_out", "jitter_mean_ms",
              "jitter_max_ms", "loss_percent", "rtt_ms", "one_way_delay_ms", "r_factor", "mos",
              "recording_id")


def to_csv(records: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: ("" if record.get(k) is None else record.get(k)) for k in CSV_FIELDS})
    return out.getvalue()
