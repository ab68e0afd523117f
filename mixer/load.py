"""`voicemix load`: many real RTP clients against one engine, bounded in count and time.

Each client is a UDP socket that joins by SDP offer/answer and sends one RTP packet every 20 ms
(pre-encoded Opus or G.711: a few talkers send tones with a loud RFC 6464 level, everyone else sends
near-silence marked silent, as phones without DTX do) and counts what the engine sends back by
sequence number. The engine runs in this process by default, or is reached through its control URL
(`--engine http://127.0.0.1:8790`). Only loopback and private addresses are accepted as targets.

A progress line every `--interval` seconds and a summary at the end: packets, loss, the engine's tick
lateness p50/p99 (from its stats), resident memory and open file descriptors.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import random
import resource
import signal
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from mixer import _mix, _rtp
from mixer.analysis import TEST_TONES_HZ
from mixer.codec import CODECS, FRAME_SAMPLES, MIX_RATE, FrameEncoder
from mixer.sdp import offer_audio, parse

log = logging.getLogger("voicemix.load")

MAX_CLIENTS = 1000
MAX_DURATION_S = 4 * 3600
CYCLE_FRAMES = 50            # one second of pre-encoded audio, replayed
SUB_SLOTS = 4                # clients send in 4 phases 5 ms apart, like independent phones
AUDIO_LEVEL_EXT_ID = 1


class LoadError(Exception):
    """A load run the generator refuses to start (bad bounds, a target outside the allowed nets)."""


def allowed_address(host: str) -> bool:
    """Loopback or private (RFC 1918, ULA) only: a load run never aims at the internet."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or (address.is_private and not address.is_link_local
                                   and not address.is_unspecified and not address.is_multicast)


# ------------------------------------------------------------------------------------- engines
class InProcessEngine:
    """The engine on this process's loop (the load generator's work shares the core with it)."""

    def __init__(self, ports: str | None, mode: str = "mcu") -> None:
        from mixer.engine.engine import Engine
        from mixer.settings import EngineSettings
        settings = EngineSettings(**({"media_ports": ports} if ports else {}))
        self.engine = Engine(settings)
        self.engine.start()
        # one log line per leg is right for a service, not for a thousand load legs
        logging.getLogger("voicemix.engine").setLevel(logging.WARNING)
        self.pid = os.getpid()
        self.mode = mode
        self.where = f"in-process (media {settings.media_ip} ports {settings.media_ports})"

    async def create_conference(self) -> str:
        return self.engine.create_conference(self.mode)["id"]

    async def add_leg(self, conference_id: str, offer: str, label: str) -> tuple[str, str]:
        answer = await self.engine.add_leg(conference_id, offer, label)
        return answer["id"], answer["sdp"]

    async def remove_leg(self, conference_id: str, leg_id: str) -> None:
        self.engine.remove_leg(conference_id, leg_id)

    async def delete_conference(self, conference_id: str) -> None:
        self.engine.delete_conference(conference_id)

    async def stats(self) -> dict:
        return self.engine.stats()

    async def close(self) -> None:
        self.engine.stop()


class RemoteEngine:
    """An engine reached through its HTTP control API."""

    def __init__(self, url: str, pid: int | None, mode: str = "mcu") -> None:
        from aiohttp import ClientSession, ClientTimeout
        self.url = url.rstrip("/")
        self.mode = mode
        secret = os.environ.get("VOICEMIX_CONTROL_SECRET")  # the engine's, if it has one
        self.http = ClientSession(timeout=ClientTimeout(total=30),
                                  headers={"Authorization": f"Bearer {secret}"} if secret else None)
        self.pid = pid
        self.where = self.url

    async def _call(self, method: str, path: str, body: dict | None = None) -> dict | None:
        async with self.http.request(method, self.url + path, json=body) as response:
            if response.status >= 400:
                raise LoadError(f"{method} {path}: {response.status} {await response.text()}")
            return None if response.status == 204 else await response.json()

    async def create_conference(self) -> str:
        return (await self._call("POST", "/conferences", {"mode": self.mode}))["id"]

    async def add_leg(self, conference_id: str, offer: str, label: str) -> tuple[str, str]:
        answer = await self._call("POST", f"/conferences/{conference_id}/legs", {"sdp": offer, "label": label})
        return answer["id"], answer["sdp"]

    async def remove_leg(self, conference_id: str, leg_id: str) -> None:
        await self._call("DELETE", f"/conferences/{conference_id}/legs/{leg_id}")

    async def delete_conference(self, conference_id: str) -> None:
        await self._call("DELETE", f"/conferences/{conference_id}")

    async def stats(self) -> dict:
        return await self._call("GET", "/stats")

    async def close(self) -> None:
        await self.http.close()


# ------------------------------------------------------------------------------------- clients
@dataclass
class _Received:
    first: int = -1
    highest: int = -1   # extended sequence number
    count: int = 0


@dataclass
class LoadClient(asyncio.DatagramProtocol):
    """One participant: a socket, its RTP stream state, and what came back."""

    index: int
    talker: bool
    ssrc: int
    seq0: int
    ts0: int
    payload_type: int = 0
    conference_id: str = ""
    leg_id: str = ""
    target: tuple[str, int] | None = None
    transport: asyncio.DatagramTransport | None = None
    received: dict[int, _Received] = field(default_factory=dict)
    packets_in: int = 0
    rtcp_in: int = 0

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) < 12:
            return
        if 192 <= data[1] <= 223:  # RTCP (RFC 5761 demux)
            self.rtcp_in += 1
            return
        self.packets_in += 1
        ssrc = int.from_bytes(data[8:12], "big")
        seq = int.from_bytes(data[2:4], "big")
        stream = self.received.get(ssrc)
        if stream is None:
            stream = self.received[ssrc] = _Received(first=seq, highest=seq)
        else:  # extend by the shortest distance from the highest seen (RFC 3550 A.1 in spirit)
            ext = stream.highest + _rtp.seq_diff(seq, stream.highest & 0xFFFF)
            stream.highest = max(stream.highest, ext)
        stream.count += 1

    def error_received(self, exc) -> None:
        pass

    def expected_and_received(self) -> tuple[int, int]:
        expected = sum(s.highest - s.first + 1 for s in self.received.values())
        return expected, sum(s.count for s in self.received.values())


def _payload_cycles(codec: str, talkers: int) -> tuple[list[list[bytes]], list[bytes], list[bytes], bytes]:
    """Pre-encoded audio: per talker a tone cycle with its levels; one near-silent cycle for all."""
    t = np.arange(CYCLE_FRAMES * FRAME_SAMPLES) / MIX_RATE
    tones, levels = [], []
    for i in range(max(talkers, 1)):
        signal = (np.sin(2 * np.pi * TEST_TONES_HZ[i % len(TEST_TONES_HZ)] * t) * 0.2 * 32767).astype(np.int16)
        encoder = FrameEncoder(codec)
        frames = [np.ascontiguousarray(signal[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]) for k in range(CYCLE_FRAMES)]
        tones.append([encoder.encode(f) for f in frames])
        levels.append(_rtp.audio_level_extension(AUDIO_LEVEL_EXT_ID, _mix.audio_level(frames[0]), True))
    noise = np.random.default_rng(7).normal(0, 3.0, CYCLE_FRAMES * FRAME_SAMPLES).astype(np.int16)
    encoder = FrameEncoder(codec)
    silence = [encoder.encode(np.ascontiguousarray(noise[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]))
               for k in range(CYCLE_FRAMES)]
    silent_level = _rtp.audio_level_extension(AUDIO_LEVEL_EXT_ID, _rtp.AUDIO_LEVEL_SILENT, False)
    return tones, levels, silence, silent_level


# ---------------------------------------------------------------------------------- the run
@dataclass
class LoadConfig:
    clients: int = 10
    duration_s: float = 10.0
    talkers: int = 3
    per_conference: int = 0          # 0: everyone in one conference
    codec: str = "opus"
    engine_url: str | None = None    # None: in-process engine
    engine_pid: int | None = None    # a local remote engine's pid, for its RSS and fds
    host: str = "127.0.0.1"          # the clients' address
    ports: str | None = None         # in-process engine's media port range
    interval_s: float = 1.0
    churn_every_s: float = 0.0       # > 0: every this often a listener leaves and a new one joins
    mode: str = "mcu"                # the conferences' mode: mcu, sfu or relay

    def validate(self) -> None:
        if not 1 <= self.clients <= MAX_CLIENTS:
            raise LoadError(f"-n must be 1..{MAX_CLIENTS}")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise LoadError(f"--duration must be > 0 and at most {MAX_DURATION_S} s")
        if self.codec not in CODECS:
            raise LoadError(f"--codec must be one of {tuple(CODECS)}")
        if self.churn_every_s < 0 or (self.churn_every_s and self.churn_every_s < 0.05):
            raise LoadError("--churn must be 0 (off) or at least 0.05 s")
        if not allowed_address(self.host):
            raise LoadError(f"--host {self.host} is not a loopback or private address")
        if self.engine_url is not None:
            parts = urlsplit(self.engine_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise LoadError(f"--engine must be an http(s) URL, got {self.engine_url!r}")
            if not allowed_address(parts.hostname):
                raise LoadError(f"--engine host {parts.hostname} is not a loopback or private address")


def process_usage(pid: int) -> dict:
    """Resident memory (KB) and open file descriptors of a local process."""
    rss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return {"rss_kb": None, "fds": None}
    return {"rss_kb": rss, "fds": fds}


class LoadRun:
    def __init__(self, config: LoadConfig) -> None:
        config.validate()
        self.config = config
        self.clients: list[LoadClient] = []
        self.conferences: list[str] = []
        self.sent = 0
        self.send_errors = 0
        self.engine = None
        self._stop = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._slots: list[list[LoadClient]] | None = None
        self._rng = random.Random(11)
        self._next_index = 0
        self.departed: list[LoadClient] = []
        self.churned = 0

    def stop(self) -> None:
        self._stop.set()

    async def _join(self) -> None:
        size = self.config.per_conference or self.config.clients
        for index in range(self.config.clients):
            if index % size == 0:
                self.conferences.append(await self.engine.create_conference())
            await self.add_client(self.conferences[-1], index % size < self.config.talkers)
            if index % 50 == 49:
                await asyncio.sleep(0)  # let the engine's clock run while legs are added

    async def add_client(self, conference_id: str, talker: bool) -> LoadClient:
        """A new client joins `conference_id` by offer/answer and starts sending on the next slot."""
        loop = asyncio.get_running_loop()
        index = self._next_index
        self._next_index += 1
        client = LoadClient(index, talker, self._rng.getrandbits(32), self._rng.getrandbits(16),
                            self._rng.getrandbits(32), conference_id=conference_id)
        client.transport, _ = await loop.create_datagram_endpoint(
            lambda: client, local_addr=(self.config.host, 0))
        try:
            port = client.transport.get_extra_info("sockname")[1]
            offer, _ = offer_audio(local_ip=self.config.host, local_port=port, codecs=(self.config.codec,),
                                   audio_level_ext_id=AUDIO_LEVEL_EXT_ID)
            client.leg_id, answer_sdp = await self.engine.add_leg(conference_id, offer, f"load-{index}")
            answer = parse(answer_sdp)
            media = next(m for m in answer.media if m.media == "audio" and m.port)
            address = (media.connection or answer.connection).address
            if not allowed_address(address):
                raise LoadError(f"the engine answered with media address {address}: not loopback/private")
        except BaseException:
            client.transport.close()
            raise
        client.target = (address, media.port)
        client.payload_type = int(media.formats[0])
        self.clients.append(client)
        if self._slots is not None:
            self._slots[client.index % SUB_SLOTS].append(client)
        return client

    async def remove_client(self, client: LoadClient) -> None:
        """The client leaves: its leg is deleted and its socket closed (its counts are kept)."""
        if self._slots is not None:
            self._slots[client.index % SUB_SLOTS].remove(client)
        self.clients.remove(client)
        self.departed.append(client)
        await self.engine.remove_leg(client.conference_id, client.leg_id)
        client.transport.close()
        client.transport = None

    async def churn(self) -> None:
        """One listener leaves and a new one joins the same conference."""
        listeners = [c for c in self.clients if not c.talker]
        if not listeners:
            return
        leaving = self._rng.choice(listeners)
        await self.remove_client(leaving)
        await self.add_client(leaving.conference_id, talker=False)
        self.churned += 1

    def _start_sending(self) -> None:
        loop = asyncio.get_running_loop()
        self._t0 = loop.time() + 0.02
        self._slots = [[c for c in self.clients if c.index % SUB_SLOTS == s] for s in range(SUB_SLOTS)]
        self._step = 0
        self._timer = loop.call_at(self._t0, self._send_slot)

    def _send_slot(self) -> None:
        """Every 5 ms one quarter of the clients send their next packet (20 ms per client)."""
        loop = asyncio.get_running_loop()
        frame, slot = divmod(self._step, SUB_SLOTS)
        behind = int((loop.time() - (self._t0 + self._step * 0.02 / SUB_SLOTS)) / (0.02 / SUB_SLOTS))
        if behind > 3 * SUB_SLOTS:  # stalled: skip ahead rather than burst
            self._step += behind
            frame, slot = divmod(self._step, SUB_SLOTS)
        f = frame % CYCLE_FRAMES
        tones, levels, silence, silent_level = self._cycles
        for client in self._slots[slot]:
            if client.talker:
                which = client.index % len(tones)
                payload, ext = tones[which][f], levels[which]
            else:
                payload, ext = silence[f], silent_level
            packet = _rtp.build_rtp(client.payload_type, (client.seq0 + frame) & 0xFFFF,
                                     (client.ts0 + frame * self._samples) & 0xFFFFFFFF, client.ssrc,
                                     payload, frame == 0, _rtp.EXTENSION_PROFILE_ONE_BYTE, ext)
            try:
                client.transport.sendto(packet, client.target)
                self.sent += 1
            except OSError:
                self.send_errors += 1
        self._step += 1
        self._timer = loop.call_at(self._t0 + self._step * 0.02 / SUB_SLOTS, self._send_slot)

    def totals(self) -> dict:
        expected = received = 0
        for client in self.clients + self.departed:
            e, r = client.expected_and_received()
            expected += e
            received += r
        return {"sent": self.sent, "send_errors": self.send_errors, "received": received,
                "expected": expected,
                "loss_percent": round(100.0 * max(expected - received, 0) / expected, 3) if expected else 0.0}

    async def snapshot(self, elapsed: float) -> dict:
        stats = await self.engine.stats()
        usage = process_usage(self.engine.pid) if self.engine.pid else {"rss_kb": None, "fds": None}
        return {"elapsed_s": round(elapsed, 1), **self.totals(),
                "tick_lateness_p50_ms": stats.get("tick_lateness_p50_ms"),
                "tick_lateness_p99_ms": stats.get("tick_lateness_p99_ms"),
                "tick_lateness_max_ms": stats.get("tick_lateness_max_ms"),
                "skipped_ticks": stats.get("skipped_ticks"), "legs": stats.get("legs"),
                "engine_packets_in": stats.get("packets_in"), "engine_packets_out": stats.get("packets_out"),
                "engine_drops": {k: v for k, v in (stats.get("drops") or {}).items() if v},
                "engine_rss_kb": usage["rss_kb"], "engine_fds": usage["fds"], "churned": self.churned,
                "loadgen": process_usage(os.getpid())}

    async def run(self, progress=print, on_snapshot=None) -> dict:
        config = self.config
        _raise_fd_limit(config.clients * 3 + 64)
        self._cycles = _payload_cycles(config.codec, config.talkers)
        self._samples = CODECS[config.codec].samples_per_frame
        self.engine = (RemoteEngine(config.engine_url, config.engine_pid, config.mode)
                       if config.engine_url else InProcessEngine(config.ports, config.mode))
        log.info("load started: %d clients on %s against engine %s for %g s", config.clients,
                 config.host, self.engine.where, config.duration_s)
        try:
            await self._join()
            self._start_sending()
            loop = asyncio.get_running_loop()
            began = loop.time()
            next_report = began + config.interval_s
            next_churn = began + config.churn_every_s if config.churn_every_s > 0 else float("inf")
            while not self._stop.is_set():
                now = loop.time()
                if now - began >= config.duration_s:
                    break
                wake = min(next_report, next_churn, began + config.duration_s)
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=max(wake - now, 0.0))
                except asyncio.TimeoutError:
                    pass
                now = loop.time()
                if now >= next_churn and not self._stop.is_set():
                    await self.churn()
                    next_churn += config.churn_every_s
                if now >= next_report:
                    next_report += config.interval_s
                    snapshot = await self.snapshot(now - began)
                    if on_snapshot is not None:
                        on_snapshot(snapshot)
                    progress(_progress_line(snapshot))
            if self._timer is not None:
                self._timer.cancel()
            await asyncio.sleep(0.2)  # what is in flight
            summary = await self.snapshot(loop.time() - began)
            summary["clients"] = len(self.clients)
            summary["churned"] = self.churned
            summary["conferences"] = len(self.conferences)
            summary["interrupted"] = self._stop.is_set()
            summary["in_process"] = isinstance(self.engine, InProcessEngine)
            return summary
        finally:
            for conference_id in self.conferences:
                try:
                    await self.engine.delete_conference(conference_id)
                except Exception as exc:  # the engine went away: nothing left to delete
                    log.warning("could not delete conference %s: %s", conference_id, exc)
            for client in self.clients:
                if client.transport is not None:
                    client.transport.close()
            await self.engine.close()
            log.info("load stopped: %d clients on %s, engine %s", len(self.clients), config.host,
                     self.engine.where)


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(wanted, soft), hard), hard))


def _progress_line(s: dict) -> str:
    rss = f"{s['engine_rss_kb'] / 1024:.0f} MB" if s["engine_rss_kb"] else "n/a"
    return (f"[{s['elapsed_s']:7.1f} s] legs {s['legs']}  sent {s['sent']}  received {s['received']}  "
            f"loss {s['loss_percent']:.2f}%  tick late p50 {s['tick_lateness_p50_ms']} ms "
            f"p99 {s['tick_lateness_p99_ms']} ms  engine rss {rss} fds {s['engine_fds']}")


def format_summary(s: dict) -> str:
    loadgen = s["loadgen"]
    lines = [
        "load summary",
        f"  clients {s['clients']} in {s['conferences']} conference(s), {s['elapsed_s']} s"
        + (" (interrupted)" if s["interrupted"] else ""),
        f"  packets sent {s['sent']} (send errors {s['send_errors']}), received {s['received']} of "
        f"{s['expected']} expected: loss {s['loss_percent']}%",
        f"  engine: packets in {s['engine_packets_in']}, out {s['engine_packets_out']}, drops "
        f"{s['engine_drops'] or 'none'}, skipped ticks {s['skipped_ticks']}",
        f"  tick lateness p50 {s['tick_lateness_p50_ms']} ms, p99 {s['tick_lateness_p99_ms']} ms, "
        f"max {s['tick_lateness_max_ms']} ms",
        f"  engine RSS {s['engine_rss_kb']} KB, fds {s['engine_fds']}"
        + (" (the engine runs in this process)" if s.get("in_process") else
           f"; load generator RSS {loadgen['rss_kb']} KB, fds {loadgen['fds']}"),
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--clients", type=int, default=10, help=f"RTP clients (1..{MAX_CLIENTS})")
    parser.add_argument("--duration", type=float, default=10.0,
                        help=f"seconds of sending (at most {MAX_DURATION_S})")
    parser.add_argument("--talkers", type=int, default=3, help="clients per conference that talk")
    parser.add_argument("--per-conference", type=int, default=0,
                        help="clients per conference (default: all in one)")
    parser.add_argument("--codec", default="opus", choices=tuple(CODECS))
    parser.add_argument("--mode", default="mcu", choices=("mcu", "sfu", "relay"),
                        help="conference mode (relay: 1:1 calls forwarded, see --per-conference 2)")
    parser.add_argument("--engine", help="control URL of a running engine (default: one in this process)")
    parser.add_argument("--engine-pid", type=int, help="pid of that engine, to report its RSS and fds")
    parser.add_argument("--host", default="127.0.0.1", help="the clients' address (loopback/private)")
    parser.add_argument("--ports", help="media port range of the in-process engine")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between progress lines")
    parser.add_argument("--churn", type=float, default=0.0,
                        help="every this many seconds a listener leaves and a new one joins")


def run(args: argparse.Namespace) -> int:
    import uvloop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = LoadConfig(clients=args.clients, duration_s=args.duration, talkers=args.talkers,
                        per_conference=args.per_conference, codec=args.codec, engine_url=args.engine,
                        engine_pid=args.engine_pid, host=args.host, ports=args.ports,
                        interval_s=args.interval, churn_every_s=args.churn, mode=args.mode)

    async def main() -> int:
        try:
            load = LoadRun(config)
        except LoadError as exc:
            print(f"voicemix load: {exc}")
            return 2
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, load.stop)
        try:
            summary = await load.run(progress=lambda line: print(line, flush=True))
        except LoadError as exc:
            print(f"voicemix load: {exc}")
            return 2
        print(format_summary(summary))
        return 0

    return uvloop.run(main())
