"""SQLite behind one worker thread: the embedded default (`<data dir>/controller.sqlite3`).

Every statement runs on one dedicated thread that owns the connection, so the event loop never
waits on the disk (the statements are small, but an fsync can take milliseconds). An asyncio lock
keeps a transaction's statements together: nothing else runs on the connection between its BEGIN
and COMMIT. WAL mode lets readers in other processes (a second controller on the same data
directory, `sqlite3` at the shell) read while this one writes; `busy_timeout` makes a writer wait
for another process's write instead of failing at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from mixer.datadir import private_directory
from controller.store.database import (
    Database, Row, StoreConflict, StoreUnavailable, Transaction, sqlite_parameters,
)

T = TypeVar("T")

# OperationalError messages that mean "not now" rather than "wrong SQL"
_TRANSIENT = ("locked", "busy", "disk i/o", "unable to open", "readonly", "full", "interrupted")


def _translate(exc: sqlite3.Error) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreConflict(str(exc))
    if isinstance(exc, sqlite3.OperationalError) and any(t in str(exc).lower() for t in _TRANSIENT):
        return StoreUnavailable(f"sqlite: {exc}")
    return exc


def split_script(sql: str) -> list[str]:
    """Complete statements of a script, in order (sqlite3 runs one per `execute`)."""
    statements, pending = [], ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                statements.append(pending.strip())
            pending = ""
    if pending.strip() and not all(
            not x.strip() or x.strip().startswith("--") for x in pending.splitlines()):
        raise ValueError(f"incomplete SQL statement at the end of a script: {pending.strip()[:80]}")
    return statements


class _SqliteStatements(Transaction):
    """Statements run on the worker thread; the caller holds the lock."""

    def __init__(self, database: "SqliteDatabase") -> None:
        self._database = database

    async def execute(self, sql: str, *args: Any) -> int:
        sql = sqlite_parameters(sql)
        return await self._database._call(lambda db: db.execute(sql, args).rowcount)

    async def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None:
        sql = sqlite_parameters(sql)
        await self._database._call(lambda db: db.executemany(sql, rows))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        sql = sqlite_parameters(sql)
        return await self._database._call(lambda db: db.execute(sql, args).fetchall())

    async def execute_script(self, sql: str) -> None:
        statements = split_script(sql)

        def run(db: sqlite3.Connection) -> None:
            for statement in statements:
                db.execute(statement)
        await self._database._call(run)


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: Path, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._inner = _SqliteStatements(self)
        self.statements = 0
        self.unavailable = 0

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicemix-store")

        def connect(_) -> None:
            private_directory(self.path.parent)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                 timeout=self.busy_timeout_s)
            db.row_factory = sqlite3.Row
            # switching a new file to WAL takes an exclusive lock that SQLite does not wait for
            # (no busy handler): two controllers opening one new file at once can see "locked"
            for attempt in range(50):
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or attempt == 49:
                        raise
                    time.sleep(0.02)
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            self._db = db
        await self._call(connect)

    async def close(self) -> None:
        if self._executor is None:
            return

        def disconnect(db: sqlite3.Connection | None) -> None:
            if db is not None:
                db.close()
            self._db = None
        async with self._lock:
            await self._call(disconnect)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None:
            raise StoreUnavailable("the SQLite store is closed")
        self.statements += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._db)
        except sqlite3.Error as exc:
            error = _translate(exc)
            if isinstance(error, StoreUnavailable):
                self.unavailable += 1
            if error is exc:
                raise
            raise error from exc

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            return await self._inner.execute(sql, *args)

    async def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._lock:
            return await self._inner.fetch(sql, *args)

    async def execute_script(self, sql: str) -> None:
        async with self.transaction() as tx:
            await tx.execute_script(sql)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            await self._call(lambda db: db.execute("BEGIN IMMEDIATE"))
            try:
                yield self._inner
                await self._call(lambda db: db.execute("COMMIT"))
            except BaseException:
                # a failed COMMIT leaves the transaction open; after a successful one (or none)
                # ROLLBACK just says there is no transaction
                with contextlib.suppress(sqlite3.Error, StoreUnavailable):
                    await asyncio.shield(self._call(self._rollback))
                raise

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            db.execute("ROLLBACK")

    def stats(self) -> dict:
        return {"statements": self.statements, "unavailable": self.unavailable}
