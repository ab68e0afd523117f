"""The outbox against stores that really go down: a PostgreSQL server stopped and started again
(its own, not the session's), and a SQLite file whose write lock another connection holds
past the store's busy timeout. Records submitted meanwhile are on disk, written once in order
when the store answers, and taken over by the next controller if this one stops first."""
import asyncio
import json
import sqlite3

import pytest
import uvloop

from controller.outbox import Outbox
from controller.store import Store, database_for
from controller.testing import PostgresServer, postgres_bin_dir

pytestmark = pytest.mark.store_independent  # it makes its own stores, per parameter

RETRY_S = 0.05


def run(coro):
    return uvloop.run(coro)


@pytest.fixture(scope="module")
def own_postgres():
    """A server this module may stop (the session's is shared with every other test)."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    with PostgresServer(bin_dir) as server:
        yield server


class Breakable:
    """A store and a way to take its database down and bring it back."""

    def __init__(self, kind: str, tmp_path, server: PostgresServer | None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.server = server
        self.url = server.create_database(f"outbox_{tmp_path.name}") if server else None
        self._holder: sqlite3.Connection | None = None

    def store(self) -> Store:
        return Store(database_for(self.url, self.tmp_path, timeout_s=0.2))

    async def down(self) -> None:
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
        else:  # another process's long write: ours wait 0.2 s for the lock, then give up
            self._holder = sqlite3.connect(self.tmp_path / "controller.sqlite3",
                                           isolation_level=None)
            self._holder.execute("BEGIN IMMEDIATE")

    async def up(self) -> None:
        if self.server is not None:
            await asyncio.to_thread(self.server.start)
        else:
            self._holder.execute("ROLLBACK")
            self._holder.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def breakable(request, tmp_path):
    server = request.getfixturevalue("own_postgres") if request.param == "postgresql" else None
    return Breakable(request.param, tmp_path, server)


def leg(participant: str, identity: str) -> dict:
    return {"kind": "leg", "call_id": "c1", "participant_id": participant,
            "participant_kind": "voip", "identity": identity, "members": [identity],
            "codec": "opus", "packets_in": 10, "packets_out": 10, "bytes_in": 100,
            "bytes_out": 100, "jitter_mean_ms": 1.0, "jitter_max_ms": 2.0, "loss_percent": 0.0,
            "mos": 4.3, "_started": 100.0, "_ended": 110.0}


CALL = {"id": "c1", "owner": "alice", "mode": "mcu", "type": "group", "created_at": 99.0,
        "members": {"alice", "bob", "carol"}}


def test_records_written_while_the_store_is_down_are_queued_on_disk_and_written_once(
        breakable, tmp_path):
    async def scenario():
        store = breakable.store()
        await store.open()
        await store.add_recording("r1", "c1", "/r1.wav", ["alice"], 100.0)
        outbox = Outbox(store, tmp_path / "outbox", "ctl-a", retry_s=RETRY_S)
        await outbox.start()
        assert await outbox.cdrs([leg("p1", "alice")]) is True  # committed: the store is up
        await breakable.down()
        assert await outbox.cdrs([leg("p2", "bob")]) is False
        assert await outbox.recording_finished("r1", None, 111.0, 10.0) is False
        assert await outbox.call_ended(CALL, [leg("p3", "carol")], 112.0, "ended") is False
        spooled = [json.loads(line) for line in outbox.path.read_text().splitlines()]
        assert [e["op"] for e in spooled] == ["cdrs", "recording_finished", "call_ended"]
        await asyncio.sleep(10 * RETRY_S)  # a few retries fail while it is down
        assert len(outbox) == 3 and outbox.stats()["retried"] >= 1
        await breakable.up()
        await asyncio.wait_for(outbox.drained(), 30)
        assert not outbox.path.exists()
        assert await store.count_cdrs("c1") == {"leg": 3, "call": 1}
        records = await store.query_cdrs(None, None, None)
        call_record = next(r for r in records if r["kind"] == "call")
        assert call_record["participants"] == 3 and call_record["recording_ids"] == ["r1"]
        assert (await store.get_recording("r1"))["duration_s"] == 10.0
        # written again (as after a commit whose answer was lost): still once each
        await outbox.call_ended(CALL, [leg("p3", "carol")], 112.0, "ended")
        assert await store.count_cdrs("c1") == {"leg": 3, "call": 1}
        stats = outbox.stats()
        assert stats["spooled"] == 3 and stats["queued"] == 0 and stats["rejected"] == 0
        await outbox.close()
        await store.close()
    run(scenario())


def test_a_stopped_controllers_queue_is_taken_over_at_the_next_start(breakable, tmp_path):
    async def scenario():
        store = breakable.store()
        await store.open()
        spool = tmp_path / "outbox"
        stopped = Outbox(store, spool, "ctl-stopped", retry_s=RETRY_S)
        alive = Outbox(store, spool, "ctl-alive", retry_s=60.0)  # retries only much later
        await stopped.start()
        await alive.start()
        await breakable.down()
        assert await stopped.cdrs([leg("p1", "alice")]) is False
        assert await stopped.submit({"op": "no_such_op"}) is False  # refused later, not retried
        assert await stopped.cdrs([leg("p2", "bob")]) is False
        assert await alive.cdrs([leg("p3", "carol")]) is False
        await stopped.close()  # stops with its records on disk
        assert stopped.path.exists()
        await breakable.up()
        successor = Outbox(store, spool, "ctl-next", retry_s=RETRY_S)
        await successor.start()
        assert successor.stats()["adopted"] == 3  # the stopped one's, not the live one's
        await asyncio.wait_for(successor.drained(), 30)
        assert not stopped.path.exists() and alive.path.exists()
        assert await store.count_cdrs("c1") == {"leg": 2}
        rejected = [json.loads(x) for x in (spool / "rejected.jsonl").read_text().splitlines()]
        assert [e["op"] for e in rejected] == ["no_such_op"]
        await alive.close()  # its queue stays for whoever starts next
        again = Outbox(store, spool, "ctl-last", retry_s=RETRY_S)
        await again.start()
        await asyncio.wait_for(again.drained(), 30)
        assert await store.count_cdrs("c1") == {"leg": 3}
        for outbox in (successor, again):
            await outbox.close()
        assert sorted(p.name for p in spool.iterdir()) == ["rejected.jsonl"]
        await store.close()
    run(scenario())
