"""SFU forwarding throughput with SRTP in and out, and SFU vs MCU cost for the same conference.

Two processes on two cores, as in `mcu_scale.py`: the engine alone on core 0 (uvloop, SRTP on every
leg), a load generator on core 1 that speaks for every participant from one UDP socket (senders'
SRTP packets out, every subscriber's forwarded packets in, counted, a sample authenticated with the
subscriber's own SRTP key).

1. Capacity: the conference is played faster than real time (every sender sends `speed` x 50
   packets/s) until the engine's core is full. Reported: packets forwarded per second of the
   engine's CPU time (= per core), input packets per CPU second, and how much of the core was busy.
   Shapes: "1->50" (one talker, 50 subscribers) and "50->50, last-3" (50 participants who all send,
   3 loud, each hears the 3 loudest minus itself).
   On loopback the sender's transmit runs the receiver's whole UDP receive path too (socket lookup,
   queueing, waking the reader), so the engine's core pays for its subscribers' kernels. "1->50 TUN"
   measures the same conference with the subscribers behind a TUN device read by the generator on
   its own core: the engine's packets leave through a network device as they would through a NIC.
   Needs CAP_NET_ADMIN and /dev/net/tun; skipped with the reason otherwise.
2. Cost at real time (speed 1): engine CPU ms per participant-second for the same conference in SFU
   and in MCU mode, and the ratio, measured in one run.

    python bench/sfu_forward.py            # ~4 minutes
    python bench/sfu_forward.py --quick    # one speed per shape (~1 min)
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mcu_scale import Child, _engine_main, _pin, answer_target, proc_cpu_s  # noqa: E402

HOST = "127.0.0.1"
ENGINE_CORE, GEN_CORE = 0, 1
AUDIO_LEVEL_EXT_ID = 1
CYCLE = 50
GROUPS = 10  # each 20 ms frame's sends are spread over 10 steps of 2 ms, as real senders are
# The TUN sink (`--egress tun`): the engine's media address is on the device's network, the
# subscribers are a peer address routed through it.
SINK_DEVICE, SINK_LOCAL, SINK_PEER, SINK_PORT0 = "vmsink0", "10.201.0.1", "10.201.0.2", 40000
SETTINGS = {"media_ports": "20000-29999", "max_packet_rate": 1_000_000, "srtp_required": True,
            "sfu_last_n": 3, "max_legs_per_conference": 1000}


# ================================================================================== load generator
def _payloads():
    """A loud tone cycle (level ~10, V=1) and a quiet cycle (level 127, V=0), Opus-encoded once."""
    import numpy as np

    from mixer import _rtp
    from mixer.codec import FRAME_SAMPLES, FrameEncoder

    t = np.arange(CYCLE * FRAME_SAMPLES) / 48000.0
    loud = (np.sin(2 * np.pi * 440.0 * t) * 0.3 * 32767).astype(np.int16)
    quiet = np.random.default_rng(3).normal(0, 3.0, len(t)).astype(np.int16)
    result = []
    for signal, level, voice in ((loud, 10, True), (quiet, _rtp.AUDIO_LEVEL_SILENT, False)):
        encoder = FrameEncoder("opus")
        frames = [encoder.encode(np.ascontiguousarray(signal[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]))
                  for k in range(CYCLE)]
        result.append((frames, _rtp.audio_level_extension(AUDIO_LEVEL_EXT_ID, level, voice)))
    return result


class TunSink:
    """A TUN device standing in for a network card: the engine's packets to SINK_PEER leave through
    a real network device (IP and UDP output, qdisc, device transmit) instead of loopback, whose
    transmit also runs the receiver's whole UDP receive path on the sender's core. This process
    reads them off the device on its own core, as the wire would take them. Made with TUNSETIFF
    (needs CAP_NET_ADMIN); the device vanishes when this process closes it."""

    def __init__(self) -> None:
        import fcntl
        import struct
        import subprocess

        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        try:
            ifreq = struct.pack("16sH", SINK_DEVICE.encode(), 0x0001 | 0x1000)  # IFF_TUN | IFF_NO_PI
            fcntl.ioctl(self.fd, 0x400454CA, ifreq)  # TUNSETIFF
            for command in (["ip", "addr", "add", f"{SINK_LOCAL}/24", "dev", SINK_DEVICE],
                            ["ip", "link", "set", SINK_DEVICE, "up", "txqueuelen", "10000"]):
                subprocess.run(command, check=True, capture_output=True, text=True)
        except BaseException:
            os.close(self.fd)
            raise

    def drain(self, counts: dict, verify) -> int:
        """Read every IPv4/UDP packet waiting; count RTP and RTCP; `verify(port, payload)` sees each."""
        got = 0
        while True:
            try:
                packet = os.read(self.fd, 2048)
            except BlockingIOError:
                return got
            header = (packet[0] & 0x0F) * 4
            if packet[0] >> 4 != 4 or packet[9] != 17 or len(packet) < header + 10:
                continue  # not IPv4/UDP (e.g. IPv6 router solicitations)
            port = int.from_bytes(packet[header + 2:header + 4], "big")
            payload = packet[header + 8:]
            got += 1
            if 200 <= payload[1] <= 206:
                counts["rtcp"] += 1
            else:
                counts["rtp"] += 1
                verify(("tun", port), payload)

    def close(self) -> None:
        os.close(self.fd)


def _loadgen_main(conn, core: int, egress: str = "loopback") -> None:
    _pin(core)
    from mixer import _netio
    from mixer.rtp.srtp import SrtpContext
    from mixer.sdp import offer_audio, parse
    from mixer.sdp.crypto import parse_crypto

    sink = None
    if egress == "tun":
        try:
            sink = TunSink()
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            conn.send(("error", f"no TUN device here ({str(detail).strip()})"))
            return

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for force, opt, size in ((33, socket.SO_RCVBUF, 64 << 20), (32, socket.SO_SNDBUF, 16 << 20)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    (loud, loud_ext), (quiet, quiet_ext) = _payloads()
    receiver = _netio.BatchReceiver(256)
    conn.send(("ok", {"pid": os.getpid()}))
    keys: list = []
    sink_keys: dict[tuple, object] = {}  # how a subscriber's packets are told apart -> its SrtpContext
    legs: list = []  # (packed engine address, payload type, SrtpContext)
    seqs: dict[int, int] = {}  # per sender, continued across runs (SRTP refuses a repeated index)

    while True:
        op, *args = conn.recv()
        if op == "stop":
            if sink is not None:
                sink.close()
            conn.send(("ok", True))
            return
        if op == "offers":
            # with a TUN sink, subscribers (all but the first `senders` legs) are at SINK_PEER, one
            # port each, reached through the device; senders stay on loopback
            count, senders_first = args[0], args[1] if len(args) > 1 else args[0]
            keys.clear()
            offers = []
            for i in range(count):
                on_sink = sink is not None and i >= senders_first
                sdp, crypto = offer_audio(local_ip=SINK_PEER if on_sink else HOST,
                                          local_port=SINK_PORT0 + 2 * i if on_sink else port,
                                          codecs=("opus",), srtp=True,
                                          audio_level_ext_id=AUDIO_LEVEL_EXT_ID)
                offers.append(sdp)
                keys.append(crypto)
            conn.send(("ok", offers))
        elif op == "answers":
            legs.clear()
            seqs.clear()
            sink_keys.clear()
            for i, (answer, crypto) in enumerate(zip(args[0], keys)):
                engine_port, pt = answer_target(answer)
                description = parse(answer)
                remote = parse_crypto(description.media[0].attribute("crypto"))
                connection = description.connection_of(description.media[0])
                engine_ip = connection.address if connection is not None else HOST
                context = SrtpContext(remote.suite, crypto.key, remote.key)
                legs.append((_netio.pack_address(engine_ip, engine_port), pt, context))
                sink_keys[("tun", SINK_PORT0 + 2 * i)] = context  # by where a packet went
                sink_keys[("loopback", engine_port)] = context      # by where it came from
            conn.send(("ok", True))
        elif op == "run":
            senders, loud_count, speed, seconds = args
            conn.send(("ok", _run(sock, receiver, legs, seqs, senders, loud_count, speed, seconds,
                                  loud, loud_ext, quiet, quiet_ext, sink, sink_keys)))


def _run(sock, receiver, legs, seqs: dict, senders: list[int], loud_count: int, speed: float, seconds: float,
         loud, loud_ext, quiet, quiet_ext, sink: TunSink | None = None, sink_keys: dict | None = None) -> dict:
    """Every sender sends `speed` x 50 packets/s for `seconds`; everything that comes back is counted.
    The first `loud_count` senders talk, the rest send quiet frames. The first packets each
    subscriber gets are authenticated with its SRTP key (`srtp_checked`/`srtp_failed`)."""
    from mixer import _rtp, _netio

    counts = {"rtp": 0, "rtcp": 0, "checked": 0, "failed": 0}
    checked_per_port: dict[tuple, int] = {}

    def verify(key: tuple, payload: bytes) -> None:
        if checked_per_port.get(key, 0) >= 20:
            return
        checked_per_port[key] = checked_per_port.get(key, 0) + 1
        context = (sink_keys or {}).get(key)
        counts["checked"] += 1
        if context is None or context.unprotect(payload) is None:
            counts["failed"] += 1

    fd = sock.fileno()
    groups = min(GROUPS, len(senders))  # senders are spread over the frame, not sent in one burst
    interval = 0.020 / speed / groups
    sent = received = rtcp = 0
    for i in senders:
        seqs.setdefault(i, 0)
    ranks = {i: rank for rank, i in enumerate(senders)}
    datagrams: list[bytes] = []
    addresses: list[bytes] = []
    start = time.monotonic()
    end = start + seconds
    step = 0
    behind = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = start + step * interval
        if now - due > 0.2:  # the generator itself cannot keep up: say so rather than burst
            behind += 1
            step = int((now - start) / interval)
            due = start + step * interval
        while now >= due:  # every step that is due, in one batch
            k = (step // groups) % CYCLE
            for i in senders[step % groups::groups]:
                packed, pt, srtp = legs[i]
                payloads, ext = (loud, loud_ext) if ranks[i] < loud_count else (quiet, quiet_ext)
                wire = _rtp.build_rtp(pt, seqs[i] & 0xFFFF, (seqs[i] * 960) & 0xFFFFFFFF, 0x1000 + i,
                                       payloads[k], False, _rtp.EXTENSION_PROFILE_ONE_BYTE, ext)
                seqs[i] += 1
                datagrams.append(srtp.protect(wire))
                addresses.append(packed)
            step += 1
            due = start + step * interval
        if datagrams:
            sent += _netio.send_batch(fd, datagrams, addresses)
            datagrams.clear()
            addresses.clear()
        got = receiver.receive(fd)
        for data, address in got:
            if 200 <= data[1] <= 206:
                rtcp += 1
            else:
                received += 1
                verify(("loopback", address[1]), data)
        drained = sink.drain(counts, verify) if sink is not None else 0
        if not got and not drained and now < due:
            time.sleep(min(0.0005, max(0.0, due - now)))
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        got = receiver.receive(fd)
        received += sum(1 for data, _ in got if not 200 <= data[1] <= 206)
        drained = sink.drain(counts, verify) if sink is not None else 0
        if not got and not drained:
            time.sleep(0.002)
    return {"sent": sent, "received": received + counts["rtp"], "rtcp": rtcp + counts["rtcp"],
            "behind": behind, "seconds": time.monotonic() - start,
            "srtp_checked": counts["checked"], "srtp_failed": counts["failed"]}


# ==================================================================================== orchestration
def measure(engine: Child, gen: Child, mode: str, legs: int, senders: list[int], loud: int,
            speed: float, seconds: float) -> dict:
    conference = engine.call("create", mode)
    offers = gen.call("offers", legs, len(senders))
    answers = engine.call("add_legs", conference, offers, timeout=120)
    gen.call("answers", answers)
    gen.call("run", senders, loud, speed, 1.0)  # warm up: speakers chosen, slots filled
    before = engine.call("snapshot")
    user0, sys0 = proc_cpu_s(engine.pid)
    result = gen.call("run", senders, loud, speed, seconds, timeout=seconds + 60)
    user1, sys1 = proc_cpu_s(engine.pid)
    after = engine.call("snapshot")
    cpu = after["cpu_s"] - before["cpu_s"]
    wall = after["mono"] - before["mono"]
    cstats_before = before["conferences"][conference]
    cstats = after["conferences"][conference]
    forwarded = (cstats.get("packets_forwarded", 0) - cstats_before.get("packets_forwarded", 0)
                 if mode == "sfu" else after["packets_out"] - before["packets_out"])
    packets_in = after["packets_in"] - before["packets_in"]
    return {"mode": mode, "legs": legs, "speed": speed, "cpu_s": cpu, "wall_s": wall,
            "busy": cpu / wall, "forwarded": forwarded, "packets_in": packets_in,
            "forwarded_per_cpu_s": forwarded / cpu if cpu else 0.0,
            "in_per_cpu_s": packets_in / cpu if cpu else 0.0,
            "received_by_clients": result["received"], "gen_behind": result["behind"],
            "srtp_checked": result["srtp_checked"], "srtp_failed": result["srtp_failed"],
            "kernel_share": (sys1 - sys0) / max((user1 - user0) + (sys1 - sys0), 1e-9),
            "cpu_ms_per_participant_s": cpu * 1000.0 / (legs * wall)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if os.cpu_count() is None or os.cpu_count() < 2:
        print("needs two cores (engine and load generator each on its own)")
        return 1
    ctx = multiprocessing.get_context("spawn")
    shapes = {
        "1->50": (51, [0], 1),
        "50->50 last-3": (50, list(range(50)), 3),
    }
    # (row label, shape, egress): "tun" sends the subscribers' packets out through a network device
    runs = [("1->50", "1->50", "loopback"), ("1->50 TUN", "1->50", "tun"),
            ("50->50 last-3", "50->50 last-3", "loopback")]
    speeds = {"1->50": [20, 60, 120], "50->50 last-3": [10, 20, 40]}
    if args.quick:
        speeds = {"1->50": [60], "50->50 last-3": [20]}
    rows = []
    print("SFU forwarding with SRTP in and out; engine alone on one core, load generator on the other")
    print(f"{'shape':16} {'speed':>5} {'in/s':>8} {'fwd/s':>9} {'core busy':>9} "
          f"{'fwd per CPU-s':>13} {'in per CPU-s':>12} {'kernel':>6} {'clients got':>11}")
    for label, shape, egress in runs:
        legs, senders, loud = shapes[shape]
        settings = {**SETTINGS, "media_ip": SINK_LOCAL} if egress == "tun" else SETTINGS
        for speed in speeds[shape]:
            try:  # the generator first: with a TUN sink it makes the device the engine binds on
                gen = Child(ctx, _loadgen_main, GEN_CORE, egress)
            except RuntimeError as exc:
                print(f"{label:16} skipped: {exc}")
                break
            engine = Child(ctx, _engine_main, ENGINE_CORE, settings)
            try:
                r = measure(engine, gen, "sfu", legs, senders, loud, speed, args.seconds)
            finally:
                gen.close()
                engine.close()
            rows.append((label, r))
            failed = (f"  SRTP check FAILED on {r['srtp_failed']} of {r['srtp_checked']}"
                      if r["srtp_failed"] else "")
            print(f"{label:16} {speed:5.0f} {r['packets_in'] / r['wall_s']:8.0f} "
                  f"{r['forwarded'] / r['wall_s']:9.0f} {r['busy'] * 100:8.0f}% "
                  f"{r['forwarded_per_cpu_s']:13.0f} {r['in_per_cpu_s']:12.0f} "
                  f"{r['kernel_share'] * 100:5.0f}% {r['received_by_clients']:11d}" + failed
                  + ("  (generator fell behind)" if r["gen_behind"] else ""))
    for egress, labels in (("loopback", ("1->50", "50->50 last-3")), ("a network device", ("1->50 TUN",))):
        rates = [r["forwarded_per_cpu_s"] for label, r in rows if label in labels]
        if rates:
            print(f"best through {egress}: {max(rates) / 1000:.0f}k packets forwarded per core-second "
                  "with SRTP (target 150k)")

    print("\nSame conferences at real time (speed 1): engine CPU per participant-second, SFU vs MCU")
    print(f"{'shape':16} {'SFU ms':>8} {'MCU ms':>8} {'MCU/SFU':>8}")
    for shape, (legs, senders, loud) in shapes.items():
        cost = {}
        for mode in ("sfu", "mcu"):
            engine = Child(ctx, _engine_main, ENGINE_CORE, SETTINGS)
            gen = Child(ctx, _loadgen_main, GEN_CORE)
            try:
                cost[mode] = measure(engine, gen, mode, legs, senders, loud, 1.0, args.seconds)
            finally:
                gen.close()
                engine.close()
        sfu, mcu = cost["sfu"]["cpu_ms_per_participant_s"], cost["mcu"]["cpu_ms_per_participant_s"]
        # (no kernel share here: at a few hundred ms of CPU the tick-based user/system split is noise)
        print(f"{shape:16} {sfu:8.2f} {mcu:8.2f} {mcu / sfu:7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
