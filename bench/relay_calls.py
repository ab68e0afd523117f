"""Anchored 1:1 calls, both sides talking: engine CPU per call, relay vs MCU vs rtpengine.

    python bench/relay_calls.py                      # mcu 40; relay and rtpengine 40, 200, 400, 500
    python bench/relay_calls.py --quick              # relay 50, mcu 20 (rtpengine 50), short windows
    python bench/relay_calls.py --mode relay --calls 200 --seconds 10

The media server under test runs alone on core 0 (`taskset`): `voicemix engine` (its control API
creates a conference per call in the chosen mode and a leg per side) or rtpengine (userspace
forwarding, `--table=-1`; offer/answer over its ng control protocol). This process is the load
generator, pinned to core 1: per call two streams, each one Opus packet every 20 ms (a loud tone,
pre-encoded: the same payloads for every mode, plain RTP with an RFC 6464 level) to where the
answer says, all from one UDP socket with `sendmmsg` (every offer names it), draining what comes
back (counted, for the loss column).

CPU = the server process's utime + stime (/proc/<pid>/stat, all its threads) over the measurement
window after a warm-up; "per call" = CPU seconds per second of call, and calls/core = 1 / that.
"late %" = slots the generator sent more than a frame late (above ~1% the load is bursts, not real
time); "skipped" = the engine's skipped ticks (it was starved of its core). Run it alone: the
engine takes media ports 40000-49999, which tests also use. rtpengine comes from Debian's
`rtpengine-daemon` (not in setup.sh: bench only); without it those rows are skipped.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
if str(REPO_DIR) not in sys.path:
    sys.path.insert(0, str(REPO_DIR))

import numpy as np  # noqa: E402

from mixer import _rtp  # noqa: E402
from mixer._netio import BatchReceiver, pack_address, send_batch  # noqa: E402
from mixer.codec import FrameEncoder  # noqa: E402
from mixer.sdp import parse  # noqa: E402

HOST = "127.0.0.1"
FRAME_S = 0.02
CYCLE = 50
LEVEL_EXT_ID = 1
SERVER_CORE, LOAD_CORE = 0, 1


# ------------------------------------------------------------------------------------ payloads
def payload_cycle(freq: float) -> list[bytes]:
    t = np.arange(CYCLE * 960) / 48000
    pcm = (np.sin(2 * np.pi * freq * t) * 0.2 * 32767).astype(np.int16)
    encoder = FrameEncoder("opus")
    return [encoder.encode(np.ascontiguousarray(pcm[k * 960:(k + 1) * 960])) for k in range(CYCLE)]


def offer_sdp(port: int) -> str:
    return "\r\n".join([
        "v=0", f"o=- {secrets.randbits(32)} 1 IN IP4 {HOST}", "s=bench", f"c=IN IP4 {HOST}", "t=0 0",
        f"m=audio {port} RTP/AVP 111", "a=rtpmap:111 opus/48000/2", "a=ptime:20",
        f"a=extmap:{LEVEL_EXT_ID} urn:ietf:params:rtp-hdrext:ssrc-audio-level", "a=rtcp-mux",
        "a=sendrecv", ""])


def media_target(sdp: str) -> tuple[str, int]:
    session = parse(sdp)
    media = next(m for m in session.media if m.media == "audio")
    return (media.connection or session.connection).address, media.port


# ------------------------------------------------------------------------------------- servers
class VoicemixServer:
    """`voicemix engine` on the server core; one conference per call."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        port = free_tcp_port()
        self.url = f"http://{HOST}:{port}"
        env = {**os.environ, "VOICEMIX_MEDIA_PORTS": "40000-49999", "VOICEMIX_LOG_LEVEL": "warning"}
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(SERVER_CORE), sys.executable, "-m", "mixer.cli", "engine",
             "--control", f"{HOST}:{port}"], cwd=REPO_DIR, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_more_files)
        self.pid = self.proc.pid
        wait_for_tcp(HOST, port)

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        import json
        import urllib.request
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else {}

    def call(self, offers: tuple[str, str]) -> tuple[tuple[str, int], tuple[str, int]]:
        conference = self._call("POST", "/conferences", {"mode": self.mode})["id"]
        self.first = getattr(self, "first", conference)
        self.last = conference
        targets = []
        for i, offer in enumerate(offers):
            answer = self._call("POST", f"/conferences/{conference}/legs", {"sdp": offer, "label": f"s{i}"})
            targets.append(media_target(answer["sdp"]))
        return targets[0], targets[1]

    def stats(self) -> dict:
        return self._call("GET", "/stats")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def bencode(value) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(value.items())) + b"e"
    raise TypeError(type(value))


def bdecode(data: bytes, i: int = 0):
    c = data[i:i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if c in (b"l", b"d"):
        i += 1
        items = []
        while data[i:i + 1] != b"e":
            item, i = bdecode(data, i)
            items.append(item)
        if c == b"l":
            return items, i + 1
        return {items[k].decode(): items[k + 1] for k in range(0, len(items), 2)}, i + 1
    colon = data.index(b":", i)
    length = int(data[i:colon])
    return data[colon + 1:colon + 1 + length], colon + 1 + length


class RtpengineServer:
    """rtpengine (userspace forwarding) on the server core; one call per offer/answer over ng."""

    mode = "rtpengine"

    def __init__(self) -> None:
        self.ng_port = free_udp_port()
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(SERVER_CORE), shutil.which("rtpengine"), "--foreground",
             "--interface", HOST, "--listen-ng", f"{HOST}:{self.ng_port}", "--table", "-1",
             "--port-min", "30000", "--port-max", "39999", "--log-stderr", "--log-level", "3",
             "--num-threads", "2", "--no-fallback"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.ng = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ng.settimeout(2.0)
        deadline = time.monotonic() + 15
        while True:
            try:
                if self.command({"command": "ping"}).get("result") == b"pong":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("rtpengine did not start (run it by hand to see why)")
            time.sleep(0.2)

    def command(self, body: dict) -> dict:
        cookie = secrets.token_hex(6).encode()
        self.ng.sendto(cookie + b" " + bencode(body), (HOST, self.ng_port))
        while True:
            data = self.ng.recv(65536)
            if data.startswith(cookie + b" "):
                return bdecode(data[len(cookie) + 1:])[0]

    def call(self, offers: tuple[str, str]) -> tuple[tuple[str, int], tuple[str, int]]:
        call_id = secrets.token_hex(8)
        common = {"call-id": call_id, "from-tag": "a", "replace": ["origin"], "ICE": "remove"}
        to_b = self.command({**common, "command": "offer", "sdp": offers[0]})
        if to_b.get("result") != b"ok":
            raise RuntimeError(f"rtpengine offer: {to_b}")
        to_a = self.command({**common, "command": "answer", "to-tag": "b", "sdp": offers[1]})
        if to_a.get("result") != b"ok":
            raise RuntimeError(f"rtpengine answer: {to_a}")
        return media_target(to_a["sdp"].decode()), media_target(to_b["sdp"].decode())

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.ng.close()


# ----------------------------------------------------------------------------------- helpers
def _more_files() -> None:
    """A leg is a socket: 800 calls need more than the default 1024 descriptors."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_tcp(host: str, port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------- run
def run(server, calls: int, warmup_s: float, seconds: float) -> dict:
    """Every leg's offer names ONE generator socket (as `mcu_scale.py` does): the generator sends
    each slot's packets with `sendmmsg` batches and drains replies with `recvmmsg`, so it keeps a
    real-time schedule for hundreds of calls on a shared core. Each engine leg still has its
    own port and its own peer stream (SSRC, numbering)."""
    cycles = [payload_cycle(520.0), payload_cycle(710.0)]
    level_ext = _rtp.audio_level_extension(LEVEL_EXT_ID, 14, True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):   # SO_*BUFFORCE (root)
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, 16 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, 16 << 20)
    # outside the servers' media ranges (engine 40000-49999, rtpengine 30000-39999): a port the
    # server hands to one of its own legs would swallow the generator's replies
    for port in range(21000 + secrets.randbelow(4000) * 2, 29999, 2):
        try:
            sock.bind((HOST, port))
            break
        except OSError:
            continue
    sock.setblocking(False)
    if os.environ.get("RELAY_BENCH_DEBUG"):
        print(f"  generator port {sock.getsockname()[1]}", flush=True)
    legs = []   # [packed target, ssrc, seq, ts, side]
    for _ in range(calls):
        targets = server.call((offer_sdp(port), offer_sdp(port)))
        for side in (0, 1):
            legs.append([pack_address(*targets[side]), secrets.randbits(32), secrets.randbits(16),
                         secrets.randbits(32), side])
    receiver = BatchReceiver(64)
    fd = sock.fileno()
    sent = received = late = slots = 0
    start = time.monotonic()
    window_start = start + warmup_s
    end = window_start + seconds
    cpu0 = None
    k = 0

    def drain() -> int:
        count = 0
        while True:
            got = len(receiver.receive(fd))
            count += got
            if got < 64:
                return count

    while True:
        due = start + k * FRAME_S
        now = time.monotonic()
        if now >= end:
            break
        if now < due:
            time.sleep(due - now)
        elif now - due > FRAME_S:
            late += 1
        slots += 1
        if cpu0 is None and now >= window_start:
            cpu0, t0, sent0, received0 = cpu_seconds(server.pid), now, sent, received
        datagrams, addresses = [], []
        for leg in legs:
            target, ssrc, seq, ts, side = leg
            datagrams.append(_rtp.build_rtp(111, seq, ts, ssrc, cycles[side][k % CYCLE], k == 0,
                                            _rtp.EXTENSION_PROFILE_ONE_BYTE, level_ext))
            addresses.append(target)
            leg[2] = (seq + 1) & 0xFFFF
            leg[3] = (ts + 960) & 0xFFFFFFFF
        sent += send_batch(fd, datagrams, addresses)
        received += drain()
        k += 1
    t1 = time.monotonic()
    cpu1 = cpu_seconds(server.pid)
    time.sleep(0.1)
    received += drain()
    if os.environ.get("RELAY_BENCH_DEBUG") and hasattr(server, "url"):
        for cid in (server.first, server.last):
            legs = server._call("GET", f"/conferences/{cid}")["legs"]
            print("  ", cid, port, [(leg["remote_rtp"], leg["transport"]["sent"]) for leg in legs])
    if os.environ.get("RELAY_BENCH_DEBUG"):
        print(f"  generator: received {receiver.packets} in {receiver.calls} calls, truncated "
              f"{receiver.truncated}, rcvbuf {sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}")
    sock.close()
    window = t1 - t0
    cpu = cpu1 - cpu0
    sent_w, received_w = sent - sent0, received - received0
    per_call = cpu / window / calls
    stats = server.stats()
    if stats.get("drops"):
        print(f"  engine: in {stats.get('packets_in')} out {stats.get('packets_out')} drops {stats['drops']}")
    return {"mode": server.mode, "calls": calls, "window_s": round(window, 1),
            "busy": round(cpu / window, 3), "cpu_ms_per_call_s": round(per_call * 1000, 3),
            "calls_per_core": int(1 / per_call) if per_call else None,
            "pps_in": int(sent_w / window), "loss_percent": round(100 * max(sent_w - received_w, 0) / sent_w, 2),
            "late_slots_percent": round(100 * late / max(slots, 1), 2),
            "out_per_cpu_s": int(received_w / cpu) if cpu else None,
            "skipped_ticks": stats.get("skipped_ticks", "-"),
            "tick_p99_ms": stats.get("tick_lateness_p99_ms", "-")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mode", choices=("relay", "mcu", "rtpengine"))
    parser.add_argument("--calls", type=int)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {LOAD_CORE})
    if args.mode:
        plan = [(args.mode, args.calls or 100)]
    elif args.quick:
        plan = [("relay", 50), ("mcu", 20), ("rtpengine", 50)]
        args.seconds, args.warmup = 5.0, 2.0
    else:
        plan = [("mcu", 40), ("relay", 40), ("rtpengine", 40), ("relay", 200), ("rtpengine", 200),
                ("relay", 400), ("rtpengine", 400), ("relay", 500), ("rtpengine", 500)]
    print(f"{'mode':10} {'calls':>6} {'busy':>6} {'CPU ms/call-s':>14} {'calls/core':>11} "
          f"{'pkts in/s':>10} {'out/CPU-s':>10} {'loss %':>7} {'late %':>7} {'skipped':>8} {'p99 ms':>7}")
    for mode, calls in plan:
        if mode == "rtpengine" and shutil.which("rtpengine") is None:
            print("rtpengine: not installed, skipped")
            continue
        server = RtpengineServer() if mode == "rtpengine" else VoicemixServer(mode)
        try:
            r = run(server, calls, args.warmup, args.seconds)
        finally:
            server.close()
        print(f"{r['mode']:10} {r['calls']:>6} {r['busy']:>6} {r['cpu_ms_per_call_s']:>14} "
              f"{r['calls_per_core']:>11} {r['pps_in']:>10} {r['out_per_cpu_s']:>10} "
              f"{r['loss_percent']:>7} {r['late_slots_percent']:>7} {r['skipped_ticks']:>8} "
              f"{r['tick_p99_ms']:>7}", flush=True)
        time.sleep(1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
