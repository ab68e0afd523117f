"""DTMF digits from RFC 4733 telephone-event packets.

A sender keeps one event's RTP timestamp for the whole key press, sends updates with a growing
duration, and ends with (usually three) packets carrying the E bit. Packets get lost and reordered,
so a digit is reported once: when the first end packet arrives, or, if every end packet is lost,
when the next event (a new timestamp) starts or the press has not been updated for a while
(`flush`). Event codes 0-15 are the DTMF keys (RFC 4733 section 3.2); other events are counted, not
reported as digits.
"""
from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

DTMF_KEYS = "0123456789*#ABCD"
_EVENT = struct.Struct("!BBH")


class DtmfError(ValueError):
    """Not a telephone-event payload."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One telephone-event payload (RFC 4733 section 2.3)."""

    event: int
    end: bool
    volume: int       # -dBm0, 0..63
    duration: int     # in RTP timestamp units

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """The first event block (a payload may carry redundant blocks only under RFC 2198)."""
        if len(payload) < 4:
            raise DtmfError(f"telephone-event payload is {len(payload)} bytes, needs 4")
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | (self.volume & 0x3F),
                           self.duration & 0xFFFF)


@dataclass(frozen=True, slots=True)
class Digit:
    key: str
    duration_ms: int
    rtp_timestamp: int


class DtmfReceiver:
    """Turns one stream's telephone-event packets into digits, each reported once."""

    def __init__(self, clock_rate: int = 8000, keep: int = 64) -> None:
        self.clock_rate = clock_rate
        self.digits: deque[Digit] = deque(maxlen=keep)  # the most recent, for stats and polling
        self.total = 0           # digits reported since the leg began (a cursor for pollers)
        self.other_events = 0
        self.malformed = 0
        self._timestamp: int | None = None   # the press in progress
        self._event = 0
        self._duration = 0
        self._updated_s = 0.0
        self._reported: set[int] = set()     # timestamps of presses already reported (recent)
        self._order: deque[int] = deque(maxlen=16)

    def on_packet(self, payload: bytes, rtp_timestamp: int, now_s: float = 0.0) -> list[Digit]:
        """Feed one telephone-event packet; returns the digits it completes (usually none or one;
        two when it starts a new press while the previous one lost all its end packets)."""
        try:
            event = TelephoneEvent.parse(payload)
        except DtmfError:
            self.malformed += 1
            return []
        if event.event >= len(DTMF_KEYS):
            self.other_events += 1
            return []
        if rtp_timestamp in self._reported:
            return []  # a retransmitted end packet or a late update of a finished press
        done = []
        if self._timestamp is not None and rtp_timestamp != self._timestamp:
            done.append(self._finish())  # a new press began: the previous one lost all its ends
        self._timestamp = rtp_timestamp
        self._updated_s = now_s
        self._event = event.event
        self._duration = max(self._duration, event.duration)
        if event.end:
            done.append(self._finish())
        return done

    def flush(self, now_s: float | None = None, quiet_s: float = 1.0) -> list[Digit]:
        """Report a press whose end packets were all lost: at once, or with `now_s` only once it
        has not been updated for `quiet_s` (a key held longer keeps sending updates)."""
        if self._timestamp is None or (now_s is not None and now_s - self._updated_s < quiet_s):
            return []
        return [self._finish()]

    def _finish(self) -> Digit:
        digit = Digit(DTMF_KEYS[self._event], round(self._duration * 1000 / self.clock_rate),
                      self._timestamp)
        self._reported.add(self._timestamp)
        self._order.append(self._timestamp)
        if len(self._reported) > self._order.maxlen:
            self._reported = set(self._order)
        self._timestamp = None
        self._duration = 0
        self.digits.append(digit)
        self.total += 1
        return digit

    def stats(self) -> dict:
        return {"digits": "".join(d.key for d in self.digits), "total": self.total,
                "other_events": self.other_events, "malformed": self.malformed}
