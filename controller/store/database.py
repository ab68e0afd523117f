"""The SQL connection a `Store` runs its statements on: one interface, a backend per database.

Statements are written once, in PostgreSQL's style (`$1, $2` numbered parameters, `ON CONFLICT
... DO NOTHING`, `RETURNING`), and run unchanged on SQLite (3.35 or later understands all three;
`$n` is rewritten to SQLite's own `?n`). Rows come back as sequences that also answer `row["col"]`
(`sqlite3.Row`, `asyncpg.Record`).

Failures are sorted into two families the callers act on: `StoreUnavailable` (the database does
not answer: refused, reset, timed out, shutting down, locked too long; the REST API answers 503
and durable writes are queued, see `controller.outbox`) and `StoreConflict` (a constraint said
no). Anything else is a bug and propagates as it is.
"""
from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

Row = Sequence[Any]
_PARAMETER = re.compile(r"\$(\d+)")


class StoreError(Exception):
    """A store operation failed in a way the caller can act on."""


class StoreUnavailable(StoreError):
    """The database does not answer (down, unreachable, too slow): retry later."""


class StoreConflict(StoreError):
    """A uniqueness or other constraint refused the write."""


class MigrationError(StoreError):
    """The database's recorded schema and this code's migrations disagree."""


def sqlite_parameters(sql: str) -> str:
    """`$1` -> `?1`: the same numbered parameters in SQLite's spelling."""
    return _PARAMETER.sub(r"?\1", sql)


class Transaction(abc.ABC):
    """Statements inside one transaction (see `Database.transaction`)."""

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it changed."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """Run one query; all its rows."""

    @abc.abstractmethod
    async def execute_script(self, sql: str) -> None:
        """Run several `;`-separated statements without parameters (migrations)."""

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]


class Database(Transaction):
    """A connection (SQLite) or a pool of them (PostgreSQL).

    Outside `transaction()` every statement commits on its own. Reads that fail because a pooled
    connection died (the server restarted) are retried once on a fresh connection; writes are not
    (the caller decides; the store's own writes are idempotent so that it can).
    """

    dialect: str = ""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (StoreUnavailable when the database does not answer)."""

    @abc.abstractmethod
    async def close(self) -> None:
        ...

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """`async with db.transaction() as tx:` commits at the end, rolls back on an exception.
        SQLite takes the write lock at the start (BEGIN IMMEDIATE)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the data lives, for logs (no password)."""

    def stats(self) -> dict:
        return {}
