"""The engine client interface: one way to drive a media engine, in-process or over HTTP.

This is the only part of `mixer` the signaling controller imports (`tests/test_layers.py` holds
it to that): whatever the controller asks of media (conferences, legs, players, and later
recordings and forks) goes through `EngineClient`. Both implementations answer the same dicts as
`mixer.engine.engine.Engine` and raise the same `EngineError(status, code, message)`; an engine
that cannot be reached is `EngineError(503, "engine_unavailable")`.
"""
from __future__ import annotations

import abc
import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp

from mixer.engine.errors import EngineError

if TYPE_CHECKING:  # the in-process client is handed an Engine; the HTTP one never loads it
    from mixer.engine.engine import Engine

__all__ = ["EngineClient", "EngineError", "HttpEngine", "InProcessEngine"]

REMOTE_TIMEOUT_S = 5.0
CHUNK_BYTES = 64 * 1024


def _error_of(status: int, raw: bytes, name: str) -> EngineError:
    """The engine's error answer (the shared shape) as an EngineError."""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
    if not isinstance(error, dict):
        error = {}
    return EngineError(status, str(error.get("code", "engine_error")),
                       str(error.get("message", f"engine {name} answered {status}")))


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
    async def add_leg(self, conference_id: str, sdp: str, label: str | None = None, *,
                      noise_suppression: bool | None = None, auto_gain: bool | None = None) -> dict: ...

    @abc.abstractmethod
    async def update_leg(self, conference_id: str, leg_id: str, muted: bool | None = None, *,
                         noise_suppression: bool | None = None, auto_gain: bool | None = None,
                         gains: dict[str, float | None] | None = None) -> dict:
        """Mute; the leg's voice processing (MCU); the gains (dB) it hears other legs at."""

    @abc.abstractmethod
    async def remove_leg(self, conference_id: str, leg_id: str) -> None: ...

    @abc.abstractmethod
    async def reoffer_leg(self, conference_id: str, leg_id: str, sdp: str) -> dict:
        """A new SDP offer on an existing leg (ICE restart, hold, new address) -> {"id", "sdp"}."""

    @abc.abstractmethod
    async def stats(self) -> dict: ...

    @abc.abstractmethod
    async def list_conferences(self) -> list[dict]: ...

    @abc.abstractmethod
    async def drain(self, timeout_s: float | None = None) -> dict:
        """Stop the engine taking new conferences; current ones end by `timeout_s`."""

    # players: a tone or a WAV/Ogg Opus file played into a conference by the engine
    @abc.abstractmethod
    async def add_player(self, conference_id: str, *, tone: float | None = None,
                         file: str | None = None, loop: bool = False, seconds: float | None = None,
                         label: str | None = None, player_id: str | None = None) -> dict:
        """Start playing; the answer is the player (`id`, `state` "playing", ...). Its `state`
        becomes "finished" (or "failed") when done: poll `get_player` or the conference."""

    @abc.abstractmethod
    async def get_player(self, conference_id: str, player_id: str) -> dict: ...

    @abc.abstractmethod
    async def update_player(self, conference_id: str, player_id: str,
                            muted: bool | None = None) -> dict:
        """A muted player plays on unheard (its file position keeps moving)."""

    @abc.abstractmethod
    async def remove_player(self, conference_id: str, player_id: str) -> None:
        """Stop it (if it still plays) and forget it."""

    # recordings: the mix, and per participant tracks, written by the engine
    @abc.abstractmethod
    async def start_recording(self, conference_id: str, *, format: str = "ogg",
                              tracks: str = "mix", recording_id: str | None = None) -> dict:
        """Start recording (`format` "ogg" | "wav", `tracks` "mix" | "mix+participants");
        the answer is the recording's metadata, `state` "recording"."""

    @abc.abstractmethod
    async def get_recording(self, conference_id: str, recording_id: str) -> dict: ...

    @abc.abstractmethod
    async def stop_recording(self, conference_id: str, recording_id: str) -> dict:
        """Finish it; the answer is its final metadata: `duration_s`, `path`, and `tracks`
        (each with `id`, `offset_s` from the mix's start, `duration_s`, `file`)."""

    @abc.abstractmethod
    async def recording_info(self, recording_id: str) -> dict:
        """A recording's metadata, also after its conference ended."""

    @abc.abstractmethod
    def recording_chunks(self, recording_id: str, track: str | None = None) -> AsyncIterator[bytes]:
        """The bytes of a finished recording's mix (or of one track), as they are read."""

    # forks: a participant's audio or the mix sent as RTP/SRTP to a destination
    @abc.abstractmethod
    async def add_fork(self, conference_id: str, source: str, destination: str, *,
                       srtp: bool = False, codec: str | None = None, label: str | None = None,
                       fork_id: str | None = None) -> dict:
        """Start sending `source` ("mix" or a leg id) to `destination` ("host:port"); the answer
        is the fork with `sdp` describing the stream (`a=crypto` with `srtp`). A refused
        destination is EngineError(403, "destination_forbidden")."""

    @abc.abstractmethod
    async def get_fork(self, conference_id: str, fork_id: str) -> dict: ...

    @abc.abstractmethod
    async def remove_fork(self, conference_id: str, fork_id: str) -> None: ...

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

    async def add_leg(self, conference_id: str, sdp: str, label: str | None = None, *,
                      noise_suppression: bool | None = None, auto_gain: bool | None = None) -> dict:
        return await self.engine.add_leg(conference_id, sdp, label,
                                         noise_suppression=noise_suppression, auto_gain=auto_gain)

    async def update_leg(self, conference_id: str, leg_id: str, muted: bool | None = None, *,
                         noise_suppression: bool | None = None, auto_gain: bool | None = None,
                         gains: dict[str, float | None] | None = None) -> dict:
        return self.engine.update_leg(conference_id, leg_id, muted, noise_suppression=noise_suppression,
                                      auto_gain=auto_gain, gains=gains)

    async def remove_leg(self, conference_id: str, leg_id: str) -> None:
        self.engine.remove_leg(conference_id, leg_id)

    async def reoffer_leg(self, conference_id: str, leg_id: str, sdp: str) -> dict:
        return await self.engine.reoffer_leg(conference_id, leg_id, sdp)

    async def stats(self) -> dict:
        return self.engine.stats()

    async def list_conferences(self) -> list[dict]:
        return self.engine.list_conferences()

    async def drain(self, timeout_s: float | None = None) -> dict:
        return self.engine.drain(timeout_s)

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

    async def start_recording(self, conference_id: str, *, format: str = "ogg",
                              tracks: str = "mix", recording_id: str | None = None) -> dict:
        return self.engine.start_recording(conference_id, format=format, tracks=tracks,
                                           recording_id=recording_id)

    async def get_recording(self, conference_id: str, recording_id: str) -> dict:
        return self.engine.get_recording(conference_id, recording_id)

    async def stop_recording(self, conference_id: str, recording_id: str) -> dict:
        return self.engine.stop_recording(conference_id, recording_id)

    async def recording_info(self, recording_id: str) -> dict:
        return self.engine.recording_info(recording_id)

    async def add_fork(self, conference_id: str, source: str, destination: str, *,
                       srtp: bool = False, codec: str | None = None, label: str | None = None,
                       fork_id: str | None = None) -> dict:
        return await self.engine.add_fork(conference_id, source, destination, srtp=srtp,
                                          codec=codec, label=label, fork_id=fork_id)

    async def get_fork(self, conference_id: str, fork_id: str) -> dict:
        return self.engine.get_fork(conference_id, fork_id)

    async def remove_fork(self, conference_id: str, fork_id: str) -> None:
        self.engine.remove_fork(conference_id, fork_id)

    async def recording_chunks(self, recording_id: str, track: str | None = None) -> AsyncIterator[bytes]:
        path = self.engine.recording_file(recording_id, track)
        with open(path, "rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield chunk


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
        if status >= 400:
            raise _error_of(status, raw, self.name)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise EngineError(502, "engine_bad_answer",
                              f"engine {self.name} answered {status} with non-JSON") from None

    async def create_conference(self, mode: str, conference_id: str | None = None) -> dict:
        body = {"mode": mode}
        if conference_id is not None:
            body["id"] = conference_id
        return await self._request("POST", "/conferences", body)

    async def get_conference(self, conference_id: str) -> dict:
        return await self._request("GET", f"/conferences/{conference_id}")

    async def delete_conference(self, conference_id: str) -> None:
        await self._request("DELETE", f"/conferences/{conference_id}")

    async def add_leg(self, conference_id: str, sdp: str, label: str | None = None, *,
                      noise_suppression: bool | None = None, auto_gain: bool | None = None) -> dict:
        body = {"sdp": sdp, "label": label, "noise_suppression": noise_suppression,
                "auto_gain": auto_gain}
        return await self._request("POST", f"/conferences/{conference_id}/legs",
                                   {k: v for k, v in body.items() if v is not None})

    async def update_leg(self, conference_id: str, leg_id: str, muted: bool | None = None, *,
                         noise_suppression: bool | None = None, auto_gain: bool | None = None,
                         gains: dict[str, float | None] | None = None) -> dict:
        body = {"muted": muted, "noise_suppression": noise_suppression, "auto_gain": auto_gain,
                "gains": gains}
        return await self._request("PATCH", f"/conferences/{conference_id}/legs/{leg_id}",
                                   {k: v for k, v in body.items() if v is not None})

    async def remove_leg(self, conference_id: str, leg_id: str) -> None:
        await self._request("DELETE", f"/conferences/{conference_id}/legs/{leg_id}")

    async def reoffer_leg(self, conference_id: str, leg_id: str, sdp: str) -> dict:
        return await self._request("PUT", f"/conferences/{conference_id}/legs/{leg_id}",
                                   {"sdp": sdp})

    async def stats(self) -> dict:
        return await self._request("GET", "/stats")

    async def list_conferences(self) -> list[dict]:
        return (await self._request("GET", "/conferences"))["conferences"]

    async def drain(self, timeout_s: float | None = None) -> dict:
        return await self._request("POST", "/drain", {} if timeout_s is None else {"timeout_s": timeout_s})

    async def add_player(self, conference_id: str, *, tone: float | None = None,
                         file: str | None = None, loop: bool = False, seconds: float | None = None,
                         label: str | None = None, player_id: str | None = None) -> dict:
        body = {"tone": tone, "file": file, "loop": loop, "seconds": seconds, "label": label,
                "id": player_id}
        return await self._request("POST", f"/conferences/{conference_id}/players",
                                   {k: v for k, v in body.items() if v is not None})

    async def get_player(self, conference_id: str, player_id: str) -> dict:
        return await self._request("GET", f"/conferences/{conference_id}/players/{player_id}")

    async def update_player(self, conference_id: str, player_id: str,
                            muted: bool | None = None) -> dict:
        body = {} if muted is None else {"muted": muted}
        return await self._request("PATCH", f"/conferences/{conference_id}/players/{player_id}",
                                   body)

    async def remove_player(self, conference_id: str, player_id: str) -> None:
        await self._request("DELETE", f"/conferences/{conference_id}/players/{player_id}")

    async def start_recording(self, conference_id: str, *, format: str = "ogg",
                              tracks: str = "mix", recording_id: str | None = None) -> dict:
        body = {"format": format, "tracks": tracks}
        if recording_id is not None:
            body["id"] = recording_id
        return await self._request("POST", f"/conferences/{conference_id}/recordings", body)

    async def get_recording(self, conference_id: str, recording_id: str) -> dict:
        return await self._request("GET", f"/conferences/{conference_id}/recordings/{recording_id}")

    async def stop_recording(self, conference_id: str, recording_id: str) -> dict:
        return await self._request("DELETE",
                                   f"/conferences/{conference_id}/recordings/{recording_id}")

    async def recording_info(self, recording_id: str) -> dict:
        return await self._request("GET", f"/recordings/{recording_id}")

    async def add_fork(self, conference_id: str, source: str, destination: str, *,
                       srtp: bool = False, codec: str | None = None, label: str | None = None,
                       fork_id: str | None = None) -> dict:
        body = {"source": source, "destination": destination, "srtp": srtp, "codec": codec,
                "label": label, "id": fork_id}
        return await self._request("POST", f"/conferences/{conference_id}/forks",
                                   {k: v for k, v in body.items() if v is not None})

    async def get_fork(self, conference_id: str, fork_id: str) -> dict:
        return await self._request("GET", f"/conferences/{conference_id}/forks/{fork_id}")

    async def remove_fork(self, conference_id: str, fork_id: str) -> None:
        await self._request("DELETE", f"/conferences/{conference_id}/forks/{fork_id}")

    async def recording_chunks(self, recording_id: str, track: str | None = None) -> AsyncIterator[bytes]:
        path = f"/recordings/{recording_id}" + (f"/tracks/{track}" if track else "") + "/file"
        try:
            async with self._client().get(self.base_url + path,
                                          timeout=aiohttp.ClientTimeout(total=None,
                                                                        sock_read=REMOTE_TIMEOUT_S)) as response:
                if response.status >= 400:
                    raise _error_of(response.status, await response.read(), self.name)
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise EngineError(503, "engine_unavailable",
                              f"engine {self.name} did not answer: {exc!r}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
