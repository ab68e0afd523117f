"""DTLS-SRTP handshakes: how many per engine core-second, and how long each takes (p50/p99).

Two measures, one run:

1. In memory: an engine-side `DtlsSrtpTransport` (server, ECDSA P-256, the engine's shared
   context) handshakes with a client transport; the server side's own CPU time per handshake is
   timed around its calls only (the client's work is not counted), so this is the DTLS cost the
   engine pays, without sockets.
2. Over UDP against a real engine process (`voicemix engine`, pinned to core 0; the clients on
   core 1): scripted WebRTC clients each create a leg (control API), send an ICE check, run the
   DTLS handshake as client, and remove the leg; first one at a time (latency), then K at a time
   (throughput). The same number of plain RTP legs is set
   up and removed first; the engine CPU time of the WebRTC phase minus the plain phase, over the
   number of handshakes, is what ICE + DTLS add per leg: handshakes per engine core-second. The
   handshake time is measured by the engine (ClientHello in -> keys out, p50/p99 of its window)
   and by the client (ClientHello out -> connected, network and both sides included).

    python bench/webrtc_dtls.py [--legs 400] [--concurrency 16]

Targets (issue 11): >= 300 handshakes per core-second, p99 < 50 ms on loopback.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import uvloop  # noqa: E402

from mixer.engine.client import HttpEngine  # noqa: E402
from mixer.legs.dtls import DtlsCertificate, DtlsSrtpTransport  # noqa: E402
from mixer.sdp import offer_audio  # noqa: E402
from mixer.sim.webrtc_client import ScriptedWebRtcClient  # noqa: E402

PROFILE = ("SRTP_AES128_CM_SHA1_80",)


def in_memory(handshakes: int) -> dict:
    """Server-side CPU per handshake: both sides in this process, datagrams passed through
    queues (no nesting), only the server's own calls timed."""
    server_cert, client_cert = DtlsCertificate.generate(), DtlsCertificate.generate()
    server_cert.context(PROFILE)  # made once per engine, not per handshake
    server_s, pair_s = [], []
    for _ in range(handshakes):
        to_server: list[bytes] = []
        to_client: list[bytes] = []
        pair_began = time.thread_time()
        began = time.thread_time()
        server = DtlsSrtpTransport(server_cert, server=True, send=to_client.append, profiles=PROFILE,
                                   remote_fingerprints=[("sha-256", client_cert.fingerprint)])
        server.start()
        spent = time.thread_time() - began
        client = DtlsSrtpTransport(client_cert, server=False, send=to_server.append, profiles=PROFILE,
                                   remote_fingerprints=[("sha-256", server_cert.fingerprint)])
        client.start()
        while to_server or to_client:
            while to_server:
                began = time.thread_time()
                server.receive(to_server.pop(0))
                spent += time.thread_time() - began
            while to_client:
                client.receive(to_client.pop(0))
        pair_s.append(time.thread_time() - pair_began)
        assert server.state == client.state == "connected"
        server_s.append(spent)
    return {"server_cpu_ms": float(np.median(server_s)) * 1000,
            "pair_cpu_ms": float(np.median(pair_s)) * 1000}


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _plain_leg(engine: HttpEngine, conference: str) -> None:
    offer, _ = offer_audio(local_ip="127.0.0.1", local_port=9, codecs=("opus",))
    leg = await engine.add_leg(conference, offer)
    await engine.remove_leg(conference, leg["id"])


async def _webrtc_leg(engine: HttpEngine, conference: str, times: list[float]) -> None:
    client = ScriptedWebRtcClient()
    await client.open()
    try:
        leg = await engine.add_leg(conference, client.offer())
        client.accept(leg["sdp"])
        await client.check()
        began = time.perf_counter()
        state = await client.handshake()
        if state == "connected":
            times.append((time.perf_counter() - began) * 1000)
        await engine.remove_leg(conference, leg["id"])
    finally:
        client.close()


async def over_udp(legs: int, concurrency: int, pid: int, control: str) -> dict:
    engine = HttpEngine(control)
    conference = (await engine.create_conference("mcu"))["id"]
    semaphore = asyncio.Semaphore(concurrency)

    async def bounded(job):
        async with semaphore:
            await job

    for _ in range(20):  # warm up both kinds (first certificate, contexts, imports)
        await _plain_leg(engine, conference)
        await _webrtc_leg(engine, conference, [])
    # latency: one handshake at a time (the engine's window then holds these, plus the warm-up)
    sequential: list[float] = []
    for _ in range(min(legs, 200)):
        await _webrtc_leg(engine, conference, sequential)
    latency = (await engine.stats())["webrtc"]
    # throughput: `concurrency` at a time, against the same number of plain legs
    cpu0, wall0 = _proc_cpu_s(pid), time.perf_counter()
    await asyncio.gather(*(bounded(_plain_leg(engine, conference)) for _ in range(legs)))
    cpu1, wall1 = _proc_cpu_s(pid), time.perf_counter()
    times: list[float] = []
    await asyncio.gather(*(bounded(_webrtc_leg(engine, conference, times)) for _ in range(legs)))
    cpu2, wall2 = _proc_cpu_s(pid), time.perf_counter()
    stats = (await engine.stats())["webrtc"]
    await engine.close()
    plain_cpu, webrtc_cpu = cpu1 - cpu0, cpu2 - cpu1
    return {
        "legs": legs, "connected": len(times),
        "plain_cpu_ms_per_leg": plain_cpu / legs * 1000,
        "webrtc_cpu_ms_per_leg": webrtc_cpu / legs * 1000,
        "ice_dtls_cpu_ms_per_leg": (webrtc_cpu - plain_cpu) / legs * 1000,
        "handshakes_per_core_s": legs / max(webrtc_cpu - plain_cpu, 1e-9),
        "legs_per_core_s": legs / max(webrtc_cpu, 1e-9),
        "webrtc_wall_s": wall2 - wall1, "plain_wall_s": wall1 - wall0,
        "engine_p50_ms": latency["dtls_handshake_ms_p50"], "engine_p99_ms": latency["dtls_handshake_ms_p99"],
        "client_p50_ms": float(np.percentile(sequential, 50)),
        "client_p99_ms": float(np.percentile(sequential, 99)),
        "loaded_engine_p50_ms": stats["dtls_handshake_ms_p50"],
        "loaded_engine_p99_ms": stats["dtls_handshake_ms_p99"],
        "loaded_client_p50_ms": float(np.percentile(times, 50)),
        "loaded_client_p99_ms": float(np.percentile(times, 99)),
        "failures": stats["failures"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legs", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--memory", type=int, default=400, help="in-memory handshakes")
    args = parser.parse_args()

    memory = in_memory(args.memory)
    print(f"in memory: engine (server) side {memory['server_cpu_ms']:.2f} ms CPU per handshake "
          f"= {1000 / memory['server_cpu_ms']:.0f} handshakes per core-second "
          f"(client + server together {memory['pair_cpu_ms']:.2f} ms)")

    port = _free_port()
    command = [sys.executable, "-m", "mixer.cli", "engine", "--control", f"127.0.0.1:{port}",
               "--media-ip", "127.0.0.1", "--ports", "46000-46999"]
    if shutil.which("taskset") and os.cpu_count() and os.cpu_count() >= 2:
        command = ["taskset", "-c", "0", *command]
        os.sched_setaffinity(0, {1})
    engine = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "VOICEMIX_MAX_PACKET_RATE": "100000"})
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or engine.poll() is not None:
                    raise RuntimeError("the engine did not start") from None
                time.sleep(0.1)
        pid = engine.pid  # (taskset execs the engine: the same pid)
        result = uvloop.run(over_udp(args.legs, args.concurrency, pid, f"http://127.0.0.1:{port}"))
    finally:
        engine.terminate()
        engine.wait(10)
    print(f"over UDP, {result['legs']} legs, {args.concurrency} at a time "
          f"({result['connected']} connected, failures {result['failures'] or 'none'}):")
    print(f"  engine CPU per leg: plain RTP {result['plain_cpu_ms_per_leg']:.2f} ms, "
          f"WebRTC {result['webrtc_cpu_ms_per_leg']:.2f} ms -> ICE + DTLS "
          f"{result['ice_dtls_cpu_ms_per_leg']:.2f} ms = {result['handshakes_per_core_s']:.0f} "
          f"handshakes per engine core-second ({result['legs_per_core_s']:.0f} whole WebRTC legs "
          f"set up, handshaken and removed per core-second, control API included)")
    print(f"  handshake time, one at a time: engine (ClientHello in -> keys) p50 "
          f"{result['engine_p50_ms']:.2f} ms, p99 {result['engine_p99_ms']:.2f} ms; client "
          f"(ClientHello out -> connected) p50 {result['client_p50_ms']:.2f} ms, "
          f"p99 {result['client_p99_ms']:.2f} ms")
    print(f"  handshake time, {args.concurrency} at a time (the Python load generator's queueing "
          f"included): engine p50 {result['loaded_engine_p50_ms']:.2f} ms, p99 "
          f"{result['loaded_engine_p99_ms']:.2f} ms; client p50 {result['loaded_client_p50_ms']:.2f} "
          f"ms, p99 {result['loaded_client_p99_ms']:.2f} ms")
    ok = result["handshakes_per_core_s"] >= 300 and result["client_p99_ms"] < 50
    print(f"  targets (>= 300/core-s, p99 < 50 ms): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
