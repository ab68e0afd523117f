"""The PSTN side's records, through the controller's `Store` (SQLite or PostgreSQL; tables in
migrations 3, numbers, and 4, screening lists and the PSTN call history).

One thing is added on top: the call history is written behind, in batches (every FLUSH_S, or
sooner when FLUSH_ROWS wait, and always before a history query so the reputation sees every
call): at a few hundred calls a second, one transaction per call would be most of the store's
work. A batch the store cannot take is logged and dropped: history feeds the spam score, it is
not a billing record (the CDRs, written through the outbox, are).
"""
from __future__ import annotations

import asyncio
import logging

from controller.store import Store, StoreError

log = logging.getLogger("voicemix.pstn")

FLUSH_S = 0.25
FLUSH_ROWS = 200


class PstnStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple] = []
        self._flusher: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task | None = None
        self.history_rows = 0
        self.history_dropped = 0

    async def open(self) -> None:
        """Nothing to create: the tables come with the store's migrations."""

    # numbers --------------------------------------------------------------------------------
    async def add_number(self, number: str, route: dict) -> dict | None:
        """The new record, or None when the number exists."""
        if not await self.store.add_number(number, route):
            return None
        return await self.store.get_number(number)

    async def remove_number(self, number: str) -> bool:
        return await self.store.delete_number(number)

    async def numbers(self) -> list[dict]:
        return await self.store.list_numbers()

    # screening lists ------------------------------------------------------------------------
    async def add_pattern(self, list_name: str, pattern: str, reason: str | None) -> bool:
        return await self.store.add_screening(list_name, pattern, reason)

    async def remove_pattern(self, list_name: str, pattern: str) -> bool:
        return await self.store.remove_screening(list_name, pattern)

    async def patterns(self) -> list[dict]:
        return await self.store.screening()

    # call history -----------------------------------------------------------------------------
    async def record_call(self, direction: str, caller: str | None, callee: str | None,
                          trunk: str | None, started_at: float, duration_s: float | None,
                          local_hour: int, decision: str, reason: str | None,
                          sip_code: int | None) -> None:
        self._pending.append((direction, caller, callee, trunk, started_at, duration_s,
                              local_hour, decision, reason, sip_code))
        if len(self._pending) >= FLUSH_ROWS:
            await self.flush()
        elif self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(FLUSH_S, self._flush_soon)

    def _flush_soon(self) -> None:
        self._flusher = None
        if self._pending and (self._flushing is None or self._flushing.done()):
            self._flushing = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        """Write the waiting history rows in one transaction."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        rows, self._pending = self._pending, []
        if not rows:
            return
        try:
            await self.store.add_pstn_calls(rows)
            self.history_rows += len(rows)
        except StoreError as exc:
            self.history_dropped += len(rows)
            log.warning("PSTN: %d call history rows not written: %s", len(rows), exc)

    async def caller_history(self, caller: str, since: float, short_s: float,
                             odd_hours: frozenset[int]) -> dict:
        if self._pending:
            await self.flush()
        return await self.store.caller_history(caller, since, short_s, odd_hours)
