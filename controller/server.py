"""One controller assembled from settings, served by uvicorn (httptools, on the running loop).

`ControllerServer` is what `voicemix controller`, `voicemix serve`, the tests and the benchmark
all run: the same store, registry, tokens, call service and app, on a socket bound before uvicorn
starts (port 0 works: the bound port is in `.port`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

import uvicorn

from controller.app import create_app
from controller.calls import CallService
from mixer.engine.client import EngineClient, EnginePins, HttpEngine
from controller.events import EventHub
from controller.metrics import ControllerMetrics
from controller.registry import CallRegistry, MemoryRegistry, RedisRegistry
from controller.settings import ControllerSettings, ensure_secrets
from controller.store import Store, database_for
from controller.tls import fingerprint_sha256, self_signed
from controller.tokens import TokenAuthority

log = logging.getLogger("voicemix.controller")

PINS_FILE = "engine-pins.json"  # engine control certificates pinned on first use


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class _UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling: the command that owns the loop stops it."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class ControllerServer:
    """The controller over HTTPS (or plain HTTP when `insecure_http`); `await start()` / `stop()`.

    `engines`: clients of the engines to place calls on; when None, `settings.engines` URLs are
    used as remote engines.
    """

    def __init__(self, settings: ControllerSettings, engines: list[EngineClient] | None = None,
                 announce=print) -> None:
        self.settings = settings
        self.announce = announce
        self.generated = ensure_secrets(settings)
        if engines is None:
            if not settings.engines:
                raise ValueError("no engine: give --engine URL, or run `voicemix serve`")
            pins = EnginePins(settings.data_dir / PINS_FILE)
            engines = [HttpEngine(url, settings.control_secret, pins) for url in settings.engines]
        self.store = Store(database_for(settings.database_url, settings.data_dir,
                                        settings.database_pool_size, settings.database_timeout_s))
        self.registry: CallRegistry = (RedisRegistry(settings.redis_url) if settings.redis_url
                                       else MemoryRegistry())
        self.tokens = TokenAuthority(settings.token_secret, self.store, settings.token_leeway_s,
                                     settings.revocation_cache_s)
        self.events = EventHub(settings.redis_url)
        self.calls = CallService(settings, self.store, self.registry, engines, self.events)
        self.metrics = ControllerMetrics(self.calls)
        self.app = create_app(settings, self.calls, self.store, self.tokens, self.metrics)
        self.metrics_port: int | None = None
        self.cert_path: Path | None = None
        self.key_path: Path | None = None
        self.fingerprint: str | None = None
        self._server: _UvicornServer | None = None
        self._main: asyncio.Task | None = None
        self._socket: socket.socket | None = None
        self.host, self.port = split_hostport(settings.listen)

    @property
    def scheme(self) -> str:
        return "http" if self.settings.insecure_http else "https"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def _tls(self) -> None:
        settings = self.settings
        if settings.tls_cert and settings.tls_key:
            self.cert_path, self.key_path = settings.tls_cert, settings.tls_key
        else:
            self.cert_path, self.key_path, created = self_signed(settings.data_dir, [self.host])
            if created:
                self.announce(f"voicemix controller: created a self-signed certificate {self.cert_path}")
        self.fingerprint = fingerprint_sha256(self.cert_path)
        self.announce(f"voicemix controller: certificate SHA-256 fingerprint {self.fingerprint}")

    async def start(self) -> None:
        if "admin_key" in self.generated:
            self.announce(f"voicemix controller: generated admin key {self.settings.admin_key} "
                          f"(kept in {self.settings.data_dir / 'secrets.json'})")
        if not self.settings.insecure_http:
            self._tls()
        await self.store.open()  # connect, apply migrations (fails the start if it cannot)
        log.info("store: %s at schema version %d", self.store.db.describe(),
                 self.store.schema_version)
        await self.events.start()
        await self.calls.start()  # with Redis: this controller's lease, adoption of orphaned calls
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.set_inheritable(True)
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, loop="none", http="httptools", lifespan="off", log_level="warning",
            access_log=False, ws="none", timeout_graceful_shutdown=2, log_config=None,
            ssl_certfile=None if self.settings.insecure_http else str(self.cert_path),
            ssl_keyfile=None if self.settings.insecure_http else str(self.key_path))
        self._server = _UvicornServer(config)
        self._main = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._main.done():  # startup failed: uvicorn logged why
                self._main.result()
                raise OSError(f"controller could not start on {self.url}")
            await asyncio.sleep(0.01)
        if self.settings.metrics_listen:
            self.metrics_port = await self.metrics.listen(self.settings.metrics_listen)
        log.info("controller started: %s (engines %s, registry %s, store %s)", self.url,
                 ", ".join(self.calls.engines), "redis" if self.settings.redis_url else "memory",
                 self.store.dialect)

    async def stop(self) -> None:
        await self.metrics.close()
        await self.calls.close()
        self.calls.events.close_all()  # open event streams end, so connections can close
        if self._server is not None:
            self._server.should_exit = True
            if self._main is not None:
                await self._main
            self._server = None
        await self.events.stop()
        await self.registry.close()
        await self.store.close()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        log.info("controller stopped: %s", self.url)
