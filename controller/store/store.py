"""The controller's durable records, on SQLite or PostgreSQL: identities, token revocations,
CDRs, the recordings index, phone numbers.

Each method is one SQL text run unchanged on either database (`controller.store.database`).
Writes that a retry may repeat are idempotent: identities and numbers are created once
(`ON CONFLICT DO NOTHING`, the caller learns whether it was new), CDRs are keyed by call and leg
(`cdr_key`), revocations only ever move forward. A method returns once its write is committed.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from controller.store.database import Database
from controller.store.migrations import migrate

REVOKED_TOKEN_RETENTION_S = 86400  # a revoked jti is kept this long past its token's expiry


@dataclass(frozen=True)
class TokenState:
    """What the store says about a token's identity and jti."""

    tokens_not_before: float   # tokens of this identity issued earlier are revoked
    jti_revoked: bool


def cdr_key(record: dict) -> str:
    """A CDR's idempotency key: one call record per call, one leg record per participant."""
    if record["kind"] == "call":
        return f"call:{record['call_id']}"
    return f"leg:{record['call_id']}:{record.get('participant_id') or ''}"


def cdr_readers(record: dict) -> list[str]:
    """Who may read a record: its members and its identity."""
    readers = set(record.get("members") or ())
    if record.get("identity"):
        readers.add(record["identity"])
    return sorted(readers)


class Store:
    """Durable records over one `Database` (SQLite or PostgreSQL); `await open()` first."""

    def __init__(self, database: Database) -> None:
        self.db = database
        self.schema_version = 0

    @property
    def dialect(self) -> str:
        return self.db.dialect

    async def open(self) -> None:
        """Connect and bring the schema up to date (StoreUnavailable if the database does not
        answer, MigrationError if its schema disagrees with this code)."""
        await self.db.open()
        try:
            self.schema_version = await migrate(self.db)
        except BaseException:
            await self.db.close()
            raise

    async def close(self) -> None:
        await self.db.close()

    def stats(self) -> dict:
        return {"database": self.db.describe(), "dialect": self.dialect,
                "schema_version": self.schema_version, **self.db.stats()}

    # -------------------------------------------------------------------------------- identities
    async def create_identity(self, identity: str) -> bool:
        """True if created, False if it existed."""
        return await self.db.execute(
            "INSERT INTO identities (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            identity, time.time()) == 1

    async def identity_exists(self, identity: str) -> bool:
        return await self.db.fetchval("SELECT 1 FROM identities WHERE id = $1", identity) is not None

    async def token_state(self, identity: str, jti: str) -> TokenState | None:
        """The identity's revocation state for one token, or None for an unknown identity."""
        row = await self.db.fetchrow(
            "SELECT tokens_not_before, EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $2) "
            "FROM identities WHERE id = $1", identity, jti)
        return None if row is None else TokenState(float(row[0]), bool(row[1]))

    async def revoke_all(self, identity: str, not_before: float) -> bool:
        """Tokens of `identity` issued before `not_before` are revoked; False for an unknown
        identity. The time only moves forward (a controller with a late clock cannot undo)."""
        return await self.db.execute(
            "UPDATE identities SET tokens_not_before = CASE WHEN tokens_not_before > $2 "
            "THEN tokens_not_before ELSE $2 END WHERE id = $1", identity, float(not_before)) == 1

    async def revoke_token(self, identity: str, jti: str, expires_at: float) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM revoked_tokens WHERE expires_at < $1",
                             time.time() - REVOKED_TOKEN_RETENTION_S)
            await tx.execute("INSERT INTO revoked_tokens (jti, identity, expires_at) "
                             "VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING",
                             jti, identity, float(expires_at))

    # -------------------------------------------------------------------------------------- CDRs
    async def add_cdrs(self, records: list[dict]) -> None:
        """Write CDRs in one transaction, each at most once (by `cdr_key`). A record is a dict
        with kind, call_id, participant_id, identity, members, and its start and end as epoch
        seconds under `_started` / `_ended` (keys starting with `_` are not kept)."""
        if not records:
            return
        rows, readers = [], []
        for record in records:
            key = cdr_key(record)
            members = cdr_readers(record)
            body = {k: v for k, v in record.items() if not k.startswith("_")}
            rows.append((key, record["kind"], record["call_id"], record.get("participant_id"),
                         record.get("identity"), json.dumps(members), float(record["_started"]),
                         float(record["_ended"]), json.dumps(body)))
            readers.extend((key, member) for member in members)
        async with self.db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO cdrs (record_key, kind, call_id, participant_id, identity, members, "
                "started_at, ended_at, record) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                "ON CONFLICT (record_key) DO NOTHING", rows)
            if readers:
                await tx.executemany(
                    "INSERT INTO cdr_members (cdr_id, identity) SELECT id, CAST($2 AS TEXT) FROM cdrs "
                    "WHERE record_key = $1 ON CONFLICT DO NOTHING", readers)

    async def query_cdrs(self, start: float | None, end: float | None, user: str | None,
                         limit: int = 10000) -> list[dict]:
        """Records started in [start, end), oldest first; with `user`, those they may read."""
        sql = "SELECT c.record FROM cdrs c"
        where, args = [], []
        if user is not None:
            args.append(user)
            sql += f" JOIN cdr_members m ON m.cdr_id = c.id AND m.identity = ${len(args)}"
        if start is not None:
            args.append(float(start))
            where.append(f"c.started_at >= ${len(args)}")
        if end is not None:
            args.append(float(end))
            where.append(f"c.started_at < ${len(args)}")
        if where:
            sql += " WHERE " + " AND ".join(where)
        args.append(int(limit))
        sql += f" ORDER BY c.started_at, c.id LIMIT ${len(args)}"
        return [json.loads(row[0]) for row in await self.db.fetch(sql, *args)]

    async def leg_cdrs_of_call(self, call_id: str) -> list[dict]:
        return [json.loads(row[0]) for row in await self.db.fetch(
            "SELECT record FROM cdrs WHERE call_id = $1 AND kind = 'leg' ORDER BY id", call_id)]

    async def count_cdrs(self, call_id: str) -> dict[str, int]:
        """How many records of each kind the call has (a check that each was written once)."""
        return {row[0]: int(row[1]) for row in await self.db.fetch(
            "SELECT kind, COUNT(*) FROM cdrs WHERE call_id = $1 GROUP BY kind", call_id)}

    # -------------------------------------------------------------------------------- recordings
    async def add_recording(self, recording_id: str, call_id: str, path: str,
                            members: list[str], started_at: float, *, fmt: str = "wav",
                            tracks_mode: str = "mix", engine: str | None = None) -> None:
        """Index a recording the engine started: where its mix is, who may read it, and its
        format, tracks mode and engine (the one to fetch its files from)."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO recordings (id, call_id, path, members, started_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                recording_id, call_id, path, json.dumps(sorted(members)), float(started_at))
            await tx.execute(
                "INSERT INTO recording_details (id, format, tracks_mode, engine, state) "
                "VALUES ($1, $2, $3, $4, 'recording') ON CONFLICT (id) DO NOTHING",
                recording_id, fmt, tracks_mode, engine)

    async def finish_recording(self, recording_id: str, members: list[str] | None,
                               ended_at: float, duration_s: float, *, state: str = "stopped",
                               tracks: list[dict] | None = None) -> None:
        """Mark the recording finished, with how it ended and its tracks; `members` None keeps
        those recorded at its start. Idempotent (the outbox may write it twice)."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE recordings SET members = COALESCE($2, members), ended_at = $3, "
                "duration_s = $4 WHERE id = $1",
                recording_id, None if members is None else json.dumps(sorted(members)),
                float(ended_at), float(duration_s))
            await tx.execute(
                "UPDATE recording_details SET state = $2, tracks = $3 WHERE id = $1",
                recording_id, state, json.dumps(tracks or []))

    _RECORDING_SELECT = (
        "SELECT r.id, r.call_id, r.path, r.members, r.started_at, r.ended_at, r.duration_s, "
        "d.format, d.tracks_mode, d.engine, d.state, d.tracks "
        "FROM recordings r LEFT JOIN recording_details d ON d.id = r.id")
    _RECORDING_KEYS = ("id", "call_id", "path", "members", "started_at", "ended_at",
                       "duration_s", "format", "tracks_mode", "engine", "state", "tracks")

    @classmethod
    def _recording(cls, row) -> dict[str, Any]:
        result = dict(zip(cls._RECORDING_KEYS, row))
        result["members"] = json.loads(result["members"])
        result["tracks"] = json.loads(result["tracks"] or "[]")
        result["format"] = result["format"] or "wav"  # indexed before the details were kept
        result["tracks_mode"] = result["tracks_mode"] or "mix"
        result["state"] = result["state"] or ("stopped" if result["ended_at"] else "recording")
        return result

    async def get_recording(self, recording_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchrow(self._RECORDING_SELECT + " WHERE r.id = $1", recording_id)
        return None if row is None else self._recording(row)

    async def recordings_of_call(self, call_id: str) -> list[dict[str, Any]]:
        """The call's recordings with their details, oldest first (whichever controller made
        them)."""
        return [self._recording(row) for row in await self.db.fetch(
            self._RECORDING_SELECT + " WHERE r.call_id = $1 ORDER BY r.started_at, r.id", call_id)]

    async def recording_ids_of_call(self, call_id: str) -> list[str]:
        """The call's recordings, oldest first (whichever controller made them)."""
        return [row[0] for row in await self.db.fetch(
            "SELECT id FROM recordings WHERE call_id = $1 ORDER BY started_at, id", call_id)]

    # ----------------------------------------------------------------------------------- numbers
    async def add_number(self, number: str, route: dict) -> bool:
        """True if added, False if the number exists (its route is left as it was)."""
        return await self.db.execute(
            "INSERT INTO numbers (number, route, created_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (number) DO NOTHING", number, json.dumps(route), time.time()) == 1

    async def get_number(self, number: str) -> dict | None:
        """`{"number", "route", "created_at"}` or None."""
        row = await self.db.fetchrow(
            "SELECT number, route, created_at FROM numbers WHERE number = $1", number)
        return None if row is None else _number(row)

    async def list_numbers(self, limit: int = 10000) -> list[dict]:
        return [_number(row) for row in await self.db.fetch(
            "SELECT number, route, created_at FROM numbers ORDER BY number LIMIT $1", int(limit))]

    async def delete_number(self, number: str) -> bool:
        return await self.db.execute("DELETE FROM numbers WHERE number = $1", number) == 1


def _number(row) -> dict:
    return {"number": row[0], "route": json.loads(row[1]), "created_at": float(row[2])}
