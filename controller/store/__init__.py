"""Durable records of the controller: `Store` over SQLite (embedded default) or PostgreSQL
(`VOICEMIX_DATABASE_URL`), with versioned migrations. How to add a table: docs/controller.md,
"Storage"."""
from __future__ import annotations

from pathlib import Path

from controller.store.database import (
    Database, MigrationError, StoreConflict, StoreError, StoreUnavailable,
)
from controller.store.store import Store, TokenState, cdr_key

SQLITE_FILE = "controller.sqlite3"
POSTGRESQL_SCHEMES = ("postgresql", "postgres")

__all__ = ["Database", "MigrationError", "Store", "StoreConflict", "StoreError",
           "StoreUnavailable", "TokenState", "cdr_key", "database_for", "POSTGRESQL_SCHEMES"]


def database_for(url: str | None, data_dir: Path, pool_size: int = 10,
                 timeout_s: float = 5.0) -> Database:
    """PostgreSQL for a `postgresql://` URL; SQLite in `data_dir` when `url` is None."""
    if url is None:
        from controller.store.sqlite import SqliteDatabase
        return SqliteDatabase(data_dir / SQLITE_FILE, busy_timeout_s=timeout_s)
    scheme = url.split(":", 1)[0].lower()
    if scheme not in POSTGRESQL_SCHEMES:
        raise ValueError(f"database URL scheme {scheme!r}: only postgresql:// is supported")
    from controller.store.postgresql import PostgresDatabase  # asyncpg only when used
    return PostgresDatabase(url, pool_size=pool_size, timeout_s=timeout_s)
