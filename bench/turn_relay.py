"""TURN relay throughput: voicemix's TURN vs coturn's turnserver, same machine, same run, same load.

Each server runs pinned to one core (taskset -c 0; coturn with one relay thread); the load runs on
the other core: K TCP client connections, each with an allocation and a channel bound to a UDP echo
peer (coturn's turnutils_peer, written in C, so the peer is not what limits). Every connection keeps
W ChannelData frames of PAYLOAD bytes (an Opus 20 ms packet is ~100 bytes) in flight: each frame goes
client -TCP-> relay -UDP-> echo -UDP-> relay -TCP-> client, and each frame back lets one more go.
Throughput is counted on the client: frames per second that made the round trip, i.e. packets/s in
each relay direction. Frames lost on the way (UDP buffers) are replaced after a quiet 200 ms.
The server's CPU time over the measured interval (from /proc) gives packets per CPU-second, which
does not depend on whether the load saturated the server.

    python bench/turn_relay.py [--seconds 4] [--connections 16] [--window 64] [--rounds 3]

Prints packets/s and payload Mbit/s per direction for each server (best and median round), and
ours/coturn for both. About 45 s with the defaults.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import uvloop  # noqa: E402

from mixer.turn import stun  # noqa: E402
from mixer.turn._wire import StreamFramer  # noqa: E402
from mixer.turn.client import TurnClient  # noqa: E402

USER, PASSWORD, REALM = "bench", "bench-pw", "voicemix"
PAYLOAD = 100
PEERS = 8          # echo peers (separate sockets, so one peer's receive buffer is not the bottleneck)
STALL_S = 0.2      # a connection with nothing back for this long has lost frames: send a fresh window


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ours(port: int, ports: str) -> subprocess.Popen:
    env = dict(os.environ, VOICEMIX_TURN_STATIC_USERS=f'{{"{USER}": "{PASSWORD}"}}', VOICEMIX_TURN_REALM=REALM,
               VOICEMIX_TURN_USER_QUOTA="1000")
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "mixer.cli", "turn",
                             "--listen", f"127.0.0.1:{port}", "--relay-ports", ports, "--allow-loopback-peers"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_coturn(port: int, ports: str, workdir: str) -> subprocess.Popen:
    low, high = ports.split("-")
    return subprocess.Popen(
        ["taskset", "-c", "0", "turnserver", "--no-cli", "-n", "--listening-ip", "127.0.0.1",
         "--listening-port", str(port), "--relay-ip", "127.0.0.1", "--min-port", low, "--max-port", high,
         "--relay-threads", "1", "--lt-cred-mech", "--user", f"{USER}:{PASSWORD}", "--realm", REALM,
         "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-tcp-relay", "--fingerprint",
         "--log-file", os.path.join(workdir, "turnserver.log"), "--simple-log", "--no-stdout-log",
         "--pidfile", os.path.join(workdir, "turnserver.pid"), "--userdb", os.path.join(workdir, "turndb")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_peer(port: int) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", "1", "turnutils_peer", "-p", str(port), "-L", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class LoadConnection(asyncio.Protocol):
    """Raw ChannelData load on one TURN TCP connection (after TurnClient set it up)."""

    def __init__(self, client: TurnClient, channel: int, window: int) -> None:
        self.client = client
        self.window = window
        self.frame = stun.channel_data(channel, os.urandom(PAYLOAD), pad=True)
        self.received = 0
        self.sent = 0
        self.refills = 0
        self.lost = 0
        self.counting = StreamFramer(lambda raw: None, lambda why: None)
        self.counting.relay = None

    def start(self) -> None:
        client = self.client
        # from now on every read counts frames in Cython and sends as many new ones
        client.framer = self.counting
        client.transport.set_protocol(self)
        self.send(self.window)

    def send(self, count: int) -> None:
        self.client.transport.write(self.frame * count)
        self.sent += count

    def data_received(self, data: bytes) -> None:
        before = self.counting.channel_frames
        self.counting.data_received(data)
        got = self.counting.channel_frames - before
        self.received += got
        if got:
            self.send(got)

    def refill(self) -> None:
        """No frame came back for a while: count what is out as lost and send a fresh window."""
        self.refills += 1
        self.lost += self.sent - self.received
        self.sent = self.received
        self.send(self.window)

    def connection_lost(self, exc) -> None:
        pass


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads (and of taskset's child)."""
    total = 0.0
    for candidate in [pid] + _children(pid):
        try:
            with open(f"/proc/{candidate}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except FileNotFoundError:
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


async def measure(server_port: int, peer_ports: list[int], connections: int, window: int, seconds: float,
                  server_pid: int) -> tuple[float, float]:
    loads = []
    for i in range(connections):
        client = await TurnClient(("127.0.0.1", server_port), USER, PASSWORD).connect()
        await client.allocate()
        channel = await client.channel_bind(("127.0.0.1", peer_ports[i % len(peer_ports)]))
        loads.append(LoadConnection(client, channel, window))
    for load in loads:
        load.start()

    async def refiller():
        last = [0] * len(loads)
        while True:
            await asyncio.sleep(STALL_S)
            for i, load in enumerate(loads):
                if load.received == last[i]:
                    load.refill()  # lost frames: top the window up again
                last[i] = load.received

    task = asyncio.create_task(refiller())
    await asyncio.sleep(1.0)  # warm-up
    start_count, start = sum(l.received for l in loads), time.perf_counter()
    start_cpu = cpu_seconds(server_pid)
    await asyncio.sleep(seconds)
    count, elapsed = sum(l.received for l in loads) - start_count, time.perf_counter() - start
    cpu = cpu_seconds(server_pid) - start_cpu
    if os.environ.get("TURN_BENCH_VERBOSE"):
        print(f"    received {sum(l.received for l in loads)}, lost {sum(l.lost for l in loads)}, "
              f"stalls {sum(l.refills for l in loads)}")
    task.cancel()
    for load in loads:
        load.client.transport.close()
    await asyncio.sleep(0.1)
    return count / elapsed, cpu / elapsed


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def run_one(name: str, args, peer_ports: list[int], workdir: str) -> tuple[float, float]:
    port = free_port()
    ports = "31000-31999" if name == "voicemix" else "32000-32699"
    process = start_ours(port, ports) if name == "voicemix" else start_coturn(port, ports, workdir)
    try:
        wait_listening(port)
        os.sched_setaffinity(0, {1})
        return uvloop.run(measure(port, peer_ports, args.connections, args.window, args.seconds, process.pid))
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for tool in ("turnserver", "turnutils_peer", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (Debian packages coturn, util-linux)")
            return 2
    peer_ports = [free_port(socket.SOCK_DGRAM) for _ in range(min(PEERS, args.connections))]
    peers = [start_peer(port) for port in peer_ports]
    results = {"voicemix": [], "coturn": []}
    try:
        time.sleep(0.3)
        with tempfile.TemporaryDirectory() as workdir:
            for _ in range(args.rounds):
                for name in ("voicemix", "coturn"):  # alternate, so drift in machine load hits both
                    results[name].append(run_one(name, args, peer_ports, workdir))
    finally:
        for peer in peers:
            peer.terminate()
            peer.wait()
    print(f"TURN relay, {args.connections} TCP clients x {args.window} in flight, {PAYLOAD}-byte "
          f"ChannelData <-> UDP echo, server on one core, {args.seconds:.0f} s x {args.rounds} rounds")
    summary = {}
    for name, values in results.items():
        rates = sorted(rate for rate, _ in values)
        median = rates[len(rates) // 2]
        rate, cpu = max(values)
        per_cpu = 2 * rate / cpu if cpu else float("nan")
        summary[name] = (rate, median, per_cpu)
        print(f"  {name:9s} best {rate:6.0f} packets/s each way ({rate * PAYLOAD * 8 / 1e6:5.1f} Mbit/s payload "
              f"each way), median {median:6.0f}; server CPU {cpu * 100:3.0f}% of a core in the best round, "
              f"{per_cpu:7.0f} relayed packets per CPU-second   rounds: {', '.join(f'{r:.0f}' for r, _ in values)}")
    ours, theirs = summary["voicemix"], summary["coturn"]
    print(f"  ratio voicemix/coturn: throughput best {ours[0] / theirs[0]:.2f}x, median {ours[1] / theirs[1]:.2f}x "
          f"(target >= 0.8x); packets per CPU-second {ours[2] / theirs[2]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
