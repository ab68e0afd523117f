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
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from mixer.certificates import fingerprint_of, normalize_fingerprint
from mixer.datadir import write_secret
from mixer.engine.errors import EngineError

if TYPE_CHECKING:  # the in-process client is handed an Engine; the HTTP one never loads it
    from mixer.engine.engine import Engine

__all__ = ["EngineClient", "EngineError", "EnginePins", "HttpEngine", "InProcessEngine",
           "engine_url"]

log = logging.getLogger("voicemix.controller")

REMOTE_TIMEOUT_S = 5.0
CHUNK_BYTES = 64 * 1024
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def engine_url(url: str) -> tuple[str, str | None]:
    """An engine URL as configured -> (its base URL, the pinned fingerprint or None).

    `https://10.0.0.5:8790#sha256=AB:CD:...` pins the engine's control certificate; the fragment
    is never sent (and is not part of the engine's name in the call registry). ValueError for a
    malformed pin, or for plain http:// to a host that is not loopback (an engine there serves
    only HTTPS, and the secret must not cross a network in clear)."""
    base, _, fragment = url.partition("#")
    base = base.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{base}: an engine URL is http(s)://host:port")
    pin = None
    if fragment:
        name, _, value = fragment.partition("=")
        if name.lower() not in ("sha256", "sha-256") or not value:
            raise ValueError(f"{base}: pin the engine as #sha256=AB:CD:... (its control "
                             "certificate's fingerprint)")
        pin = normalize_fingerprint(value)
        if parts.scheme != "https":
            raise ValueError(f"{base}: a pinned engine is reached over https://")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS \
            and not parts.hostname.startswith("127."):
        raise ValueError(f"{base}: an engine off loopback is reached over https:// (it serves its "
                         "control API over TLS there)")
    return base, pin


class EnginePins:
    """Engine control certificates pinned on first use, kept in a JSON file (0600): base URL ->
    SHA-256 fingerprint. A pin given in the URL wins over this; a certificate that differs from
    its pin is refused until the pin is removed from the file (or corrected in the URL)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._pins: dict[str, str] = json.loads(self.path.read_text())
        except FileNotFoundError:
            self._pins = {}

    def get(self, base_url: str) -> str | None:
        return self._pins.get(base_url)

    def pin(self, base_url: str, fingerprint: str) -> None:
        self._pins[base_url] = fingerprint
        write_secret(self.path, json.dumps(self._pins, indent=1, sort_keys=True).encode())


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
    async def add_leg(self, conference_id: str, sdp: str, label: str | None = None) -> dict: ...

    @abc.abstractmethod
    async def update_leg(self, conference_id: str, leg_id: str, muted: bool | None = None) -> dict: ...

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

    async def add_leg(self, conference_id: str, sdp: str, label: str | None = None) -> dict:
        return await self.engine.add_leg(conference_id, sdp, label)

    async def update_leg(self, conference_id: str, leg_id: str, muted: bool | None = None) -> dict:
        return self.engine.update_leg(conference_id, leg_id, muted)

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
    """An engine in another process, through `mixer/engine/control.py`'s HTTP/JSON API.

    `secret`: the engine's control secret, sent as a bearer token on every request. Over https://
    the engine's certificate must match its pin: the one in the URL (`#sha256=...`), else the one
    `pins` remembers, else (first use) the one it presents now, which `pins` then keeps. Nothing,
    the secret included, is sent before the certificate has matched."""

    def __init__(self, base_url: str, secret: str | None = None,
                 pins: EnginePins | None = None) -> None:
        self.base_url, self.pin = engine_url(base_url)
        self.name = self.base_url
        self._headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self._pins = pins
        self._session: aiohttp.ClientSession | None = None
        self._fingerprint: aiohttp.Fingerprint | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REMOTE_TIMEOUT_S), headers=self._headers)
        return self._session

    async def _ssl(self) -> aiohttp.Fingerprint | None:
        """What the TLS connection must present (None over plain http://)."""
        if not self.base_url.startswith("https:"):
            return None
        if self._fingerprint is None:
            pin = self.pin or (self._pins.get(self.base_url) if self._pins is not None else None)
            if pin is None:
                pin = await self._first_use()
            self._fingerprint = aiohttp.Fingerprint(bytes.fromhex(pin.replace(":", "")))
        return self._fingerprint

    async def _first_use(self) -> str:
        """Trust on first use: the certificate the engine presents now, kept in `pins`."""
        parts = urlsplit(self.base_url)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # only its fingerprint is taken, nothing is sent
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, parts.port or 443, ssl=context),
                REMOTE_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            raise EngineError(503, "engine_unavailable",
                              f"engine {self.name} did not answer: {exc!r}") from exc
        try:
            fingerprint = fingerprint_of(writer.get_extra_info("ssl_object").getpeercert(True))
        finally:
            writer.close()
        if self._pins is not None:
            self._pins.pin(self.base_url, fingerprint)
        log.warning("engine %s: pinned its control certificate on first use (SHA-256 %s); put "
                    "#sha256=<fingerprint> in its URL to check it from the start", self.name,
                    fingerprint)
        return fingerprint

    async def _request(self, method: str, path: str, body: dict | None = None):
        try:
            async with self._client().request(method, self.base_url + path, json=body,
                                              ssl=await self._ssl()) as response:
                raw = await response.read()
                status = response.status
        except aiohttp.ServerFingerprintMismatch as exc:
            raise self._mismatch(exc) from None
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
            async with self._client().get(self.base_url + path, ssl=await self._ssl(),
                                          timeout=aiohttp.ClientTimeout(total=None,
                                                                        sock_read=REMOTE_TIMEOUT_S)) as response:
                if response.status >= 400:
                    raise _error_of(response.status, await response.read(), self.name)
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    yield chunk
        except aiohttp.ServerFingerprintMismatch as exc:
            raise self._mismatch(exc) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise EngineError(503, "engine_unavailable",
                              f"engine {self.name} did not answer: {exc!r}") from exc

    def _mismatch(self, exc: aiohttp.ServerFingerprintMismatch) -> EngineError:
        got = ":".join(f"{b:02X}" for b in exc.got)
        log.error("engine %s presented a control certificate (SHA-256 %s) that is not the one "
                  "pinned: refused (a new certificate? update the pin)", self.name, got)
        return EngineError(503, "engine_certificate_mismatch",
                           f"engine {self.name}: its certificate does not match the pinned one")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
