"""Helpers to run a real controller on loopback for the tests and the benchmark.

`running_controller()` starts an in-process engine (or uses the engine clients given), a
`ControllerServer` over HTTPS with its self-signed certificate on port 0, and an httpx client that
trusts exactly that certificate. `RestParticipant` joins a call through the REST API with a real
`SimulatedParticipant` (real UDP RTP).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import uvloop

from mixer.engine.client import EngineClient, InProcessEngine
from controller.server import ControllerServer
from controller.settings import ControllerSettings
from mixer.codec import MIX_RATE
from mixer.engine.engine import Engine
from mixer.settings import EngineSettings
from mixer.sim.participant import SimulatedParticipant


@dataclass
class RunningController:
    server: ControllerServer
    client: httpx.AsyncClient
    engine: Engine | None

    @property
    def admin(self) -> dict:
        return {"Authorization": f"Bearer {self.server.settings.admin_key}"}

    async def user(self, identity: str, scopes: tuple[str, ...] = ("voip",), ttl_s: int = 600) -> dict:
        """Create `identity` (if new) and return Authorization headers with a fresh token."""
        response = await self.client.post("/v1/identities", json={"id": identity}, headers=self.admin)
        assert response.status_code in (201, 409), response.text
        response = await self.client.post(f"/v1/identities/{identity}/tokens",
                                          json={"scopes": list(scopes), "ttl_s": ttl_s},
                                          headers=self.admin)
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}


def https_client(server: ControllerServer, timeout_s: float = 10.0) -> httpx.AsyncClient:
    """An httpx client for `server` that trusts its certificate (and nothing else)."""
    if server.settings.insecure_http:
        return httpx.AsyncClient(base_url=server.url, timeout=timeout_s)
    context = ssl.create_default_context(cafile=str(server.cert_path))
    return httpx.AsyncClient(base_url=server.url, verify=context, timeout=timeout_s)


@contextlib.asynccontextmanager
async def running_controller(data_dir: Path, engines: list[EngineClient] | None = None,
                             engine_settings: dict | None = None,
                             **settings) -> AsyncIterator[RunningController]:
    """`engine_settings`: EngineSettings fields of the in-process engine (e.g. forks to loopback,
    which tests turn on)."""
    engine = None
    if engines is None:
        engine = Engine(EngineSettings(data_dir=data_dir, **(engine_settings or {})))
        engine.start()
        engines = [InProcessEngine(engine)]
    config = ControllerSettings(data_dir=data_dir, listen="127.0.0.1:0", **settings)
    server = ControllerServer(config, engines, announce=lambda _line: None)
    await server.start()
    client = https_client(server)
    try:
        yield RunningController(server, client, engine)
    finally:
        await client.aclose()
        await server.stop()
        if engine is not None:
            engine.stop()


class RestParticipant:
    """A SimulatedParticipant that joins a call by POSTing its offer to the controller."""

    def __init__(self, participant: SimulatedParticipant, headers: dict) -> None:
        self.sim = participant
        self.headers = headers
        self.id: str | None = None

    async def join(self, client: httpx.AsyncClient, call_id: str) -> httpx.Response:
        offer = await self.sim.offer()
        response = await client.post(f"/v1/calls/{call_id}/participants", json={"sdp": offer},
                                     headers=self.headers)
        if response.status_code == 201:
            self.sim.accept(response.json()["sdp"])
            self.id = response.json()["id"]
        return response


async def collect_events(client: httpx.AsyncClient, path: str, headers: dict, out: list) -> None:
    """Append every Server-Sent Event of `path` to `out` (as dicts) until the stream ends."""
    async with client.stream("GET", path, headers=headers, timeout=30.0) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))


def continuous_tone(freq_hz: float, seconds: float, amplitude: float = 0.2) -> np.ndarray:
    t = np.arange(int(seconds * MIX_RATE)) / MIX_RATE
    return (np.sin(2 * np.pi * freq_hz * t) * amplitude * 32767).astype(np.int16)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis_server():
    """A real redis-server on a free loopback port, no persistence; yields its URL (None when the
    binary is absent)."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as workdir:
        for _attempt in range(5):
            port = free_port()
            process = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                 "no", "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and process.poll() is None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                    break
                time.sleep(0.05)
            else:
                process.kill()
                process.wait()
                continue
            if process.poll() is not None:
                continue
            try:
                yield f"redis://127.0.0.1:{port}/0"
            finally:
                process.terminate()
                process.wait(5)
            return
        raise RuntimeError("redis-server did not start")


class ControllerThread:
    """A controller (with an in-process engine) on its own uvloop loop in a thread, for
    synchronous clients such as Schemathesis. `with ControllerThread(dir) as c:` then `c.url`,
    `c.cert_path`, `c.admin_key`, `c.user_token`."""

    def __init__(self, data_dir: Path, **settings) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self.url = self.cert_path = self.admin_key = self.user_token = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="controller", daemon=True)

    def _run(self) -> None:
        try:
            uvloop.run(self._main())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with running_controller(self.data_dir, **self.settings) as c:
            self.url, self.cert_path = c.server.url, str(c.server.cert_path)
            self.admin_key = c.server.settings.admin_key
            self.user_token = (await c.user("fuzz-user"))["Authorization"].split()[1]
            self.server = c.server
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> "ControllerThread":
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
