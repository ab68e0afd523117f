"""DTMF: digits from RFC 4733 telephone-event packets, and keys sent as events or as in-band tones.

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

import numpy as np

from mixer._dtmf_detect import dtmf_tone

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
        self.inband = 0          # of `total`, heard in the audio rather than as events
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

    def add_inband(self, key: str, duration_ms: int, rtp_timestamp: int) -> Digit:
        """A key the in-band (Goertzel) detector heard: the same digit path as RFC 4733 ones."""
        digit = Digit(key, duration_ms, rtp_timestamp)
        self.digits.append(digit)
        self.total += 1
        self.inband += 1
        return digit

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
                "inband": self.inband, "other_events": self.other_events,
                "malformed": self.malformed}


# RFC 4733 section 2.5.1: a sender's choices. An event lasts DTMF_DURATION_MS with updates every
# packetization interval, ends with DTMF_END_PACKETS copies of the final packet (E bit, same
# duration), and the next event starts no sooner than DTMF_GAP_MS later.
DTMF_DURATION_MS = 100
DTMF_GAP_MS = 60
DTMF_END_PACKETS = 3
DTMF_VOLUME = 10     # -10 dBm0
MAX_QUEUED_DIGITS = 64


class DtmfSender:
    """Turns queued keys into one telephone-event packet per tick (RFC 4733 section 2.5.1).

    `next(timestamp)` is called once per 20 ms tick with the stream's current RTP timestamp; it
    returns None when no event is being sent (the audio goes out as usual), or
    (payload, event timestamp, marker) for the packet that replaces this tick's audio: every
    packet of one event carries the event's start timestamp and a growing duration; the first
    has the marker bit.
    """

    def __init__(self, samples_per_tick: int, clock_rate: int = 8000,
                 duration_ms: int = DTMF_DURATION_MS, gap_ms: int = DTMF_GAP_MS) -> None:
        self.samples_per_tick = samples_per_tick
        self.clock_rate = clock_rate
        self.duration = duration_ms * clock_rate // 1000
        self.gap_ticks = max(1, -(-gap_ms * clock_rate // 1000 // samples_per_tick))
        self.queue: deque[int] = deque()
        self.sent_digits = 0
        self._event: int | None = None
        self._start = 0
        self._elapsed = 0
        self._ends_left = 0
        self._gap = 0

    def add(self, keys: str) -> None:
        for key in keys.upper():
            if key not in DTMF_KEYS:
                raise DtmfError(f"{key!r} is not a DTMF key (0-9, *, #, A-D)")
        if len(self.queue) + len(keys) > MAX_QUEUED_DIGITS:
            raise DtmfError(f"at most {MAX_QUEUED_DIGITS} digits may wait")
        self.queue.extend(DTMF_KEYS.index(k) for k in keys.upper())

    @property
    def active(self) -> bool:
        return self._event is not None or bool(self.queue) or self._gap > 0

    def next(self, timestamp: int) -> tuple[bytes, int, bool] | None:
        if self._event is None:
            if self._gap > 0:
                self._gap -= 1
                return None
            if not self.queue:
                return None
            self._event = self.queue.popleft()
            self._start = timestamp
            self._elapsed = 0
            self._ends_left = DTMF_END_PACKETS
        first = self._elapsed == 0
        if self._elapsed < self.duration:
            self._elapsed = min(self.duration, self._elapsed + self.samples_per_tick)
            end = False
        else:
            end = True
        if self._elapsed >= self.duration and not end and not first:
            end = True
        if end:
            self._ends_left -= 1
        payload = TelephoneEvent(self._event, end, DTMF_VOLUME, self._elapsed).serialize()
        event_timestamp = self._start
        if end and self._ends_left <= 0:
            self._event = None
            self._gap = self.gap_ticks
            self.sent_digits += 1
        return payload, event_timestamp, first


class InbandDtmfSender:
    """Keys as Q.23 dual tones in the audio itself, for legs that negotiated no telephone-event:
    `next()` gives this tick's 8 kHz samples while a key or its pause is playing, else None."""

    def __init__(self, samples_per_tick: int = 160, duration_ms: int = DTMF_DURATION_MS,
                 gap_ms: int = DTMF_GAP_MS, level_dbm0: float = -7.0) -> None:
        self.samples_per_tick = samples_per_tick
        self.tone_ticks = max(2, duration_ms * 8 // samples_per_tick)
        self.gap_ticks = max(2, -(-gap_ms * 8 // samples_per_tick))
        self.level_dbm0 = level_dbm0
        self.queue: deque[str] = deque()
        self.sent_digits = 0
        self._key: str | None = None
        self._tick = 0

    def add(self, keys: str) -> None:
        for key in keys.upper():
            if key not in DTMF_KEYS:
                raise DtmfError(f"{key!r} is not a DTMF key (0-9, *, #, A-D)")
        if len(self.queue) + len(keys) > MAX_QUEUED_DIGITS:
            raise DtmfError(f"at most {MAX_QUEUED_DIGITS} digits may wait")
        self.queue.extend(keys.upper())

    @property
    def active(self) -> bool:
        return self._key is not None or bool(self.queue)

    def next(self) -> np.ndarray | None:
        if self._key is None:
            if not self.queue:
                return None
            self._key = self.queue.popleft()
            self._tick = 0
        tick = self._tick
        self._tick += 1
        if tick < self.tone_ticks:
            samples = dtmf_tone(self._key, self.samples_per_tick, self.level_dbm0,
                                phase=tick * self.samples_per_tick)
        else:
            samples = np.zeros(self.samples_per_tick, dtype=np.int16)
        if tick >= self.tone_ticks + self.gap_ticks - 1:
            self._key = None
            self.sent_digits += 1
        return samples
