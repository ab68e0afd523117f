"""Real `voicemix` processes for the reliability tests (failover, stalls): each subcommand in its own
process started as `python -m mixer.cli ...`, its output in a log file, stopped whatever happens."""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "reliability-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
READY_TIMEOUT_S = 30.0


class Service:
    """One `voicemix` subcommand in its own process, its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict | None = None) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "mixer.cli", *argv]
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> "Service":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, cwd=ROOT)
        return self

    async def wait_ready(self, probe: httpx.AsyncClient, url: str) -> None:
        """Until GET `url` answers 200 (the event loop keeps running: participants keep talking).
        `probe` is made beforehand: making an httpx client loads CA certificates, a stall of
        50-250 ms on this loop that the participants' 20 ms clock would show as a gap."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n"
                                     f"{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await probe.get(url, timeout=1.0)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not ready after {READY_TIMEOUT_S} s:\n"
                             f"{self.log_path.read_text()[-3000:]}")

    async def kill(self) -> None:
        """SIGKILL: no clean-up of any kind in the process."""
        self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait)

    def stop(self) -> None:
        """SIGINT: stop at once (SIGTERM would make an engine drain its conferences first)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def media_ports() -> str:
    """A private slice of UDP ports below Linux's ephemeral range (the engine's allocator skips
    ports another process holds, so a collision with a parallel run costs nothing)."""
    low = random.randrange(20000, 32000, 2)
    return f"{low}-{low + 199}"


def engine_service(log_dir: Path, name: str, control_port: int, ports: str) -> Service:
    """An engine whose data (recordings) is in `log_dir/engine-data`: a replacement engine on the
    same directory repairs what a killed one left."""
    return Service(name, ["engine", "--control", f"127.0.0.1:{control_port}", "--ports", ports],
                   log_dir, env={"VOICEMIX_DATA_DIR": str(log_dir / "engine-data")})


def controller_service(log_dir: Path, name: str, port: int, data_dir: Path, engine_url: str,
                       redis_url: str | None = None, env: dict | None = None) -> Service:
    argv = ["controller", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
            "--insecure-http", "--engine", engine_url]
    if redis_url:
        argv += ["--redis-url", redis_url]
    return Service(name, argv, log_dir, env={
        "VOICEMIX_ADMIN_KEY": ADMIN_KEY, "VOICEMIX_TURN_ENABLED": "false", **(env or {})})


@contextlib.contextmanager
def services():
    """Every Service started inside is stopped at the end, whatever happens."""
    started: list[Service] = []
    try:
        yield started
    finally:
        for service in reversed(started):
            service.stop()


# ------------------------------------------------------------------------------------- helpers
async def user(http: httpx.AsyncClient, identity: str) -> dict:
    response = await http.post("/v1/identities", json={"id": identity}, headers=ADMIN)
    assert response.status_code in (201, 409), response.text
    response = await http.post(f"/v1/identities/{identity}/tokens",
                               json={"scopes": ["voip"], "ttl_s": 600}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


@dataclass
class Deployment:
    """An engine and a controller in front of it, both answering."""

    engine: Service
    engine_url: str
    control_port: int
    media_ports: str
    controller: Service
    base_url: str


async def engine_and_controller(log_dir: Path, started: list[Service], probe: httpx.AsyncClient,
                                controller_env: dict | None = None) -> Deployment:
    """Start `voicemix engine` and `voicemix controller --engine <it>` (added to `started`, so
    `services()` stops them) and wait until both answer."""
    from controller.testing import free_port

    control_port, api_port, ports = free_port(), free_port(), media_ports()
    engine_url = f"http://127.0.0.1:{control_port}"
    engine = engine_service(log_dir, "engine", control_port, ports).start()
    started.append(engine)
    controller = controller_service(log_dir, "controller", api_port, log_dir / "data", engine_url,
                                    env=controller_env).start()
    started.append(controller)
    await engine.wait_ready(probe, f"{engine_url}/stats")
    base = f"http://127.0.0.1:{api_port}"
    await controller.wait_ready(probe, f"{base}/v1/health")
    return Deployment(engine, engine_url, control_port, ports, controller, base)

