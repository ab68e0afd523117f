"""Graceful drain of an engine: no new conferences, the current ones until they end or a deadline.

An operator drains an engine before stopping it (SIGTERM to `voicemix engine`, or `POST /drain`):
conferences already there go on, legs may still join them, and the controller, which sees
`draining` in the engine's stats and a `drain` entry in each conference, places new calls elsewhere
and ends the calls here just before the deadline with their records. At the deadline the engine
ends whatever is left itself (legs send RTCP BYE) and remembers those conferences for a while, so a
late poll learns why they are gone (404 `conference_drained`). Draining is one way.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("voicemix.engine")

REMEMBERED = 10000  # conferences ended at a deadline that a late poll can still ask about


class Drain:
    """The drain state of one engine; `end_conference(id)` ends a conference (the engine's)."""

    def __init__(self, conferences: dict, end_conference: Callable[[str], None]) -> None:
        self._conferences = conferences
        self._end_conference = end_conference
        self.active = False
        self.deadline: float | None = None  # time.monotonic()
        self.ended: dict[str, float] = {}    # conference ended at the deadline -> when (Unix)
        self._timer: asyncio.TimerHandle | None = None
        self._complete: asyncio.Event | None = None

    def start(self, timeout_s: float) -> dict:
        """Drain with a deadline `timeout_s` from now; a later call may only bring it closer."""
        timeout_s = max(0.0, timeout_s)
        deadline = time.monotonic() + timeout_s
        if self.active and self.deadline is not None and self.deadline <= deadline:
            return self.status()
        first = not self.active
        self.active, self.deadline = True, deadline
        if self._complete is None:
            self._complete = asyncio.Event()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._deadline_reached)
        if first:
            log.info("engine draining", extra={"event": "drain_started",
                                               "conferences": len(self._conferences),
                                               "timeout_s": round(timeout_s, 3)})
        self.check()
        return self.status()

    def status(self) -> dict:
        left = max(0.0, self.deadline - time.monotonic()) if self.deadline is not None else None
        return {"draining": self.active, "conferences": len(self._conferences),
                "ends_in_s": round(left, 3) if left is not None else None}

    async def wait(self) -> None:
        """Return once draining and no conference is left."""
        if self._complete is None:
            self._complete = asyncio.Event()
        await self._complete.wait()

    def check(self) -> None:
        """Called whenever a conference ends: the drain is complete when none is left."""
        if self.active and not self._conferences and self._complete is not None \
                and not self._complete.is_set():
            self._complete.set()
            log.info("engine drained", extra={"event": "drain_finished"})

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadline_reached(self) -> None:
        self._timer = None
        ended = list(self._conferences)
        for conference_id in ended:
            self.ended[conference_id] = time.time()
            self._end_conference(conference_id)
        while len(self.ended) > REMEMBERED:
            del self.ended[next(iter(self.ended))]
        log.info("engine drain deadline: conferences ended",
                 extra={"event": "drain_deadline", "conferences_ended": len(ended)})
        self.check()
