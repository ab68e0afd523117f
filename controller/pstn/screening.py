"""Spam and robocall screening of inbound calls, before they ring anyone.

In order: the trunk's call rate (capacity: 503 with Retry-After beyond it); the allow list (an
allowed caller skips the rest); the block list (603); the caller's own rate (calls a minute from
one number: 603); the reputation score (603 at or above the threshold). Every decision, and the
reason and score behind it, goes into the call's record.

The reputation score (0..100) comes from the caller's inbound history in the store over a
window (default 24 h) and this call:
- many short calls (answered, under 10 s): +8 each, at most 40 (robocalls are hung up on fast);
- many distinct numbers called: +3 for each beyond 3, at most 30 (dialling through a range);
- calls at odd hours (local 22:00-07:00 by default): +5 each, at most 20, and +10 for this one;
- calls never answered: +2 each, at most 10;
- no caller id (anonymous): +20;
- a verified STIR/SHAKEN attestation: -30 for A, -15 for B (C, or an unverifiable claim, earns
  nothing: unverified claims are not trusted either way).
"""
from __future__ import annotations

import datetime
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from controller.pstn.stir import StirResult
from controller.pstn.store import PstnStore

SHORT_CALL_S = 10.0
TRACKED = 10000
LIST_RELOAD_S = 5.0

log = logging.getLogger(__name__)


@dataclass
class Screening:
    decision: str                  # accept / reject
    reason: str
    status: int | None = None      # the SIP status a rejected call gets
    score: int = 0
    history: dict = field(default_factory=dict)
    stir: StirResult = field(default_factory=lambda: StirResult("absent"))

    def to_json(self) -> dict:
        return {"decision": self.decision, "reason": self.reason, "score": self.score,
                "history": self.history, "stir": self.stir.to_json(),
                "attestation": self.stir.attestation}


class RateLimit:
    """`count` events per `period_s` per key, as a token bucket per key (least recently used
    keys forgotten beyond TRACKED)."""

    def __init__(self, count: float, period_s: float) -> None:
        self.rate = count / period_s
        self.burst = float(count)
        self._keys: OrderedDict[str, list[float]] = OrderedDict()

    def take(self, key: str, now: float) -> bool:
        bucket = self._keys.get(key)
        if bucket is None:
            bucket = self._keys[key] = [self.burst, now]
            if len(self._keys) > TRACKED:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
            if now > bucket[1]:     # never backwards: a late caller's older clock reading adds nothing
                bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
                bucket[1] = now
        if bucket[0] < 1.0:
            return False
        bucket[0] -= 1.0
        return True


def parse_hours(text: str) -> frozenset[int]:
    """'22-07' -> {22, 23, 0, ..., 6}; '' -> none."""
    if not text:
        return frozenset()
    start, _, end = text.partition("-")
    start_h, end_h = int(start) % 24, int(end) % 24
    hours, h = set(), start_h
    while h != end_h:
        hours.add(h)
        h = (h + 1) % 24
    return frozenset(hours)


def matches(pattern: str, caller: str | None) -> bool:
    if pattern == "anonymous":
        return caller is None
    if caller is None:
        return False
    if pattern.endswith("*"):
        return caller.startswith(pattern[:-1])
    return caller == pattern


class CallScreen:
    def __init__(self, store: PstnStore, *, caller_per_minute: float = 10.0,
                 trunk_per_second: float = 100.0, threshold: int = 70, window_h: float = 24.0,
                 odd_hours: str = "22-07", utc_offset_h: float = 0.0) -> None:
        self.store = store
        self.caller_rate = RateLimit(caller_per_minute, 60.0)
        self.trunk_rate = RateLimit(trunk_per_second, 1.0)
        self.threshold = threshold
        self.window_s = window_h * 3600
        self.odd_hours = parse_hours(odd_hours)
        self.utc_offset_h = utc_offset_h
        self.lists: dict[str, list[str]] = {"block": [], "allow": []}
        self._lists_at = 0.0
        self.counts: dict[str, int] = {}

    def local_hour(self, when: float) -> int:
        moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
        return (moment.hour + int(round(self.utc_offset_h))) % 24

    async def reload_lists(self) -> None:
        rows = await self.store.patterns()
        self.lists = {"block": [r["pattern"] for r in rows if r["list"] == "block"],
                      "allow": [r["pattern"] for r in rows if r["list"] == "allow"]}
        self._lists_at = time.monotonic()

    async def screen(self, caller: str | None, callee: str, trunk: str, stir: StirResult,
                     now: float | None = None) -> Screening:
        now = now or time.time()
        if time.monotonic() - self._lists_at > LIST_RELOAD_S:
            # one reload at a time: calls arriving meanwhile screen against the lists they have
            self._lists_at = time.monotonic()
            try:
                await self.reload_lists()
            except Exception:
                log.warning("PSTN: block/allow lists not reloaded; keeping the previous ones", exc_info=True)
        monotonic = time.monotonic()
        decision = await self._decide(caller, trunk, stir, now, monotonic)
        self.counts[decision.reason] = self.counts.get(decision.reason, 0) + 1
        return decision

    async def _decide(self, caller: str | None, trunk: str, stir: StirResult, now: float,
                      monotonic: float) -> Screening:
        if not self.trunk_rate.take(trunk, monotonic):
            return Screening("reject", "trunk_rate", 503, stir=stir)
        if any(matches(p, caller) for p in self.lists["allow"]):
            return Screening("accept", "allow_list", stir=stir)
        if any(matches(p, caller) for p in self.lists["block"]):
            return Screening("reject", "block_list", 603, stir=stir)
        if caller is not None and not self.caller_rate.take(caller, monotonic):
            return Screening("reject", "caller_rate", 603, stir=stir)
        history = {}
        score = 20 if caller is None else 0
        if caller is not None:
            history = await self.store.caller_history(caller, now - self.window_s, SHORT_CALL_S,
                                                      self.odd_hours)
            score += min(40, 8 * history["short_calls"])
            score += min(30, 3 * max(0, history["distinct_callees"] - 3))
            score += min(20, 5 * history["odd_hour_calls"])
            score += min(10, 2 * history["unanswered"])
        if self.local_hour(now) in self.odd_hours:
            score += 10
        if stir.status == "verified":
            score -= {"A": 30, "B": 15}.get(stir.attestation or "", 0)
        score = max(0, min(100, score))
        if score >= self.threshold:
            return Screening("reject", "reputation", 603, score, history, stir)
        return Screening("accept", "ok", None, score, history, stir)

    def stats(self) -> dict:
        return {"decisions": dict(self.counts), "block_list": len(self.lists["block"]),
                "allow_list": len(self.lists["allow"])}
