"""Rate limits and cool-downs: the one limiter implementation of the product.

Three pieces, all on the `time.monotonic()` clock, with the time passed in by the caller (it
already has it, and tests can drive them):

- `TokenBucket`: at most `rate` events a second with `burst` in reserve (a leg's packet budget).
- `KeyedBuckets`: one `TokenBucket` per key (an address, an identity), the least recently used
  keys forgotten beyond `max_keys`, so a flood of distinct keys costs bounded memory (it can only
  make a forgotten key start again with a full bucket).
- `FailureCooldown`: `limit` failures of one key within `window_s` put the key in a cool-down of
  `cooldown_s`, during which the caller refuses it without looking at what it sent (so guessing
  a secret goes no faster than `limit` per window). Used for bad bearer tokens and control secrets.

A clock reading older than the bucket's last (two sockets' kernel arrival times, or a caller that
read the clock before awaiting) never runs a bucket backwards: it adds nothing.
"""
from __future__ import annotations

import math
from collections import OrderedDict

DEFAULT_MAX_KEYS = 65536


class TokenBucket:
    """At most `rate` events per second with `burst` (default: one second's worth) in reserve."""

    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: float, burst: float | None = None, now: float = 0.0) -> None:
        self.rate = float(rate)
        self.burst = float(rate if burst is None else burst)
        self.tokens = self.burst
        self.updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens are there again (0 if they are)."""
        missing = cost - self.tokens
        if missing <= 0:
            return 0.0
        return math.inf if self.rate <= 0 else missing / self.rate


class KeyedBuckets:
    """A `TokenBucket` per key, `rate`/s with `burst`; at most `max_keys` keys remembered."""

    def __init__(self, rate: float, burst: float | None = None,
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.rate = float(rate)
        self.burst = float(rate if burst is None else burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[object, TokenBucket] = OrderedDict()
        self.refused = 0

    def take(self, key, now: float, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.take(now, cost):
            return True
        self.refused += 1
        return False

    def retry_after(self, key, cost: float = 1.0) -> float:
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.retry_after(cost)

    def __len__(self) -> int:
        return len(self._buckets)


class FailureCooldown:
    """`limit` failures of a key within `window_s` -> the key is refused for `cooldown_s`."""

    def __init__(self, limit: int, window_s: float, cooldown_s: float,
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.limit = limit
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self.max_keys = max_keys
        # key -> [failures in the current window, window start, cooling down until]
        self._keys: OrderedDict[object, list[float]] = OrderedDict()
        self.cooldowns = 0

    def blocked_for(self, key, now: float) -> float:
        """Seconds the key's cool-down still lasts (0: not cooling down)."""
        entry = self._keys.get(key)
        if entry is None or entry[2] <= now:
            return 0.0
        return entry[2] - now

    def failure(self, key, now: float) -> bool:
        """Count one failure; True when it starts a cool-down."""
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = [0.0, now, 0.0]
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        if now - entry[1] >= self.window_s:
            entry[0], entry[1] = 0.0, now
        entry[0] += 1
        if entry[0] >= self.limit and entry[2] <= now:
            entry[2] = now + self.cooldown_s
            entry[0], entry[1] = 0.0, now
            self.cooldowns += 1
            return True
        return False

    def success(self, key) -> None:
        """A key that got it right starts counting afresh (a cool-down it is in still runs)."""
        entry = self._keys.get(key)
        if entry is not None and entry[2] == 0.0:
            del self._keys[key]
        elif entry is not None:
            entry[0] = 0.0

    def cooling(self, now: float) -> int:
        """Keys in a cool-down now."""
        return sum(1 for entry in self._keys.values() if entry[2] > now)
