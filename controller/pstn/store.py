"""The PSTN side's durable records, in the controller's SQLite store.

Kept in this one module on purpose: the store is being reworked into an interface with ordered
migrations (SQLite and PostgreSQL); until that lands, these tables are created here with
`CREATE TABLE IF NOT EXISTS` on the controller's store connection, and this is the single place
to turn into a migration. Tables:

- `pstn_numbers`: the resource's numbers and their routes (an IVR tree is part of its route);
- `pstn_screening`: block and allow lists (E.164 numbers or prefixes ending in `*`);
- `pstn_calls`: one row per inbound or outbound PSTN call (answered or not, screened or not):
  the history the reputation score is computed from.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time

from controller.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS pstn_numbers (
    number TEXT PRIMARY KEY,
    route TEXT NOT NULL,               -- JSON
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pstn_screening (
    list TEXT NOT NULL,                -- 'block' or 'allow'
    pattern TEXT NOT NULL,             -- E.164, or a prefix ending in '*', or 'anonymous'
    reason TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (list, pattern)
);
CREATE TABLE IF NOT EXISTS pstn_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    direction TEXT NOT NULL,           -- 'inbound' / 'outbound'
    caller TEXT,
    callee TEXT,
    trunk TEXT,
    started_at REAL NOT NULL,
    duration_s REAL,                   -- answered time; NULL when never answered
    local_hour INTEGER,                -- the hour of day it started, in the configured zone
    decision TEXT,                     -- 'accept' / 'reject'
    reason TEXT,
    sip_code INTEGER
);
CREATE INDEX IF NOT EXISTS pstn_calls_caller ON pstn_calls (caller, started_at);
"""


# call history rows are written behind, in batches: at most this long after the call, or sooner
# when this many wait, or before any history query (which then sees every call)
FLUSH_S = 0.25
FLUSH_ROWS = 200


class PstnStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple] = []
        self._flusher: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task | None = None

    async def open(self) -> None:
        await self.store.run(lambda db: db.executescript(SCHEMA))

    # numbers ------------------------------------------------------------------------------
    async def add_number(self, number: str, route: dict, created_at: float) -> bool:
        def insert(db: sqlite3.Connection) -> bool:
            try:
                db.execute("INSERT INTO pstn_numbers VALUES (?, ?, ?)",
                           (number, json.dumps(route), created_at))
                return True
            except sqlite3.IntegrityError:
                return False
        return await self.store.run(insert)

    async def remove_number(self, number: str) -> bool:
        return await self.store.run(lambda db: db.execute(
            "DELETE FROM pstn_numbers WHERE number = ?", (number,)).rowcount > 0)

    async def numbers(self) -> list[dict]:
        return await self.store.run(lambda db: [
            {"number": n, "route": json.loads(r), "created_at": c}
            for n, r, c in db.execute("SELECT number, route, created_at FROM pstn_numbers")])

    # screening lists ------------------------------------------------------------------------
    async def add_pattern(self, list_name: str, pattern: str, reason: str | None) -> bool:
        def insert(db: sqlite3.Connection) -> bool:
            try:
                db.execute("INSERT INTO pstn_screening VALUES (?, ?, ?, ?)",
                           (list_name, pattern, reason, time.time()))
                return True
            except sqlite3.IntegrityError:
                return False
        return await self.store.run(insert)

    async def remove_pattern(self, list_name: str, pattern: str) -> bool:
        return await self.store.run(lambda db: db.execute(
            "DELETE FROM pstn_screening WHERE list = ? AND pattern = ?",
            (list_name, pattern)).rowcount > 0)

    async def patterns(self) -> list[dict]:
        return await self.store.run(lambda db: [
            {"list": l, "pattern": p, "reason": r, "created_at": c}
            for l, p, r, c in db.execute(
                "SELECT list, pattern, reason, created_at FROM pstn_screening ORDER BY created_at")])

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
            loop = asyncio.get_running_loop()
            self._flusher = loop.call_later(FLUSH_S, self._flush_soon)

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

        def insert(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT INTO pstn_calls (direction, caller, callee, trunk, started_at, "
                    "duration_s, local_hour, decision, reason, sip_code) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        await self.store.run(insert)

    async def caller_history(self, caller: str, since: float, short_s: float,
                             odd_hours: frozenset[int]) -> dict:
        """What `caller` did since `since`: calls, distinct numbers called, calls answered but
        shorter than `short_s`, calls started at odd hours, calls never answered."""
        if self._pending:
            await self.flush()
        hours = ",".join(str(h) for h in sorted(odd_hours)) or "-1"

        def query(db: sqlite3.Connection) -> dict:
            row = db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT callee), "
                "SUM(CASE WHEN duration_s IS NOT NULL AND duration_s < ? THEN 1 ELSE 0 END), "
                f"SUM(CASE WHEN local_hour IN ({hours}) THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN duration_s IS NULL THEN 1 ELSE 0 END) "
                "FROM pstn_calls WHERE caller = ? AND started_at >= ? AND direction = 'inbound'",
                (short_s, caller, since)).fetchone()
            calls, distinct, short, odd, unanswered = (v or 0 for v in row)
            return {"calls": calls, "distinct_callees": distinct, "short_calls": short,
                    "odd_hour_calls": odd, "unanswered": unanswered}
        return await self.store.run(query)
