"""Fuzz targets for the running engine: the HTTP control API and a live leg's UDP receive path.

Both talk to the real thing over loopback sockets: requests over HTTP to `mixer.engine.control`,
datagrams into a leg's UDP port. The checks are the engine's promises: no 500s and every error in
the shared shape; no port held without a leg; every datagram counted exactly once (accepted or a
drop reason); nothing raised out of the protocol callback; a neighbour leg's packets untouched.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from mixer import _rtp
from mixer.codec import FrameEncoder
from mixer.engine.control import MAX_BODY_BYTES, start_control_api
from mixer.engine.drain import Drain
from mixer.engine.engine import Engine
from mixer.rtp.rtcp import RtcpError, is_rtcp, parse_compound
from mixer.rtp.srtp import SrtpContext
from mixer.sdp import offer_audio, parse
from mixer.sdp.crypto import parse_crypto
from mixer.settings import EngineSettings
from tests.fuzz.registry import InvariantBroken, target

FUZZ_PORTS = "46000-46999"  # a range of its own, so a fuzz run does not crowd other engines


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise InvariantBroken(what)


# ----------------------------------------------------------------------------------- control API
_ROUTES = (  # (method, path template); {c} a conference id, {l} a leg id
    ("POST", "/conferences"),
    ("GET", "/conferences/{c}"),
    ("DELETE", "/conferences/{c}"),
    ("POST", "/conferences/{c}/legs"),
    ("PATCH", "/conferences/{c}/legs/{l}"),
    ("DELETE", "/conferences/{c}/legs/{l}"),
    ("GET", "/stats"),
    ("PUT", "/conferences/{c}"),
    ("GET", "/conferences"),
    ("POST", "/drain"),
    ("GET", "/metrics"),
    ("POST", "/conferences/{c}/players"),
    ("PATCH", "/conferences/{c}/players/{l}"),
    ("DELETE", "/conferences/{c}/players/{l}"),
    ("POST", "/conferences/{c}/recordings"),
    ("DELETE", "/conferences/{c}/recordings/{l}"),
    ("GET", "/recordings/{l}"),
    ("GET", "/recordings/{l}/file"),
    ("POST", "/conferences/{c}/forks"),
    ("DELETE", "/conferences/{c}/forks/{l}"),
)
_IDS = ("c0", "c1", "c2", "")


def _control_seeds() -> list[bytes]:
    offer, _ = offer_audio(local_ip="127.0.0.1", local_port=30000)
    return [bytes([0, 0, 0]) + b'{"mode": "mcu", "id": "c0"}',
            bytes([3, 0, 0]) + json.dumps({"sdp": offer, "label": "x"}).encode(),
            bytes([4, 0, 0]) + b'{"muted": true}',
            # voice processing options and a listener's gains (the talker id rarely exists: 404)
            bytes([4, 0, 0]) + b'{"noise_suppression": true, "auto_gain": false, "gains": {"c0": -6}}',
            bytes([3, 0, 0]) + json.dumps({"sdp": offer, "auto_gain": True}).encode(),
            bytes([6, 0, 0]),
            bytes([8, 0, 0]) + b'{"tone": 440, "seconds": 1}',
            bytes([11, 0, 0]) + b'{"format": "wav", "tracks": "mix+participants"}',
            # media is bound to loopback: a fork the fuzzer aims at a public address cannot leave
            bytes([15, 0, 0]) + b'{"source": "mix", "destination": "127.0.0.1:5004", "srtp": true}']


class _EngineThread:
    """An engine and its control API on a loop in a background thread."""

    def __init__(self, settings: EngineSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict] = []
        self.loop.set_exception_handler(lambda loop, context: self.errors.append(context))
        ready = threading.Event()
        self.engine: Engine | None = None
        self.port = 0

        async def start() -> None:
            self.engine = Engine(settings)
            self.engine.start()
            _, self.port = await start_control_api(self.engine)
            ready.set()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            self.loop.run_forever()

        threading.Thread(target=main, daemon=True, name="fuzz-engine").start()
        if not ready.wait(10):
            raise RuntimeError("engine did not start")

    def call(self, fn, *args):
        """Run `fn(*args)` on the engine's loop and wait for it (state reads without races)."""
        done = threading.Event()
        box = {}

        def run() -> None:
            box["value"] = fn(*args)
            done.set()
        self.loop.call_soon_threadsafe(run)
        done.wait(10)
        return box.get("value")


@target("control_api", "engine control API over real HTTP: never 500, errors in the shared shape, "
        "ports in use == legs", seeds=_control_seeds, max_len=8192)
def control_api_target():
    settings = EngineSettings(media_ports=FUZZ_PORTS, max_conferences=8, max_legs_per_conference=3,
                              data_dir=Path(tempfile.mkdtemp(prefix="voicemix-fuzz-")))
    server = _EngineThread(settings)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    state = {"inputs": 0}

    def undrain() -> None:
        server.engine._drain.cancel_timer()
        server.engine._drain = Drain(server.engine.conferences, server.engine.delete_conference)

    def legs_of(conference_id: str) -> list[str]:
        conference = server.engine.conferences.get(conference_id)
        return list(conference.voices) if conference is not None else []

    def request(method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in range(2):
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                connection.close()  # the server closed the keep-alive connection: reconnect once
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def check(data: bytes) -> None:
        state["inputs"] += 1
        if state["inputs"] % 500 == 0:  # start over now and then, so creating stays reachable
            server.call(lambda: [server.engine.delete_conference(c) for c in list(server.engine.conferences)])
        if len(data) < 3:
            return
        method, template = _ROUTES[data[0] % len(_ROUTES)]
        conference_id = _IDS[data[1] % len(_IDS)] if data[1] < 200 else data[1:3].hex()
        legs = server.call(legs_of, conference_id) or []
        leg_id = legs[data[2] % len(legs)] if legs and data[2] < 200 else data[2:3].hex()
        path = template.format(c=conference_id, l=leg_id)
        body = data[3:]
        if data[2] == 255:
            body = body * (MAX_BODY_BYTES // max(len(body), 1) + 1)  # over the size limit
        status, raw = request(method, path, body if body or method in ("POST", "PATCH") else None)
        _check(status < 500 or status == 503, f"{method} {path} answered {status}: {raw[:300]!r}")
        if status == 204:
            _check(raw == b"", "204 with a body")
        elif path == "/metrics" and status == 200:
            _check(raw.startswith(b"# HELP "), f"metrics not in the text format: {raw[:100]!r}")
        else:
            try:
                answer = json.loads(raw)
            except ValueError as exc:
                raise InvariantBroken(f"{method} {path} {status}: body is not JSON: {raw[:200]!r}") from exc
            if status >= 400:
                _check(isinstance(answer, dict) and set(answer) == {"error"}
                       and set(answer["error"]) == {"code", "message"}
                       and all(isinstance(v, str) and v for v in answer["error"].values()),
                       f"{status} error not in the shared shape: {answer!r}")
            else:
                _check(isinstance(answer, dict), "a success answer is not a JSON object")
        if path == "/drain" and status == 202:  # draining is one way: undo it, or creating is over
            server.call(undrain)
        stats = server.call(server.engine.stats)
        # a fork (a send-only leg of the engine's own) holds a port pair as a leg does
        held = stats["legs"] + stats.get("forks", 0)
        _check(stats["ports_in_use"] == held, f"ports held without a leg or fork: "
               f"{stats['ports_in_use']} ports for {stats['legs']} legs and "
               f"{stats.get('forks', 0)} forks")
        _check(not server.errors, f"exception on the engine loop: {server.errors[:1]}")
    return check


# ---------------------------------------------------------------------------------- leg receive
def _leg_seeds() -> list[bytes]:
    level = _rtp.audio_level_extension(1, 20, True)
    payload = FrameEncoder("opus").encode(np.zeros(960, dtype=np.int16))
    rtp = _rtp.build_rtp(111, 5, 960, 7, payload, False, _rtp.EXTENSION_PROFILE_ONE_BYTE, level)
    rr = bytes([0x80, 201, 0, 1, 0, 0, 0, 7])
    return [bytes([0]) + rtp, bytes([1]) + rtp, bytes([2]) + rr, bytes([3]) + rr, bytes([4]) + rtp]


class _Client:
    """A participant's socket, and its SRTP context when the leg is SRTP."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.srtp: SrtpContext | None = None
        self.crypto = None
        self.leg_port = 0

    def drain(self) -> None:
        try:
            while True:
                self.sock.recv(2048)
        except BlockingIOError:
            pass


@target("leg_receive", "datagrams into live legs (plain and SRTP, from the peer or a stranger): "
        "nothing raised, each counted exactly once, the neighbour leg undisturbed",
        seeds=_leg_seeds, max_len=1500)
def leg_receive_target():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    settings = EngineSettings(media_ports=FUZZ_PORTS, max_packet_rate=10**9)
    engine = Engine(settings)
    conference_id = engine.create_conference("mcu")["id"]
    conference = engine.conferences[conference_id]
    clients, legs = [], []
    for srtp in (False, True, False):  # victim (plain), victim (SRTP), neighbour (plain)
        client = _Client()
        offer, client.crypto = offer_audio(local_ip="127.0.0.1", local_port=client.port, srtp=srtp)
        answer = loop.run_until_complete(engine.add_leg(conference_id, offer))
        media = parse(answer["sdp"]).media[0]
        client.leg_port = media.port
        if srtp:
            client.srtp = SrtpContext(client.crypto.suite, client.crypto.key,
                                      parse_crypto(media.attribute("crypto")).key)
        clients.append(client)
        legs.append(conference.voices[answer["id"]].leg)
    stranger = _Client()
    neighbour_client, neighbour = clients[2], legs[2]
    encoder = FrameEncoder("opus")
    tone = (np.sin(np.arange(960) * 2 * np.pi * 440 / 48000) * 8000).astype(np.int16)
    state = {"seq": 0, "neighbour_sent": 0}

    def accounted(leg) -> int:
        total = leg.packets_in + sum(leg.drops.values()) + leg.dtmf_packets
        if leg.srtp is not None:
            total += leg.srtp.stats()["rtcp_unprotected"] - leg.drops["rtcp_malformed"]
        return total

    def pump(until) -> bool:
        for _ in range(200):
            loop.run_until_complete(asyncio.sleep(0))
            if until():
                return True
        return False

    def check(data: bytes) -> None:
        if not data:
            return
        mode, payload = data[0], data[1:]
        index = mode & 1                      # which victim: plain or SRTP
        sender = stranger if mode & 2 else clients[index]
        leg, client = legs[index], clients[index]
        if client.srtp is not None and mode & 4 and len(payload) >= 12 and payload[0] >> 6 == 2:
            # a packet that authenticates: the fuzz reaches the RTP/RTCP parsers behind SRTP
            protect = client.srtp.protect_rtcp if is_rtcp(payload) else client.srtp.protect
            try:
                payload = protect(payload)
            except Exception:  # not protectable (too long, ...): send it raw
                pass
        plain_rtcp_ok = 0
        if client.srtp is None and is_rtcp(payload):
            try:
                parse_compound(payload)
                plain_rtcp_ok = 1
            except RtcpError:
                pass
        expected = accounted(leg) + 1 - plain_rtcp_ok  # a good plain RTCP packet is not a drop
        neighbour_before = dict(neighbour.drops), neighbour.packets_in
        sender.sock.sendto(payload, ("127.0.0.1", client.leg_port))
        # the neighbour keeps talking: one real Opus packet per input
        state["seq"] += 1
        packet = _rtp.build_rtp(111, state["seq"] & 0xFFFF, state["seq"] * 960 & 0xFFFFFFFF, 99,
                                 encoder.encode(tone), False, _rtp.EXTENSION_PROFILE_ONE_BYTE,
                                 _rtp.audio_level_extension(1, 20, True))
        neighbour_client.sock.sendto(packet, ("127.0.0.1", neighbour_client.leg_port))
        seen = pump(lambda: accounted(leg) >= expected and neighbour.packets_in > neighbour_before[1])
        _check(not errors, f"exception raised out of the receive path: {errors[:1]}")
        _check(seen, "a datagram was neither accepted nor counted as a drop")
        _check(accounted(leg) == expected, f"one datagram changed the counters by "
               f"{accounted(leg) - expected + 1 - plain_rtcp_ok}")
        _check(neighbour.drops == neighbour_before[0], f"the neighbour leg dropped packets: {neighbour.drops}")
        _check(neighbour.packets_in == neighbour_before[1] + 1, "the neighbour's packet did not arrive")
        conference.tick(time.monotonic() * 1000.0)  # the jitter buffers and decoders see it too
        _check(not errors, f"exception raised during the tick: {errors[:1]}")
        if state["seq"] % 64 == 0:
            for c in (*clients, stranger):
                c.drain()
    return check
