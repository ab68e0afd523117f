"""Per-call events fanned out to Server-Sent Events subscribers.

Each subscriber has a bounded queue: a client that does not read loses its oldest events (counted)
instead of growing the controller's memory. With Redis configured, every event is also published on
`<prefix>events:<call>` and every controller relays the others' events to its own subscribers, so a
client sees a call's events whichever controller it is connected to.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator

log = logging.getLogger("voicemix.controller")

QUEUE_LIMIT = 256
KEEPALIVE_S = 15.0
_END = object()


def user_stream(identity: str) -> str:
    """The stream key of one identity's own events (invitations), beside the calls' streams."""
    return f"user:{identity}"


class EventHub:
    """publish(call, type, data) -> every subscriber of that call."""

    def __init__(self, redis_url: str | None = None, prefix: str = "voicemix:") -> None:
        self._subscribers: dict[str, set[asyncio.Queue]] = {}
        self._next_id: dict[str, int] = {}
        self.dropped = 0
        self.published = 0
        self.relayed = 0
        self.origin = secrets.token_hex(6)
        self._channel_prefix = f"{prefix}events:"
        self._redis = None
        self._relay: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()
        if redis_url:
            import redis.asyncio as redis

            self._redis = redis.from_url(redis_url, decode_responses=True)

    async def start(self) -> None:
        """Subscribe to the other controllers' events (with Redis); returns once subscribed."""
        if self._redis is None:
            return
        pubsub = self._redis.pubsub()
        await pubsub.psubscribe(self._channel_prefix + "*")
        self._relay = asyncio.get_running_loop().create_task(self._relay_loop(pubsub))

    async def stop(self) -> None:
        if self._relay is not None:
            self._relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay
            self._relay = None
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    async def _relay_loop(self, pubsub) -> None:
        try:
            async for message in pubsub.listen():
                if message.get("type") != "pmessage":
                    continue
                try:
                    origin, event_type, data, *stream = json.loads(message["data"])
                except (ValueError, TypeError):
                    continue
                if origin == self.origin or not isinstance(data, dict):
                    continue
                self.relayed += 1
                # the stream key: a call id, or "user:<identity>" for a user's own stream
                key = str(stream[0]) if stream else str(data.get("call_id"))
                self._deliver(key, event_type, data)
                if event_type == "call_ended":
                    self.close(key)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def publish(self, call_id: str, event_type: str, data: dict) -> None:
        """To the subscribers of stream `call_id` (a call id, or `user_stream(identity)`)."""
        self.published += 1
        event = {"type": event_type, "call_id": call_id, "time": time.time(), **data}
        self._deliver(call_id, event_type, event)
        if self._redis is not None:
            message = json.dumps([self.origin, event_type, event, call_id])
            task = asyncio.get_running_loop().create_task(
                self._redis.publish(self._channel_prefix + call_id, message))
            self._pending.add(task)
            task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("event not shared through Redis: %r", task.exception())

    def _deliver(self, call_id: str, event_type: str, event: dict) -> None:
        queues = self._subscribers.get(call_id)
        if not queues:
            return
        event_id = self._next_id.get(call_id, 0) + 1
        self._next_id[call_id] = event_id
        for queue in queues:
            self._put(queue, (event_id, event_type, event))

    def _put(self, queue: asyncio.Queue, item) -> None:
        if queue.full():
            queue.get_nowait()
            self.dropped += 1
        queue.put_nowait(item)

    def close(self, call_id: str) -> None:
        """The call ended: every stream of it finishes after the events already queued."""
        for queue in self._subscribers.pop(call_id, ()):
            self._put(queue, _END)
        self._next_id.pop(call_id, None)

    def close_all(self) -> None:
        for call_id in list(self._subscribers):
            self.close(call_id)

    def subscribers(self, call_id: str) -> int:
        return len(self._subscribers.get(call_id, ()))

    async def stream(self, call_id: str, keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[str]:
        """The SSE text of this call's events (`id:`, `event:`, `data:` lines), with keep-alive
        comments, until the call ends or the client goes away."""
        queue: asyncio.Queue = asyncio.Queue(QUEUE_LIMIT)
        self._subscribers.setdefault(call_id, set()).add(queue)
        try:
            yield ": subscribed\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), keepalive_s)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item is _END:
                    return
                event_id, event_type, data = item
                yield f"id: {event_id}\nevent: {event_type}\ndata: {json.dumps(data)}\n\n"
        finally:
            subscribers = self._subscribers.get(call_id)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    self._subscribers.pop(call_id, None)
