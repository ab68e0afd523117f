"""The call registry: which engine conference hosts each call, who is in it, and its participants.

In memory by default (one controller); in Redis when `VOICEMIX_REDIS_URL` is set, so several
controllers serve the same calls. Each call is a Redis hash plus a set of members, a set of invited
identities and a hash of participants; every change is one atomic Redis command (HSET, SADD, HDEL,
DEL), so two controllers changing one call never overwrite each other's fields, and of two
controllers ending the same call or removing the same participant exactly one wins.
"""
from __future__ import annotations

import abc
import json

CALL_FIELDS = ("id", "owner", "mode", "requested_mode", "engine", "conference", "created_at",
               "type", "controller", "recording", "converted_at")  # the last two only while set


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


class RedisRegistry(CallRegistry):
    """Calls in Redis (redis-py asyncio), shared by every controller using the same URL."""

    def __init__(self, url: str, prefix: str = "voicemix:") -> None:
        import redis.asyncio as redis  # only needed when configured

        self.redis = redis.from_url(url, decode_responses=True)
        self.prefix = prefix

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
        await self.redis.delete(*self._keys(call_id)[1:])
        return call

    async def close(self) -> None:
        await self.redis.aclose()
