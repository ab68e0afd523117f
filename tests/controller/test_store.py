"""The store's contract, run on SQLite and on a real PostgreSQL server (tests/controller/conftest.py):
migrations applied once and recorded, CDRs written once by call and leg, revocations only moving
forward, the recordings index and phone numbers, transactions whole or not at all, and the
revocation cache's bound."""
import asyncio
import json
import sqlite3

import pytest
import uvloop

from controller.store import MigrationError, Store, StoreConflict, cdr_key, database_for
from controller.store.migrations import DIALECTS, Migration, load_migrations, migrate
from controller.tokens import TokenStateCache


def run(coro):
    return uvloop.run(coro)


def open_store(database_url, tmp_path, **options) -> Store:
    return Store(database_for(database_url, tmp_path, **options))


def leg(call_id: str, participant: str, identity: str, started: float = 100.0) -> dict:
    return {"kind": "leg", "call_id": call_id, "participant_id": participant, "identity": identity,
            "members": [identity], "mos": 4.2, "_started": started, "_ended": started + 5}


def call(call_id: str, owner: str, members: list[str], started: float = 100.0) -> dict:
    return {"kind": "call", "call_id": call_id, "participant_id": None, "identity": owner,
            "members": members, "_started": started, "_ended": started + 9}


def test_migrations_are_applied_once_and_recorded(database_url, tmp_path):
    async def scenario():
        # two controllers starting at the same moment: one applies, the other finds it done
        first, second = open_store(database_url, tmp_path), open_store(database_url, tmp_path)
        await asyncio.gather(first.open(), second.open())
        expected = [(m.version, m.name) for m in load_migrations()]
        assert first.schema_version == second.schema_version == expected[-1][0]
        rows = await first.db.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [(r[0], r[1]) for r in rows] == expected
        await second.close()
        third = open_store(database_url, tmp_path)  # a restart applies nothing new
        await third.open()
        assert await third.db.fetchval("SELECT COUNT(*) FROM schema_migrations") == len(expected)
        # a database whose migration N is another change than this code's N is refused
        extra = Migration(len(expected) + 1, "sip_numbers", "CREATE TABLE extra_a (a TEXT);")
        other = Migration(len(expected) + 1, "media_tracks", "CREATE TABLE extra_b (b TEXT);")
        assert await migrate(third.db, load_migrations() + [extra]) == extra.version
        with pytest.raises(MigrationError, match="same number"):
            await migrate(third.db, load_migrations() + [other])
        # a controller older than the database's schema runs, at the database's version
        assert await migrate(third.db) == extra.version
        await first.close()
        await third.close()
    run(scenario())


@pytest.mark.store_independent
def test_migration_files_are_numbered_and_fit_both_databases():
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    sample = Migration(9, "x", "CREATE TABLE t (\n  id SERIAL,  --@postgresql\n"
                               "  id INTEGER PRIMARY KEY,  --@sqlite\n  a TEXT\n);")
    assert "SERIAL" in sample.for_dialect("postgresql") and "INTEGER" not in sample.for_dialect(
        "postgresql")
    assert "INTEGER PRIMARY KEY," in sample.for_dialect("sqlite") and "SERIAL" not in \
        sample.for_dialect("sqlite")
    with pytest.raises(MigrationError, match="unknown marker"):
        Migration(9, "x", "a TEXT --@mysql").for_dialect("sqlite")
    for migration in migrations:  # every file has a statement for each database, no stray marker
        for dialect in DIALECTS:
            assert migration.for_dialect(dialect).strip()


OLD_SQLITE_SCHEMA = """
CREATE TABLE identities (id TEXT PRIMARY KEY, created_at REAL NOT NULL,
                         tokens_not_before REAL NOT NULL DEFAULT 0);
CREATE TABLE revoked_tokens (jti TEXT PRIMARY KEY, identity TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE cdrs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, call_id TEXT NOT NULL,
                   participant_id TEXT, identity TEXT, members TEXT NOT NULL,
                   started_at REAL NOT NULL, ended_at REAL NOT NULL, record TEXT NOT NULL);
CREATE INDEX cdrs_started ON cdrs (started_at);
CREATE TABLE cdr_members (cdr_id INTEGER NOT NULL, identity TEXT NOT NULL,
                          PRIMARY KEY (identity, cdr_id));
CREATE TABLE recordings (id TEXT PRIMARY KEY, call_id TEXT NOT NULL, path TEXT NOT NULL,
                         members TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL,
                         duration_s REAL);
"""


@pytest.mark.store_independent  # a SQLite file's history
def test_a_sqlite_file_from_before_migrations_is_upgraded_in_place(tmp_path):
    path = tmp_path / "controller.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(OLD_SQLITE_SCHEMA)
    old.execute("INSERT INTO identities VALUES ('alice', 1.0, 0)")
    for _ in range(2):  # the same leg twice: what the old code could not prevent
        old.execute("INSERT INTO cdrs (kind, call_id, participant_id, identity, members, started_at,"
                    " ended_at, record) VALUES ('leg', 'c0', 'p0', 'alice', '[\"alice\"]', 5, 6, "
                    "'{\"kind\": \"leg\"}')")
    old.commit()
    old.close()

    async def scenario():
        store = open_store(None, tmp_path)
        await store.open()
        assert await store.identity_exists("alice")
        assert await store.count_cdrs("c0") == {"leg": 2}  # kept, the second under its own key
        await store.add_cdrs([leg("c0", "p0", "alice", 5.0)])
        assert await store.count_cdrs("c0") == {"leg": 2}  # the key is taken: not a third
        await store.close()
    run(scenario())


def test_identities_and_revocations(database_url, tmp_path):
    async def scenario():
        store = open_store(database_url, tmp_path)
        await store.open()
        assert await store.create_identity("alice") is True
        assert await store.create_identity("alice") is False
        assert await store.identity_exists("alice") and not await store.identity_exists("bob")
        assert await store.token_state("bob", "j1") is None
        state = await store.token_state("alice", "j1")
        assert state.tokens_not_before == 0 and state.jti_revoked is False
        assert await store.revoke_all("alice", 1000.5) is True
        assert await store.revoke_all("alice", 900.0) is True  # a late clock cannot undo it
        assert (await store.token_state("alice", "j1")).tokens_not_before == 1000.5
        assert await store.revoke_all("bob", 1000.0) is False
        await store.revoke_token("alice", "j1", 5e9)
        await store.revoke_token("alice", "j1", 5e9)  # again: nothing changes, no error
        assert (await store.token_state("alice", "j1")).jti_revoked is True
        assert (await store.token_state("alice", "j2")).jti_revoked is False
        await store.close()
    run(scenario())


def test_cdrs_are_written_once_per_call_and_leg(database_url, tmp_path):
    async def scenario():
        store = open_store(database_url, tmp_path)
        await store.open()
        batch = [leg("c1", "p1", "alice", 100.0), leg("c1", "p2", "bob", 101.0),
                 call("c1", "alice", ["alice", "bob"], 100.0)]
        await store.add_cdrs(batch)
        await store.add_cdrs(batch)  # a retry after a lost answer
        await store.add_cdrs([leg("c1", "p1", "alice", 100.0)])
        assert await store.count_cdrs("c1") == {"leg": 2, "call": 1}
        assert cdr_key(batch[0]) == "leg:c1:p1" and cdr_key(batch[2]) == "call:c1"
        await store.add_cdrs([leg("c2", "p3", "carol", 200.0), call("c2", "carol", ["carol"], 200.0)])
        everything = await store.query_cdrs(None, None, None)
        assert [(r["call_id"], r["kind"]) for r in everything] == [
            ("c1", "leg"), ("c1", "call"), ("c1", "leg"), ("c2", "leg"), ("c2", "call")]
        assert all(not any(k.startswith("_") for k in r) for r in everything)
        bob = await store.query_cdrs(None, None, "bob")  # his leg and the call he was in
        assert sorted((r["call_id"], r["kind"]) for r in bob) == [("c1", "call"), ("c1", "leg")]
        assert [r["call_id"] for r in await store.query_cdrs(150.0, None, None)] == ["c2", "c2"]
        assert len(await store.query_cdrs(100.0, 101.0, None)) == 2
        assert len(await store.query_cdrs(None, None, None, limit=1)) == 1
        legs = await store.leg_cdrs_of_call("c1")
        assert [r["participant_id"] for r in legs] == ["p1", "p2"]
        await store.close()
    run(scenario())


def test_recordings_index_and_numbers(database_url, tmp_path):
    async def scenario():
        store = open_store(database_url, tmp_path)
        await store.open()
        await store.add_recording("r1", "c1", "/data/r1.wav", ["bob", "alice"], 10.0)
        await store.add_recording("r2", "c1", "/data/r2/mix.ogg", ["alice"], 20.0, fmt="ogg",
                                  tracks_mode="mix+participants", engine="http://e1")
        first = await store.get_recording("r1")
        assert first == {"id": "r1", "call_id": "c1", "path": "/data/r1.wav",
                         "members": ["alice", "bob"], "started_at": 10.0, "ended_at": None,
                         "duration_s": None, "format": "wav", "tracks_mode": "mix",
                         "engine": None, "state": "recording", "tracks": []}
        await store.finish_recording("r1", None, 15.0, 4.98)  # members as they were
        tracks = [{"participant_id": "p1", "track_id": "p1", "label": "alice", "kind": "voip",
                   "offset_s": 0.5, "duration_s": 4.0, "file": "p1.ogg"}]
        await store.finish_recording("r2", ["alice", "carol"], 25.0, 5.0, state="interrupted",
                                     tracks=tracks)
        assert (await store.get_recording("r1"))["members"] == ["alice", "bob"]
        assert (await store.get_recording("r2"))["members"] == ["alice", "carol"]
        assert (await store.get_recording("r1"))["duration_s"] == 4.98
        assert (await store.get_recording("r1"))["state"] == "stopped"
        second = await store.get_recording("r2")
        assert (second["format"], second["engine"], second["state"]) == ("ogg", "http://e1", "interrupted")
        assert second["tracks"] == tracks and second["tracks_mode"] == "mix+participants"
        assert await store.recording_ids_of_call("c1") == ["r1", "r2"]
        assert [r["id"] for r in await store.recordings_of_call("c1")] == ["r1", "r2"]
        assert await store.get_recording("nope") is None

        tree = {"ivr": {"say": "tone:440", "digits": {"1": {"user": "alice"}}}}
        assert await store.add_number("+14155550100", {"call": "c1"}) is True
        assert await store.add_number("+14155550100", {"user": "bob"}) is False  # kept as it was
        assert await store.add_number("+442071838750", tree) is True
        number = await store.get_number("+14155550100")
        assert number["route"] == {"call": "c1"} and number["number"] == "+14155550100"
        assert [n["number"] for n in await store.list_numbers()] == ["+14155550100", "+442071838750"]
        assert (await store.get_number("+442071838750"))["route"] == tree
        assert await store.delete_number("+14155550100") is True
        assert await store.delete_number("+14155550100") is False
        assert await store.get_number("+14155550100") is None
        await store.close()
    run(scenario())


def test_a_transaction_commits_whole_or_not_at_all(database_url, tmp_path):
    async def scenario():
        store = open_store(database_url, tmp_path)
        await store.open()
        db = store.db
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO identities (id, created_at) VALUES ($1, $2)", "x", 1.0)
                raise RuntimeError("half-way")
        assert not await store.identity_exists("x")
        await store.create_identity("y")
        with pytest.raises(StoreConflict):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO identities (id, created_at) VALUES ($1, $2)", "z", 1.0)
                await tx.execute("INSERT INTO identities (id, created_at) VALUES ($1, $2)", "y", 1.0)
        assert not await store.identity_exists("z")
        # the connection is usable again afterwards
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO identities (id, created_at) VALUES ($1, $2)", "z", 1.0)
        assert await store.identity_exists("z")
        assert json.loads(json.dumps(store.stats()))["schema_version"] == len(load_migrations())
        await store.close()
    run(scenario())


def test_revocation_cache_is_stale_for_at_most_its_ttl(database_url, tmp_path):
    """Two stores on one database stand for two controllers: a revocation through one is seen
    through the other's cache once its entry's ttl (counted from the query) has passed; at once
    where the revocation was made (forget)."""
    async def scenario():
        here, there = open_store(database_url, tmp_path), open_store(database_url, tmp_path)
        await here.open()
        await there.open()
        await here.create_identity("alice")
        patient = TokenStateCache(there, ttl_s=3600.0)
        short = TokenStateCache(there, ttl_s=0.2)
        direct = TokenStateCache(there, ttl_s=0.0)
        for cache in (patient, short, direct):
            assert (await cache.state("alice", "j1")).tokens_not_before == 0
        await here.revoke_all("alice", 50.0)
        assert (await patient.state("alice", "j1")).tokens_not_before == 0  # within its ttl
        assert (await direct.state("alice", "j1")).tokens_not_before == 50.0
        await asyncio.sleep(0.25)  # the ttl, and a margin for timers firing a little early
        assert (await short.state("alice", "j1")).tokens_not_before == 50.0
        patient.forget("alice")
        assert (await patient.state("alice", "j1")).tokens_not_before == 50.0
        assert (await patient.state("nobody", "j9")) is None
        # a burst of requests with one token shares one query
        fresh = TokenStateCache(there, ttl_s=60.0)
        states = await asyncio.gather(*(fresh.state("alice", "j2") for _ in range(20)))
        assert all(s == states[0] for s in states)
        assert fresh.stats()["misses"] == 1 and fresh.stats()["shared"] == 19
        small = TokenStateCache(there, ttl_s=60.0, max_entries=4)
        for i in range(10):
            await small.state("alice", f"k{i}")
        assert small.stats()["entries"] == 4
        await here.close()
        await there.close()
    run(scenario())
