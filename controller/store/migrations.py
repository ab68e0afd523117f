"""Versioned schema migrations, applied at start and recorded in the database.

A migration is one file `migrations/NNNN_name.sql`: numbered from 1 without gaps, applied in
order, each in its own transaction together with its row in `schema_migrations` (so a failure
leaves the schema at the previous version). One SQL text serves both databases; a line that only
one of them understands ends with `--@sqlite` or `--@postgresql` and is dropped for the other.

Controllers starting together do not race: each migration runs under the database's write lock
(SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock), and re-checks under it
whether another controller applied it meanwhile. A database that records a migration under
another name than this code's (two branches that both added migration N) is refused at start
with a `MigrationError`; one that is at a newer version than this code knows is used, with a
warning (migrations are additive, so an older controller keeps working during a rolling upgrade).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from importlib import resources

from controller.store.database import Database, MigrationError

log = logging.getLogger("voicemix.store")

DIALECTS = ("sqlite", "postgresql")
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_MARKER = re.compile(r"--@(\w+)\s*$")
ADVISORY_LOCK_KEY = 0x766D_5354  # "vmST": one lock for voicemix schema changes

SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def for_dialect(self, dialect: str) -> str:
        """The SQL for one database: lines marked for the other one are left out."""
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}")
        kept = []
        for line in self.sql.splitlines():
            marker = _MARKER.search(line)
            if marker is not None:
                if marker.group(1) not in DIALECTS:
                    raise MigrationError(f"migration {self.version}: unknown marker --@{marker.group(1)}")
                if marker.group(1) != dialect:
                    continue
                line = line[:marker.start()].rstrip()
            kept.append(line)
        return "\n".join(kept)


def load_migrations() -> list[Migration]:
    """Every migration file of the package, in order; MigrationError for a gap or a duplicate."""
    found = []
    for entry in resources.files("controller.store").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match is None:
            if entry.name.endswith(".sql"):
                raise MigrationError(f"migration file {entry.name} is not named NNNN_name.sql")
            continue
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            names = [f"{m.version:04d}_{m.name}" for m in found]
            raise MigrationError(f"migrations must be numbered 1, 2, 3... without gaps or "
                                 f"duplicates; found {names}")
    return found


async def migrate(db: Database, migrations: list[Migration] | None = None) -> int:
    """Apply what is missing; returns the schema version the database is at."""
    migrations = load_migrations() if migrations is None else migrations
    version = 0
    for migration in migrations:
        async with db.transaction() as tx:
            if db.dialect == "postgresql":
                await tx.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY)
            await tx.execute(SCHEMA_MIGRATIONS)
            recorded = await tx.fetchval(
                "SELECT name FROM schema_migrations WHERE version = $1", migration.version)
            if recorded is None:
                await tx.execute_script(migration.for_dialect(db.dialect))
                await tx.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                                 "VALUES ($1, $2, $3)", migration.version, migration.name,
                                 time.time())
                log.info("store %s: applied migration %04d_%s", db.describe(), migration.version,
                         migration.name)
            elif recorded != migration.name:
                raise MigrationError(
                    f"the database records migration {migration.version} as {recorded!r}, this "
                    f"code has {migration.name!r}: two schema changes got the same number")
        version = migration.version
    newest = await db.fetchval("SELECT MAX(version) FROM schema_migrations")
    if newest is not None and newest > version:
        log.warning("store %s is at schema version %d, newer than this controller's %d",
                    db.describe(), newest, version)
        version = newest
    return version
