"""The controller's durable records in SQLite (WAL): identities, token revocations, CDRs, recordings.

Every statement runs on one dedicated thread that owns the connection (`Store.run`), so the event
loop never waits on the disk: the calls are small, but an fsync can take milliseconds. WAL mode lets
readers in other processes (a second controller on the same data directory, `sqlite3` at the shell)
read while this one writes.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    tokens_not_before REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cdrs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,              -- 'call' or 'leg'
    call_id TEXT NOT NULL,
    participant_id TEXT,
    identity TEXT,                   -- the leg's identity; the owner for a call record
    members TEXT NOT NULL,           -- JSON list of identities who may read this record
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    record TEXT NOT NULL             -- the whole record as JSON
);
CREATE INDEX IF NOT EXISTS cdrs_started ON cdrs (started_at);
CREATE TABLE IF NOT EXISTS cdr_members (
    cdr_id INTEGER NOT NULL,
    identity TEXT NOT NULL,
    PRIMARY KEY (identity, cdr_id)
);
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    path TEXT NOT NULL,
    members TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    duration_s REAL
);
-- what the engine says of a recording it made (the format, how it ended, each track's offset
-- and duration): one row per recording, beside `recordings` so that older stores need no change
CREATE TABLE IF NOT EXISTS recording_details (
    id TEXT PRIMARY KEY,
    format TEXT NOT NULL,
    tracks_mode TEXT NOT NULL,
    engine TEXT,
    state TEXT NOT NULL,
    tracks TEXT NOT NULL DEFAULT '[]'   -- JSON: [{participant_id, label, kind, offset_s, duration_s, file}]
);
"""


class Store:
    """SQLite behind one worker thread; `await store.method(...)` from the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicemix-store")
        self._db: sqlite3.Connection | None = None
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of this process
        db.executescript(SCHEMA)
        self._db = db

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._db)

    def close(self) -> None:
        def _close(_):
            if self._db is not None:
                self._db.close()
                self._db = None
        self._executor.submit(_close, None).result()
        self._executor.shutdown(wait=True)

    # -------------------------------------------------------------------------------- identities
    async def create_identity(self, identity: str) -> None:
        await self.run(lambda db: db.execute(
            "INSERT INTO identities (id, created_at) VALUES (?, ?)", (identity, time.time())))

    async def token_state(self, identity: str, jti: str) -> tuple[bool, float, bool] | None:
        """(identity exists, tokens_not_before, jti revoked), or None for an unknown identity."""
        def query(db: sqlite3.Connection):
            row = db.execute("SELECT tokens_not_before FROM identities WHERE id = ?",
                             (identity,)).fetchone()
            if row is None:
                return None
            revoked = db.execute("SELECT 1 FROM revoked_tokens WHERE jti = ?", (jti,)).fetchone()
            return True, row[0], revoked is not None
        return await self.run(query)

    async def revoke_all(self, identity: str, not_before: float) -> bool:
        def update(db: sqlite3.Connection) -> bool:
            cursor = db.execute("UPDATE identities SET tokens_not_before = ? WHERE id = ?",
                                (not_before, identity))
            return cursor.rowcount > 0
        return await self.run(update)

    async def revoke_token(self, identity: str, jti: str, expires_at: float) -> None:
        def insert(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (time.time() - 86400,))
            db.execute("INSERT OR IGNORE INTO revoked_tokens VALUES (?, ?, ?)",
                       (jti, identity, expires_at))
        await self.run(insert)

    async def identity_exists(self, identity: str) -> bool:
        return await self.run(lambda db: db.execute(
            "SELECT 1 FROM identities WHERE id = ?", (identity,)).fetchone() is not None)

    # -------------------------------------------------------------------------------------- CDRs
    async def add_cdrs(self, records: list[dict]) -> None:
        """Insert CDRs (dicts with kind, call_id, participant_id, identity, members, started_at,
        ended_at as epoch seconds under `_started`/`_ended`) in one transaction."""
        def insert(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            try:
                for record in records:
                    members = sorted(set(record.get("members") or []) | (
                        {record["identity"]} if record.get("identity") else set()))
                    row = {k: v for k, v in record.items() if not k.startswith("_")}
                    cursor = db.execute(
                        "INSERT INTO cdrs (kind, call_id, participant_id, identity, members, "
                        "started_at, ended_at, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (record["kind"], record["call_id"], record.get("participant_id"),
                         record.get("identity"), json.dumps(members), record["_started"],
                         record["_ended"], json.dumps(row)))
                    db.executemany("INSERT OR IGNORE INTO cdr_members VALUES (?, ?)",
                                   [(cursor.lastrowid, m) for m in members])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        await self.run(insert)

    async def query_cdrs(self, start: float | None, end: float | None, user: str | None,
                         limit: int = 10000) -> list[dict]:
        def query(db: sqlite3.Connection) -> list[dict]:
            sql = "SELECT c.record FROM cdrs c"
            where, args = [], []
            if user is not None:
                sql += " JOIN cdr_members m ON m.cdr_id = c.id AND m.identity = ?"
                args.append(user)
            if start is not None:
                where.append("c.started_at >= ?")
                args.append(start)
            if end is not None:
                where.append("c.started_at < ?")
                args.append(end)
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY c.started_at, c.id LIMIT ?"
            args.append(limit)
            return [json.loads(row[0]) for row in db.execute(sql, args)]
        return await self.run(query)

    # -------------------------------------------------------------------------------- recordings
    async def add_recording(self, recording_id: str, call_id: str, path: str,
                            members: list[str], started_at: float, *, fmt: str = "wav",
                            tracks_mode: str = "mix", engine: str | None = None) -> None:
        def insert(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            try:
                db.execute("INSERT INTO recordings (id, call_id, path, members, started_at) "
                           "VALUES (?, ?, ?, ?, ?)",
                           (recording_id, call_id, path, json.dumps(sorted(members)), started_at))
                db.execute("INSERT INTO recording_details (id, format, tracks_mode, engine, state) "
                           "VALUES (?, ?, ?, ?, 'recording')", (recording_id, fmt, tracks_mode, engine))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        await self.run(insert)

    async def finish_recording(self, recording_id: str, members: list[str], ended_at: float,
                               duration_s: float, *, state: str = "stopped",
                               tracks: list[dict] | None = None) -> None:
        def update(db: sqlite3.Connection) -> None:
            db.execute("UPDATE recordings SET members = ?, ended_at = ?, duration_s = ? WHERE id = ?",
                       (json.dumps(sorted(members)), ended_at, duration_s, recording_id))
            db.execute("UPDATE recording_details SET state = ?, tracks = ? WHERE id = ?",
                       (state, json.dumps(tracks or []), recording_id))
        await self.run(update)

    _RECORDING_COLUMNS = ("id", "call_id", "path", "members", "started_at", "ended_at",
                          "duration_s", "format", "tracks_mode", "engine", "state", "tracks")

    @classmethod
    def _recording_row(cls, row) -> dict[str, Any]:
        result = dict(zip(cls._RECORDING_COLUMNS, row))
        result["members"] = json.loads(result["members"])
        result["tracks"] = json.loads(result["tracks"] or "[]")
        result["format"] = result["format"] or "wav"  # recorded before the details were kept
        result["state"] = result["state"] or ("stopped" if result["ended_at"] else "recording")
        return result

    _RECORDING_SELECT = ("SELECT r.id, r.call_id, r.path, r.members, r.started_at, r.ended_at, "
                         "r.duration_s, d.format, d.tracks_mode, d.engine, d.state, d.tracks "
                         "FROM recordings r LEFT JOIN recording_details d ON d.id = r.id")

    async def get_recording(self, recording_id: str) -> dict[str, Any] | None:
        def query(db: sqlite3.Connection):
            row = db.execute(self._RECORDING_SELECT + " WHERE r.id = ?", (recording_id,)).fetchone()
            return None if row is None else self._recording_row(row)
        return await self.run(query)

    async def recordings_of_call(self, call_id: str) -> list[dict[str, Any]]:
        """The call's recordings with their details, oldest first."""
        def query(db: sqlite3.Connection):
            return [self._recording_row(row) for row in db.execute(
                self._RECORDING_SELECT + " WHERE r.call_id = ? ORDER BY r.started_at, r.rowid",
                (call_id,))]
        return await self.run(query)

    async def leg_cdrs_of_call(self, call_id: str) -> list[dict]:
        return await self.run(lambda db: [json.loads(row[0]) for row in db.execute(
            "SELECT record FROM cdrs WHERE call_id = ? AND kind = 'leg' ORDER BY id", (call_id,))])
