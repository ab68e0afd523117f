"""Janus AudioBridge (Debian's `janus` package) as a peer for side-by-side benchmarks.

`JanusProcess` starts `janus` on loopback with a configuration of its own (only the AudioBridge
plugin and the plain-HTTP transport; everything else Janus ships stays off), and `JanusSession`
speaks its HTTP API: create a room with the plugin's defaults, and join participants as *plain
RTP participants* (the AudioBridge `join` request with an `rtp` object: Janus sends the room's
mix to that address and answers with the address to send to), so the same simulated clients that
talk to voicemix talk to Janus, and what they receive is scored the same way.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import aiohttp

PLUGIN = "janus.plugin.audiobridge"
JANUS_CONFIG = """general: {{
    configs_folder = "{folder}"
    plugins_folder = "/usr/lib/x86_64-linux-gnu/janus/plugins"
    transports_folder = "/usr/lib/x86_64-linux-gnu/janus/transports"
    events_folder = "/usr/lib/x86_64-linux-gnu/janus/events"
    loggers_folder = "/usr/lib/x86_64-linux-gnu/janus/loggers"
    debug_level = 3
    admin_secret = "{secret}"
}}
media: {{
    rtp_port_range = "{ports}"
}}
nat: {{
    ice_lite = true
}}
plugins: {{
    disable = "libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_videoroom.so,libjanus_voicemail.so"
}}
transports: {{
    disable = "libjanus_websockets.so,libjanus_pfunix.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_rabbitmq.so"
}}
events: {{
    broadcast = false
}}
loggers: {{
    disable = "libjanus_jsonlog.so"
}}
"""
HTTP_CONFIG = """general: {{
    base_path = "/janus"
    http = true
    port = {port}
    interface = "lo"
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_http = false
}}
"""
AUDIOBRIDGE_CONFIG = """general: {{
    rtp_port_range = "{ports}"
    local_ip = "127.0.0.1"
}}
"""


class JanusError(RuntimeError):
    """Janus is missing, did not start, or refused a request."""


class JanusProcess:
    """`janus` on loopback with only the AudioBridge plugin and the HTTP transport."""

    def __init__(self, http_port: int = 8089, rtp_ports: str = "47000-47999") -> None:
        if shutil.which("janus") is None:
            raise JanusError("janus is not installed (apt-get install janus)")
        self.folder = Path(tempfile.mkdtemp(prefix="voicemix-janus-"))
        (self.folder / "janus.jcfg").write_text(JANUS_CONFIG.format(
            folder=self.folder, secret=secrets.token_hex(8), ports=rtp_ports))
        (self.folder / "janus.transport.http.jcfg").write_text(HTTP_CONFIG.format(port=http_port))
        (self.folder / "janus.plugin.audiobridge.jcfg").write_text(
            AUDIOBRIDGE_CONFIG.format(ports=rtp_ports))
        self.url = f"http://127.0.0.1:{http_port}/janus"
        self.log = open(self.folder / "janus.log", "wb")
        self.process = subprocess.Popen(
            ["janus", "-C", str(self.folder / "janus.jcfg"), "-F", str(self.folder)],
            stdout=self.log, stderr=subprocess.STDOUT)

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                if self.process.poll() is not None:
                    raise JanusError(f"janus exited: {(self.folder / 'janus.log').read_text()[-2000:]}")
                try:
                    async with http.get(self.url + "/info") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise JanusError("janus did not answer on its HTTP transport")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class JanusSession:
    """One Janus API session (janus: create) with AudioBridge handles attached on demand."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = aiohttp.ClientSession()
        self.session: int | None = None

    async def _post(self, path: str, body: dict) -> dict:
        body = {**body, "transaction": secrets.token_hex(6)}
        async with self.http.post(self.url + path, json=body) as response:
            answer = await response.json(content_type=None)
        if answer.get("janus") == "error":
            raise JanusError(str(answer.get("error")))
        return answer

    async def open(self) -> JanusSession:
        self.session = (await self._post("", {"janus": "create"}))["data"]["id"]
        return self

    async def attach(self) -> int:
        answer = await self._post(f"/{self.session}", {"janus": "attach", "plugin": PLUGIN})
        return answer["data"]["id"]

    async def request(self, handle: int, body: dict) -> dict:
        """A synchronous plugin request (create, list, ...): the plugin's answer."""
        answer = await self._post(f"/{self.session}/{handle}", {"janus": "message", "body": body})
        data = answer.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(data["error"])
        return data

    async def create_room(self, room: int, **settings) -> None:
        """A room with the plugin's defaults unless `settings` says otherwise (plain RTP
        participants allowed: a permission, not an audio setting)."""
        handle = await self.attach()
        await self.request(handle, {"request": "create", "room": room, "allow_rtp_participants": True,
                                    **settings})

    async def join_rtp(self, room: int, display: str, ip: str, port: int, payload_type: int = 111,
                       audiolevel_ext: int | None = 1, codec: str = "opus") -> tuple[str, int]:
        """Join `room` as a plain RTP participant that receives at ip:port; returns where to send."""
        handle = await self.attach()
        rtp = {"ip": ip, "port": port, "payload_type": payload_type}
        if audiolevel_ext:
            rtp["audiolevel_ext"] = audiolevel_ext
        body = {"request": "join", "room": room, "display": display, "rtp": rtp}
        if codec != "opus":
            body["codec"] = codec.lower()
        await self._post(f"/{self.session}/{handle}", {"janus": "message", "body": body})
        for _ in range(50):  # the join is asynchronous: its event comes on the long poll
            async with self.http.get(f"{self.url}/{self.session}?maxev=5") as response:
                events = await response.json(content_type=None)
            for event in events if isinstance(events, list) else [events]:
                data = event.get("plugindata", {}).get("data", {})
                if event.get("sender") == handle and "rtp" in data:
                    return data["rtp"]["ip"], int(data["rtp"]["port"])
                if event.get("sender") == handle and "error" in data:
                    raise JanusError(data["error"])
        raise JanusError("no answer to the RTP join")

    async def close(self) -> None:
        if self.session is not None:
            try:
                await self._post(f"/{self.session}", {"janus": "destroy"})
            except (JanusError, aiohttp.ClientError):
                pass
        await self.http.close()
