"""Records that must not be lost, written through the store or, while it is down, kept on disk
and retried in order: CDRs (leg records, a call's end) and recordings finished.

`submit()` returns once the entry is committed to the store, or, when the store does not answer
(or earlier entries still wait), once it is in this controller's spool file (written, fsynced,
renamed into place). A retry task then writes the queue head first, with a delay that starts at
`retry_s` and doubles up to `MAX_RETRY_S`. Every write is idempotent (CDRs are keyed by call and
leg, a finished recording is an UPDATE to the same values), so an entry written twice, because
its commit succeeded but the answer was lost, is still recorded once.

A call's own record is computed when its entry is written, not when it is queued: it sums every
leg record of the call in the store at that moment (including legs written by other controllers
or earlier entries of this queue, which are written first).

The spool lives in `<data dir>/outbox/<controller instance>.jsonl`, locked (flock on a `.lock`
beside it) for as long as the controller runs. At start a controller takes over every spool
whose lock is free (its controller stopped or died with entries left), so nothing waits for a
controller that never comes back.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections import deque
from pathlib import Path

from controller import cdr
from controller.store import Store, StoreUnavailable
from mixer.datadir import private_directory

log = logging.getLogger("voicemix.controller")

MAX_RETRY_S = 30.0
CDRS, CALL_ENDED, RECORDING_FINISHED = "cdrs", "call_ended", "recording_finished"


class OutboxError(Exception):
    """An entry the store refused for a reason other than being down (kept aside, not retried)."""


class Outbox:
    def __init__(self, store: Store, spool_dir: Path, name: str, retry_s: float = 1.0) -> None:
        self.store = store
        self.spool_dir = spool_dir
        self.name = name
        self.retry_s = retry_s
        self._queue: deque[dict] = deque()
        self._lock_file: int | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self.written = 0
        self.spooled = 0
        self.retried = 0
        self.rejected = 0
        self.adopted = 0
        self.last_error: str | None = None

    @property
    def path(self) -> Path:
        return self.spool_dir / f"{self.name}.jsonl"

    # -------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Lock this controller's spool; take over spools left by stopped controllers."""
        private_directory(self.spool_dir)  # queued CDRs: who called whom
        self._lock_file = _lock(self.spool_dir / f"{self.name}.lock", wait=True)
        for lock_path in sorted(self.spool_dir.glob("*.lock")):
            if lock_path.stem == self.name:
                continue
            fd = _lock(lock_path, wait=False)
            if fd is None:
                continue  # a live controller's spool
            try:
                spool = lock_path.with_suffix(".jsonl")
                entries = _read(spool)
                if entries:
                    self._queue.extend(entries)
                    self._persist()
                    self.adopted += len(entries)
                    log.warning("outbox: took over %d records queued by stopped controller %s",
                                len(entries), lock_path.stem)
                spool.unlink(missing_ok=True)
                lock_path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        self._task = asyncio.get_running_loop().create_task(self._retry())
        if self._queue:
            self._drained.clear()
            self._wake.set()

    async def close(self) -> None:
        """Stop retrying: what is still queued stays in the spool for the next start (or
        another controller on this data directory)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._lock_file is not None:
            if not self._queue:
                self.path.unlink(missing_ok=True)
                (self.spool_dir / f"{self.name}.lock").unlink(missing_ok=True)
            os.close(self._lock_file)
            self._lock_file = None
        if self._queue:
            log.warning("outbox: %d records stay queued in %s", len(self._queue), self.path)

    # ---------------------------------------------------------------------------------- entries
    async def cdrs(self, records: list[dict]) -> bool:
        """Leg records (a participant left)."""
        return await self.submit({"op": CDRS, "records": records})

    async def call_ended(self, call: dict, records: list[dict], ended_at: float,
                         reason: str) -> bool:
        """The legs' records of an ended call and, computed when written, the call's."""
        summary = {k: call.get(k) for k in ("id", "owner", "mode", "type", "created_at")}
        summary["members"] = sorted(call.get("members", ()))
        return await self.submit({"op": CALL_ENDED, "call": summary, "records": records,
                                  "ended_at": ended_at, "reason": reason})

    async def recording_finished(self, recording_id: str, members: list[str] | None,
                                 ended_at: float, duration_s: float, state: str = "stopped",
                                 tracks: list[dict] | None = None) -> bool:
        """A recording the engine finished: its duration, how it ended and its tracks."""
        return await self.submit({"op": RECORDING_FINISHED, "id": recording_id,
                                  "members": members, "ended_at": ended_at,
                                  "duration_s": duration_s, "state": state,
                                  "tracks": tracks or []})

    async def submit(self, entry: dict) -> bool:
        """True: committed to the store. False: queued on disk, to be written when it answers."""
        if not self._queue:
            try:
                await self._write(entry)
                return True
            except StoreUnavailable as exc:
                self.last_error = str(exc)
                log.warning("outbox: store unavailable (%s); queueing on disk", exc)
        entry = {**entry, "queued_at": time.time()}
        self._queue.append(entry)
        self._persist()
        self.spooled += 1
        self._drained.clear()
        self._wake.set()
        return False

    async def drained(self) -> None:
        """Wait until nothing is queued."""
        await self._drained.wait()

    def __len__(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------------------------------ write
    async def _write(self, entry: dict) -> None:
        op = entry["op"]
        if op == CDRS:
            await self.store.add_cdrs(entry["records"])
        elif op == CALL_ENDED:
            call, records = entry["call"], entry["records"]
            mine = {r["participant_id"] for r in records}
            # legs that left earlier; this entry's own legs are left out, should a previous
            # attempt have committed them
            earlier = [r for r in await self.store.leg_cdrs_of_call(call["id"])
                       if r.get("participant_id") not in mine]
            recordings = await self.store.recordings_of_call(call["id"])
            record = cdr.call_record(call, earlier + records, entry["ended_at"], entry["reason"],
                                     recordings)
            await self.store.add_cdrs(records + [record])
        elif op == RECORDING_FINISHED:
            await self.store.finish_recording(entry["id"], entry["members"], entry["ended_at"],
                                              entry["duration_s"],
                                              state=entry.get("state", "stopped"),
                                              tracks=entry.get("tracks"))
        else:
            raise OutboxError(f"unknown outbox entry {op!r}")
        self.written += 1

    async def _retry(self) -> None:
        delay = self.retry_s
        while True:
            if not self._queue:
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
                delay = self.retry_s
                await asyncio.sleep(delay)  # the store just failed: give it a moment
            entry = self._queue[0]
            try:
                await self._write(entry)
            except StoreUnavailable as exc:
                self.last_error = str(exc)
                self.retried += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            except Exception as exc:  # not the store being down: retrying will not help
                self.rejected += 1
                self.last_error = repr(exc)
                log.error("outbox: the store refused a queued %s (%r); kept in %s", entry["op"],
                          exc, self.spool_dir / "rejected.jsonl")
                _append(self.spool_dir / "rejected.jsonl", entry)
            else:
                log.info("outbox: wrote a %s queued %.1f s ago", entry["op"],
                         time.time() - entry.get("queued_at", time.time()))
            self._queue.popleft()
            self._persist()
            delay = self.retry_s

    def _persist(self) -> None:
        """The queue to disk, atomically (a crash leaves the old or the new file, whole)."""
        if not self._queue:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            for entry in self._queue:
                handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.spool_dir)

    def stats(self) -> dict:
        return {"queued": len(self._queue), "written": self.written, "spooled": self.spooled,
                "retried": self.retried, "rejected": self.rejected, "adopted": self.adopted,
                "last_error": self.last_error}


def _lock(path: Path, *, wait: bool) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        if line.strip():
            entries.append(json.loads(line))
    return entries


def _append(path: Path, entry: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(entry) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
