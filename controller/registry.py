"""The call registry: which engine conference hosts each call, who is in it, and its participants.

In memory by default (one controller); in Redis when `VOICEMIX_REDIS_URL` is set, so several
controllers serve the same calls. Each call is a Redis hash plus a set of members, a set of invited
identities and a hash of participants; every change is one atomic Redis command (HSET, SADD, HDEL,
DEL), so two controllers changing one call never overwrite each other's fields, and of two
controllers ending the same call or removing the same participant exactly one wins.

Leases: each controller refreshes a short-lived key in Redis (`heartbeat`) while it runs, and a
call's `controller` field names the one that monitors it. A controller that finds a call whose
controller's key has expired (a crash: SIGKILL, a lost machine) takes the call over with one
compare-and-set (`claim`), so exactly one survivor adopts it.
"""
from __future__ import annotations

import abc
import json

CALL_FIELDS = ("id", "owner", "mode", "requested_mode", "engine", "conference", "created_at",
               "type", "controller", "recording", "converted_at",  # the last two only while set
               "dtmf_seen")  # leg -> DTMF digits published, so a successor monitor does not repeat


class CallRegistry(abc.ABC):
    """Shared call state. A call is a dict of CALL_FIELDS plus `members`, `invited` (sets of
    identities) and `participants` (participant id -> dict)."""

    @abc.abstractmethod
    async def create(self, call: dict, members: set[str], invited: set[str]) -> None: ...

    @abc.abstractmethod
    async def get(self, call_id: str) -> dict | None: ...

    @abc.abstractmethod
    async def update(self, call_id: str, **fields) -> None: ...

    @abc.abstractmethod
    async def set_if_absent(self, call_id: str, field: str, value: str) -> bool:
        """Set `field` only if unset; True for the one caller that set it."""

    @abc.abstractmethod
    async def clear(self, call_id: str, field: str) -> None:
        """Unset `field` (so that `set_if_absent` can set it again)."""

    @abc.abstractmethod
    async def add_member(self, call_id: str, identity: str) -> None: ...

    @abc.abstractmethod
    async def add_invited(self, call_id: str, identities: set[str]) -> None: ...

    @abc.abstractmethod
    async def put_participant(self, call_id: str, participant: dict) -> int:
        """Store a participant; returns how many participants the call has now."""

    @abc.abstractmethod
    async def remove_participant(self, call_id: str, participant_id: str) -> dict | None:
        """Remove and return the participant, or None if it was not there (someone else won)."""

    @abc.abstractmethod
    async def delete(self, call_id: str) -> dict | None:
        """Remove the call and return its last state, or None if it was already gone."""

    @abc.abstractmethod
    async def call_ids(self) -> list[str]:
        """Every call in the registry (ended calls excluded)."""

    @abc.abstractmethod
    async def owners(self, call_ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
        """call id -> (`controller`, `engine`) of each call that still exists."""

    @abc.abstractmethod
    async def claim(self, call_id: str, expected: str | None, controller: str) -> bool:
        """Set the call's `controller` to `controller` only if it is still `expected`; True for
        the one caller that did."""

    @abc.abstractmethod
    async def heartbeat(self, controller: str, lease_s: float) -> None:
        """Say that `controller` is alive for the next `lease_s` seconds."""

    @abc.abstractmethod
    async def alive(self, controllers: set[str]) -> set[str]:
        """Those of `controllers` whose lease has not expired."""

    @abc.abstractmethod
    async def drop_heartbeat(self, controller: str) -> None:
        """`controller` stops: its lease ends now."""

    @property
    def shared(self) -> bool:
        """True when other controller processes see the same calls."""
        return False

    async def close(self) -> None:
        """Release connections."""


class MemoryRegistry(CallRegistry):
    """One controller's calls in a dict (the embedded default)."""

    def __init__(self) -> None:
        self.calls: dict[str, dict] = {}

    async def create(self, call: dict, members: set[str], invited: set[str]) -> None:
        self.calls[call["id"]] = {**call, "members": set(members), "invited": set(invited),
                                  "participants": {}}

    async def get(self, call_id: str) -> dict | None:
        call = self.calls.get(call_id)
        if call is None:
            return None
        return {**call, "members": set(call["members"]), "invited": set(call["invited"]),
                "participants": {k: dict(v) for k, v in call["participants"].items()}}

    async def update(self, call_id: str, **fields) -> None:
        if call_id in self.calls:
            self.calls[call_id].update(fields)

    async def set_if_absent(self, call_id: str, field: str, value: str) -> bool:
        call = self.calls.get(call_id)
        if call is None or call.get(field):
            return False
        call[field] = value
        return True

    async def clear(self, call_id: str, field: str) -> None:
        if call_id in self.calls:
            self.calls[call_id].pop(field, None)

    async def add_member(self, call_id: str, identity: str) -> None:
        if call_id in self.calls:
            self.calls[call_id]["members"].add(identity)

    async def add_invited(self, call_id: str, identities: set[str]) -> None:
        if call_id in self.calls:
            self.calls[call_id]["invited"] |= identities

    async def put_participant(self, call_id: str, participant: dict) -> int:
        participants = self.calls[call_id]["participants"]
        participants[participant["id"]] = dict(participant)
        return len(participants)

    async def remove_participant(self, call_id: str, participant_id: str) -> dict | None:
        call = self.calls.get(call_id)
        return None if call is None else call["participants"].pop(participant_id, None)

    async def delete(self, call_id: str) -> dict | None:
        return self.calls.pop(call_id, None)

    async def call_ids(self) -> list[str]:
        return list(self.calls)

    async def owners(self, call_ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
        return {i: (self.calls[i].get("controller"), self.calls[i].get("engine"))
                for i in call_ids if i in self.calls}

    async def claim(self, call_id: str, expected: str | None, controller: str) -> bool:
        call = self.calls.get(call_id)
        if call is None or call.get("controller") != expected:
            return False
        call["controller"] = controller
        return True

    # one process holds the memory registry: whoever asks is the only controller, and alive
    async def heartbeat(self, controller: str, lease_s: float) -> None:
        return None

    async def alive(self, controllers: set[str]) -> set[str]:
        return set(controllers)

    async def drop_heartbeat(self, controller: str) -> None:
        return None


# Compare-and-set of a call's controller (JSON-encoded like every field of the call hash).
_CLAIM = """
local current = redis.call('HGET', KEYS[1], 'controller')
if current == false then return 0 end
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'controller', ARGV[2])
return 1
"""


class RedisRegistry(CallRegistry):
    """Calls in Redis (redis-py asyncio), shared by every controller using the same URL."""

    def __init__(self, url: str, prefix: str = "voicemix:") -> None:
        import redis.asyncio as redis  # only needed when configured

        self.redis = redis.from_url(url, decode_responses=True)
        self.prefix = prefix
        self._claim = self.redis.register_script(_CLAIM)

    @property
    def shared(self) -> bool:
        return True

    @property
    def _index(self) -> str:
        return f"{self.prefix}calls"

    def _lease_key(self, controller: str) -> str:
        return f"{self.prefix}controller:{controller}"

    def _key(self, call_id: str, part: str = "") -> str:
        return f"{self.prefix}call:{call_id}{':' + part if part else ''}"

    def _keys(self, call_id: str) -> list[str]:
        return [self._key(call_id), self._key(call_id, "members"), self._key(call_id, "invited"),
                self._key(call_id, "participants")]

    async def create(self, call: dict, members: set[str], invited: set[str]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(call["id"]), mapping={k: json.dumps(v) for k, v in call.items()})
            if members:
                pipe.sadd(self._key(call["id"], "members"), *members)
            if invited:
                pipe.sadd(self._key(call["id"], "invited"), *invited)
            pipe.sadd(self._index, call["id"])
            await pipe.execute()

    async def get(self, call_id: str) -> dict | None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._key(call_id))
            pipe.smembers(self._key(call_id, "members"))
            pipe.smembers(self._key(call_id, "invited"))
            pipe.hgetall(self._key(call_id, "participants"))
            fields, members, invited, participants = await pipe.execute()
        if not fields:
            return None
        call = {k: json.loads(v) for k, v in fields.items()}
        call["members"] = set(members)
        call["invited"] = set(invited)
        call["participants"] = {k: json.loads(v) for k, v in participants.items()}
        return call

    async def update(self, call_id: str, **fields) -> None:
        key = self._key(call_id)
        # only a call that still exists: HSET on a deleted call would resurrect a partial hash
        if await self.redis.exists(key):
            await self.redis.hset(key, mapping={k: json.dumps(v) for k, v in fields.items()})

    async def set_if_absent(self, call_id: str, field: str, value: str) -> bool:
        return bool(await self.redis.hsetnx(self._key(call_id), field, json.dumps(value)))

    async def clear(self, call_id: str, field: str) -> None:
        await self.redis.hdel(self._key(call_id), field)

    async def add_member(self, call_id: str, identity: str) -> None:
        await self.redis.sadd(self._key(call_id, "members"), identity)

    async def add_invited(self, call_id: str, identities: set[str]) -> None:
        if identities:
            await self.redis.sadd(self._key(call_id, "invited"), *identities)

    async def put_participant(self, call_id: str, participant: dict) -> int:
        key = self._key(call_id, "participants")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, participant["id"], json.dumps(participant))
            pipe.hlen(key)
            _, count = await pipe.execute()
        return int(count)

    async def remove_participant(self, call_id: str, participant_id: str) -> dict | None:
        key = self._key(call_id, "participants")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(key, participant_id)
            pipe.hdel(key, participant_id)
            value, removed = await pipe.execute()
        return json.loads(value) if removed and value else None

    async def delete(self, call_id: str) -> dict | None:
        call = await self.get(call_id)
        if call is None:
            return None
        removed = await self.redis.delete(self._key(call_id))
        if not removed:
            return None  # another controller ended it between our read and delete
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*self._keys(call_id)[1:])
            pipe.srem(self._index, call_id)
            await pipe.execute()
        return call

    async def call_ids(self) -> list[str]:
        return sorted(await self.redis.smembers(self._index))

    async def owners(self, call_ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
        if not call_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for call_id in call_ids:
                pipe.hmget(self._key(call_id), "controller", "engine")
            rows = await pipe.execute()
        result = {}
        stale = []
        for call_id, (controller, engine) in zip(call_ids, rows):
            if engine is None:  # the hash is gone: ended between the index read and this one
                stale.append(call_id)
                continue
            result[call_id] = (json.loads(controller) if controller else None, json.loads(engine))
        if stale:  # an index entry whose call hash is gone (a crash between the two deletes)
            await self.redis.srem(self._index, *stale)
        return result

    async def claim(self, call_id: str, expected: str | None, controller: str) -> bool:
        if expected is None:
            return False
        return bool(await self._claim(keys=[self._key(call_id)],
                                      args=[json.dumps(expected), json.dumps(controller)]))

    async def heartbeat(self, controller: str, lease_s: float) -> None:
        await self.redis.set(self._lease_key(controller), "1", px=max(int(lease_s * 1000), 1))

    async def alive(self, controllers: set[str]) -> set[str]:
        ordered = sorted(controllers)
        if not ordered:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for controller in ordered:
                pipe.exists(self._lease_key(controller))
            found = await pipe.execute()
        return {c for c, exists in zip(ordered, found) if exists}

    async def drop_heartbeat(self, controller: str) -> None:
        await self.redis.delete(self._lease_key(controller))

    async def close(self) -> None:
        await self.redis.aclose()
