"""One small interface to a media engine, in-process or remote over its HTTP control API.

Both implementations answer the same dicts as `mixer.engine.engine.Engine` and raise the same
`EngineError(status, code, message)`; an engine that cannot be reached is `EngineError(503,
"engine_unavailable")`.
"""
from __future__ import annotations

import abc
import asyncio
import json

import aiohttp

from mixer.engine.engine import Engine, EngineError

REMOTE_TIMEOUT_S = 5.0


class EngineClient(abc.ABC):
    """The engine operations the controller uses; `name` is what the call registry stores."""

    name: str

    @abc.abstractmethod
    async def create_conference(self, mode: str, conference_id: str | None = None) -> dict: ...

    @abc.abstractmethod
    async def get_conference(self, conference_id: str) -> dict: ...

    @abc.abstractmethod
    async def delete_conference(self, conference_id: str) -> None: ...

    @abc.abstractmethod
    async def add_leg(self, conference_id: str, sdp: str, label: str | None = None) -> dict: ...

    @abc.abstractmethod
    async def update_leg(self, conference_id: str, leg_id: str, muted: bool | None = None) -> dict: ...

    @abc.abstractmethod
    async def remove_leg(self, conference_id: str, leg_id: str) -> None: ...

    @abc.abstractmethod
    async def stats(self) -> dict: ...

    # legs the engine offers (calls placed through a SIP trunk), re-offers, keys, moves
    @abc.abstractmethod
    async def offer_leg(self, conference_id: str, codecs: list[str], label: str | None = None) -> dict: ...

    @abc.abstractmethod
    async def answer_leg(self, conference_id: str, leg_id: str, sdp: str) -> dict: ...

    @abc.abstractmethod
    async def renegotiate_leg(self, conference_id: str, leg_id: str, sdp: str) -> dict: ...

    @abc.abstractmethod
    async def send_dtmf(self, conference_id: str, leg_id: str, digits: str) -> dict: ...

    @abc.abstractmethod
    async def move_leg(self, conference_id: str, leg_id: str, target_id: str) -> dict: ...

    @abc.abstractmethod
    async def get_leg(self, conference_id: str, leg_id: str) -> dict: ...

    # players: a tone or a WAV file played into an MCU conference by the engine (prompts)
    @abc.abstractmethod
    async def add_player(self, conference_id: str, *, tone: float | None = None,
                         file: str | None = None, loop: bool = False, seconds: float | None = None,
                         label: str | None = None, player_id: str | None = None) -> dict: ...

    @abc.abstractmethod
    async def get_player(self, conference_id: str, player_id: str) -> dict: ...

    @abc.abstractmethod
    async def update_player(self, conference_id: str, player_id: str,
                            muted: bool | None = None) -> dict: ...

    @abc.abstractmethod
    async def remove_player(self, conference_id: str, player_id: str) -> None: ...

    async def close(self) -> None:
        """Release what the client holds (sessions); the engine itself keeps running."""


class InProcessEngine(EngineClient):
    """An `Engine` on this event loop: direct method calls, no serialization."""

    def __init__(self, engine: Engine, name: str = "local") -> None:
        self.engine = engine
        self.name = name

    async def create_conference(self, mode: str, conference_id: str | None = None) -> dict:
        return self.engine.create_conference(mode, conference_id)

    async def get_conference(self, conference_id: str) -> dict:
        return self.engine.get_conference(conference_id)

    async def delete_conference(self, conference_id: str) -> None:
        self.engine.delete_conference(conference_id)

    async def add_leg(self, conference_id: str, sdp: str, label: str | None = None) -> dict:
        return await self.engine.add_leg(conference_id, sdp, label)

    async def update_leg(self, conference_id: str, leg_id: str, muted: bool | None = None) -> dict:
        return self.engine.update_leg(conference_id, leg_id, muted)

    async def remove_leg(self, conference_id: str, leg_id: str) -> None:
        self.engine.remove_leg(conference_id, leg_id)

    async def stats(self) -> dict:
        return self.engine.stats()

    async def offer_leg(self, conference_id: str, codecs: list[str], label: str | None = None) -> dict:
        return await self.engine.offer_leg(conference_id, codecs, label)

    async def answer_leg(self, conference_id: str, leg_id: str, sdp: str) -> dict:
        return await self.engine.answer_leg(conference_id, leg_id, sdp)

    async def renegotiate_leg(self, conference_id: str, leg_id: str, sdp: str) -> dict:
        return self.engine.renegotiate_leg(conference_id, leg_id, sdp)

    async def send_dtmf(self, conference_id: str, leg_id: str, digits: str) -> dict:
        return self.engine.send_dtmf(conference_id, leg_id, digits)

    async def move_leg(self, conference_id: str, leg_id: str, target_id: str) -> dict:
        return self.engine.move_leg(conference_id, leg_id, target_id)

    async def get_leg(self, conference_id: str, leg_id: str) -> dict:
        return self.engine.get_leg(conference_id, leg_id)

    async def add_player(self, conference_id: str, *, tone: float | None = None,
                         file: str | None = None, loop: bool = False, seconds: float | None = None,
                         label: str | None = None, player_id: str | None = None) -> dict:
        return self.engine.add_player(conference_id, tone=tone, file=file, loop=loop,
                                      seconds=seconds, label=label, player_id=player_id)

    async def get_player(self, conference_id: str, player_id: str) -> dict:
        return self.engine.get_player(conference_id, player_id)

    async def update_player(self, conference_id: str, player_id: str,
                            muted: bool | None = None) -> dict:
        return self.engine.update_player(conference_id, player_id, muted)

    async def remove_player(self, conference_id: str, player_id: str) -> None:
        self.engine.remove_player(conference_id, player_id)


class HttpEngine(EngineClient):
    """An engine in another process, through `mixer/engine/control.py`'s HTTP/JSON API."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = self.base_url
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REMOTE_TIMEOUT_S))
        return self._session

    async def _request(self, method: str, path: str, body: dict | None = None):
        try:
            async with self._client().request(method, self.base_url + path, json=body) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise EngineError(503, "engine_unavailable",
                              f"engine {self.name} did not answer: {exc!r}") from exc
        data = None
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                raise EngineError(502, "engine_bad_answer",
                                  f"engine {self.name} answered {status} with non-JSON") from None
        if status >= 400:
            error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            raise EngineError(status, error.get("code", "engine_error"),
                              error.get("message", f"engine answered {status}"))
        return data

    async def create_conference(self, mode: str, conference_id: str | None = None) -> dict:
        body = {"mode": mode}
        if conference_id is not None:
            body["id"] = conference_id
        return await self._request("POST", "/conferences", body)

    async def get_conference(self, conference_id: str) -> dict:
        return await self._request("GET", f"/conferences/{conference_id}")

    async def delete_conference(self, conference_id: str) -> None:
        await self._request("DELETE", f"/conferences/{conference_id}")

    async def add_leg(self, conference_id: str, sdp: str, label: str | None = None) -> dict:
        body = {"sdp": sdp}
        if label is not None:
            body["label"] = label
        return await self._request("POST", f"/conferences/{conference_id}/legs", body)

    async def update_leg(self, conference_id: str, leg_id: str, muted: bool | None = None) -> dict:
        body = {} if muted is None else {"muted": muted}
        return await self._request("PATCH", f"/conferences/{conference_id}/legs/{leg_id}", body)

    async def remove_leg(self, conference_id: str, leg_id: str) -> None:
        await self._request("DELETE", f"/conferences/{conference_id}/legs/{leg_id}")

    async def stats(self) -> dict:
        return await self._request("GET", "/stats")

    async def offer_leg(self, conference_id: str, codecs: list[str], label: str | None = None) -> dict:
        body: dict = {"codecs": list(codecs)}
        if label is not None:
            body["label"] = label
        return await self._request("POST", f"/conferences/{conference_id}/legs", body)

    async def answer_leg(self, conference_id: str, leg_id: str, sdp: str) -> dict:
        return await self._request("PATCH", f"/conferences/{conference_id}/legs/{leg_id}", {"answer": sdp})

    async def renegotiate_leg(self, conference_id: str, leg_id: str, sdp: str) -> dict:
        return await self._request("PATCH", f"/conferences/{conference_id}/legs/{leg_id}", {"offer": sdp})

    async def send_dtmf(self, conference_id: str, leg_id: str, digits: str) -> dict:
        return await self._request("POST", f"/conferences/{conference_id}/legs/{leg_id}/dtmf",
                                   {"digits": digits})

    async def move_leg(self, conference_id: str, leg_id: str, target_id: str) -> dict:
        return await self._request("POST", f"/conferences/{conference_id}/legs/{leg_id}/move",
                                   {"conference": target_id})

    async def get_leg(self, conference_id: str, leg_id: str) -> dict:
        return await self._request("GET", f"/conferences/{conference_id}/legs/{leg_id}")

    async def add_player(self, conference_id: str, *, tone: float | None = None,
                         file: str | None = None, loop: bool = False, seconds: float | None = None,
                         label: str | None = None, player_id: str | None = None) -> dict:
        body = {k: v for k, v in {"tone": tone, "file": file, "loop": loop, "seconds": seconds,
                                  "label": label, "id": player_id}.items() if v is not None}
        return await self._request("POST", f"/conferences/{conference_id}/players", body)

    async def get_player(self, conference_id: str, player_id: str) -> dict:
        return await self._request("GET", f"/conferences/{conference_id}/players/{player_id}")

    async def update_player(self, conference_id: str, player_id: str,
                            muted: bool | None = None) -> dict:
        body = {} if muted is None else {"muted": muted}
        return await self._request("PATCH", f"/conferences/{conference_id}/players/{player_id}", body)

    async def remove_player(self, conference_id: str, player_id: str) -> None:
        await self._request("DELETE", f"/conferences/{conference_id}/players/{player_id}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
