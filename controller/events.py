"""Per-call events fanned out to Server-Sent Events subscribers.

Each subscriber has a bounded queue: a client that does not read loses its oldest events (counted)
instead of growing the controller's memory.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

QUEUE_LIMIT = 256
KEEPALIVE_S = 15.0
_END = object()


class EventHub:
    """publish(call, type, data) -> every subscriber of that call."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue]] = {}
        self._next_id: dict[str, int] = {}
        self.dropped = 0
        self.published = 0

    def publish(self, call_id: str, event_type: str, data: dict) -> None:
        event_id = self._next_id.get(call_id, 0) + 1
        self._next_id[call_id] = event_id
        self.published += 1
        event = (event_id, event_type, {"type": event_type, "call_id": call_id, "time": time.time(),
                                        **data})
        for queue in self._subscribers.get(call_id, ()):
            self._put(queue, event)

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
