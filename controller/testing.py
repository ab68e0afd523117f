"""Helpers to run a real controller on loopback for the tests and the benchmark.

`running_controller()` starts an in-process engine (or uses the engine clients given), a
`ControllerServer` over HTTPS with its self-signed certificate on port 0, and an httpx client that
trusts exactly that certificate. `RestParticipant` joins a call through the REST API with a real
`SimulatedParticipant` (real UDP RTP). `redis_server()` and `PostgresServer` run the real servers
the shared registry and the shared store talk to, on loopback in temporary directories.
"""
from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
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


def postgres_bin_dir() -> Path | None:
    """Where PostgreSQL's server programs are: Debian keeps them out of PATH, in
    /usr/lib/postgresql/<version>/bin (the newest is taken); elsewhere, where `initdb` on PATH
    really lives."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")])
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


class PostgresServer:
    """A real PostgreSQL server in a temporary directory on a free loopback port (no Unix
    socket outside that directory), with password authentication for one superuser.

    PostgreSQL refuses to run as root: as root the server (and initdb) run as the `postgres`
    system user that Debian's package creates. `durable=False` (tests) turns fsync off: a clean
    stop still keeps every commit, only a machine crash would lose them. `start()` again after
    `stop()` restarts the same data directory on the same port (the database-outage tests).
    """

    USER = "voicemix"

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.password = secrets.token_hex(12)
        self.workdir = Path(tempfile.mkdtemp(prefix="voicemix-pg-"))
        self.data_dir = self.workdir / "data"
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._run_as = "postgres" if os.geteuid() == 0 else None
        self._initdb()

    def _owned(self, path: Path) -> None:
        if self._run_as:
            shutil.chown(path, self._run_as, self._run_as)

    def _initdb(self) -> None:
        self._owned(self.workdir)
        password_file = self.workdir / "password"
        password_file.write_text(self.password + "\n")
        self._owned(password_file)
        subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.USER,
             "--pwfile", str(password_file), "--auth-local=trust", "--auth-host=scram-sha-256",
             "-E", "UTF8", "--locale=C", "--no-sync"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, user=self._run_as,
            cwd=self.workdir)
        password_file.unlink()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout_s: float = 20.0) -> "PostgresServer":
        settings = ["listen_addresses=127.0.0.1", f"unix_socket_directories={self.workdir}",
                    "max_connections=200", "shared_buffers=32MB", "log_min_messages=warning"]
        if not self.durable:
            settings += ["fsync=off", "full_page_writes=off"]
        for _attempt in range(5):
            port = self.port or free_port()
            command = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(port)]
            for setting in settings:
                command += ["-c", setting]
            log = open(self.workdir / "server.log", "ab")
            self.process = subprocess.Popen(command, stdout=log, stderr=log, user=self._run_as,
                                            cwd=self.workdir)
            log.close()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self.process.poll() is None:
                ready = subprocess.run(
                    [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
                    check=False)
                if ready.returncode == 0:
                    self.port = port
                    return self
                time.sleep(0.05)
            self._halt()
            if self.port is not None:  # a restart keeps its port: no other choice to try
                break
        raise RuntimeError(f"postgres did not start; log: {self.workdir / 'server.log'}")

    def _halt(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: ends sessions, checkpoints
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def stop(self) -> None:
        """Fast shutdown: connected clients are disconnected, committed data stays."""
        self._halt()

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER, "-d", database, "-c", sql],
            check=True, capture_output=True, text=True,
            env={**os.environ, "PGPASSWORD": self.password})
        return result.stdout

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        self._halt()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


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
