"""PostgreSQL through an asyncpg pool: the store that controllers on several hosts share.

asyncpg prepares each statement once per connection and caches it, so the store's small
statements cost one round trip each. A statement or a connection attempt that takes longer than
`timeout_s` counts as the database being down (StoreUnavailable, 503 at the API), so a request
never hangs on a database that went silent behind a lost network.

When the server restarts, every pooled connection is dead at once: the first failure expires them
all (asyncpg replaces them on the next acquire), and a read that failed on a dead connection is
tried once more on a fresh one.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import asyncpg.exceptions as pg

from controller.store.database import (
    Database, Row, StoreConflict, StoreError, StoreUnavailable, Transaction,
)

T = TypeVar("T")
APPLICATION_NAME = "voicemix-controller"

# SQLSTATE classes that mean "the database cannot serve now" (PostgreSQL appendix A): 08
# connection exceptions, 53 insufficient resources, 57 operator intervention (shutdown, cannot
# connect now, statement timeout), 25006 read-only transaction (a standby after a failover)
_UNAVAILABLE = (pg.PostgresConnectionError, pg.InsufficientResourcesError,
                pg.OperatorInterventionError, pg.ReadOnlySQLTransactionError, OSError,
                asyncio.TimeoutError)
_LOST = (pg.PostgresConnectionError, pg.AdminShutdownError, pg.CrashShutdownError,
         ConnectionError)


def _closed_interface(exc: BaseException) -> bool:
    """asyncpg says 'connection is closed' / 'pool is closed' with an InterfaceError (which also
    covers programming errors such as a wrong argument count: those stay bugs)."""
    return isinstance(exc, pg.InterfaceError) and "closed" in str(exc)


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, pg.IntegrityConstraintViolationError):
        return StoreConflict(str(exc))
    if isinstance(exc, _UNAVAILABLE) or _closed_interface(exc):
        reason = str(exc) or type(exc).__name__
        return StoreUnavailable(f"postgresql: {reason}")
    return exc


def _rowcount(status: str) -> int:
    """asyncpg's command status ('INSERT 0 1', 'UPDATE 3', 'CREATE TABLE') -> rows changed."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def redacted(url: str) -> str:
    """The URL without its password, for logs (and without anything after the host when the URL
    does not parse: better too little in a log line than a secret)."""
    try:
        parts = urlsplit(url)
        password, host, port = parts.password, parts.hostname, parts.port
    except ValueError:  # e.g. an unclosed IPv6 bracket, a port out of range
        return url.split("://", 1)[0] + "://(unparseable)"
    if password is None:
        return url
    netloc = f"[{host}]" if host and ":" in host else (host or "")
    netloc = f"{parts.username or ''}:***@{netloc}"
    if port:
        netloc += f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class _PgStatements(Transaction):
    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def _translated(self, operation: Awaitable[T]) -> T:
        try:
            return await operation
        except Exception as exc:
            error = _translate(exc)
            if error is exc:
                raise
            raise error from exc

    async def execute(self, sql: str, *args: Any) -> int:
        return _rowcount(await self._translated(self._connection.execute(sql, *args)))

    async def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None:
        await self._translated(self._connection.executemany(sql, rows))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._translated(self._connection.fetch(sql, *args))

    async def execute_script(self, sql: str) -> None:
        await self._translated(self._connection.execute(sql))  # simple protocol: many statements


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str, pool_size: int = 10, timeout_s: float = 5.0) -> None:
        self.url = url
        self.pool_size = pool_size
        self.timeout_s = timeout_s
        self._pool: asyncpg.Pool | None = None
        self.statements = 0
        self.unavailable = 0
        self.retried = 0

    def describe(self) -> str:
        return redacted(self.url)

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.pool_size, timeout=self.timeout_s,
                command_timeout=self.timeout_s, max_inactive_connection_lifetime=300.0,
                server_settings={"application_name": APPLICATION_NAME})
        except Exception as exc:
            error = _translate(exc)
            if error is exc:
                raise
            raise error from exc

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeout_s)
            except (asyncio.TimeoutError, *_UNAVAILABLE):
                pool.terminate()

    async def _run(self, operation: Callable[[_PgStatements], Awaitable[T]], *, retry: bool) -> T:
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is closed")
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            self.statements += 1
            try:
                async with self._pool.acquire(timeout=self.timeout_s) as connection:
                    return await operation(_PgStatements(connection))
            except StoreUnavailable as exc:
                self.unavailable += 1
                await self._pool.expire_connections()
                if attempt + 1 < attempts and isinstance(exc.__cause__, _LOST):
                    self.retried += 1
                    continue
                raise
            except Exception as exc:  # raised by acquire() itself
                error = _translate(exc)
                if error is exc:
                    raise
                self.unavailable += 1
                await self._pool.expire_connections()
                raise error from exc
        raise AssertionError("unreachable")

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._run(lambda s: s.execute(sql, *args), retry=False)

    async def executemany(self, sql: str, rows: list[Sequence[Any]]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._run(lambda s: s.fetch(sql, *args), retry=True)

    async def execute_script(self, sql: str) -> None:
        async with self.transaction() as tx:
            await tx.execute_script(sql)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is closed")
        self.statements += 1
        try:
            async with self._pool.acquire(timeout=self.timeout_s) as connection:
                async with connection.transaction():
                    yield _PgStatements(connection)
        except Exception as exc:
            error = _translate(exc)
            if isinstance(error, StoreUnavailable):
                self.unavailable += 1
                if self._pool is not None:
                    await self._pool.expire_connections()
            if error is exc:
                raise
            raise error from exc

    def stats(self) -> dict:
        pool = self._pool
        return {"statements": self.statements, "unavailable": self.unavailable,
                "reads_retried": self.retried,
                "pool_size": pool.get_size() if pool else 0,
                "pool_idle": pool.get_idle_size() if pool else 0}
