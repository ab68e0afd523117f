"""How big an MCU conference one core holds, what it costs per participant, versus a naive MCU.

    python bench/mcu_scale.py            # full: N = 10, 100, 500, 750, 1000, ... until it fails
    python bench/mcu_scale.py --quick    # N = 10 and 100 only, short windows (< 60 s)

Three processes, one run:

* the ENGINE (a real `Engine` on uvloop, legs on real UDP sockets) pinned to core 0, driven over a
  multiprocessing Pipe (create conference, add legs with SDP offers, snapshots, profiling);
* the LOAD GENERATOR pinned to core 1: Opus payloads are pre-encoded once (a 1 s cycle of a loud tone
  per talker, a 1 s cycle of comfort-level noise for everyone else); per 20 ms tick it only builds
  RTP (`mixer._rtp.build_rtp`, per-leg SSRC/seq/ts, RFC 6464 level extension: talkers V=1 at their
  measured level, everyone else level 127 V=0) and `sendto`s it to each leg's engine port, from ONE
  UDP socket that every leg's offer names; it drains the mixes the engine sends back and counts them;
* this process, which orchestrates, reads the engine's CPU time and RSS, and prints the tables.

Full mode also measures, at the largest N that holds, two floors (`mcu_floor.py`: the same legs and
per-packet I/O with no mixing) and ours again back to back, runs the in-process cost model
(`mcu_costs.py`), and profiles the engine with `perf` and `py-spy` when installed. Each size is
preceded by a reference workload on the engine's core (`ref ms`): this VM's speed drifts.

Per conference size N the engine runs `warm-up` seconds, then a measurement window of >= 5 s:
CPU = engine process CPU time over the window (in-process `time.process_time()`, cross-checked with
/proc/<pid>/stat); tick lateness = how late each 20 ms tick fired against its absolute deadline,
recorded for the window only; "holds real time" = lateness p99 < 5 ms and no skipped ticks.
RSS per participant = (engine VmRSS after warm-up - VmRSS before any leg) / N.

The naive baseline (`mcu_naive.NaiveMcuConference`, mode "naive") is registered in the engine process
only. Added latency comes from `mixer.sim.call.run_call` (4 participants, zero network jitter).
"""
from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
for _p in (str(REPO_DIR), str(BENCH_DIR)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

HOST = "127.0.0.1"
AUDIO_LEVEL_EXT_ID = 1
ONE_BYTE_PROFILE = 0xBEDE
TALKERS = 3
TALKER_TONES_HZ = (350.0, 520.0, 710.0, 930.0, 1170.0, 1430.0, 1710.0, 2010.0, 2330.0, 2670.0, 3030.0, 3310.0)
CYCLE_FRAMES = 50                     # 1 s of pre-encoded payloads, looped
FRAME_S = 0.020
SEND_SLOTS = 10                       # the load generator spreads each frame's sends over 10 x 2 ms
SLOT_S = FRAME_S / SEND_SLOTS
LATENESS_LIMIT_MS = 5.0
ENGINE_CORE = 0
GEN_CORE = 1
MEDIA_PORTS = "20000-59999"          # up to 20000 legs (rtcp-mux: one socket per leg)


# ============================================================================================ engine
def _pin(core: int) -> None:
    """One core each, at the highest normal priority (nice -20), so that other work on a shared
    machine disturbs the measurement as little as possible (what remains is measured: see
    `core_busy`)."""
    os.sched_setaffinity(0, {core})
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -20)
    except OSError:
        pass


def _engine_main(conn, core: int, settings_kwargs: dict) -> None:
    """Engine process: an Engine on uvloop, controlled over `conn`."""
    _pin(core)
    import uvloop
    uvloop.run(_engine_serve(conn, settings_kwargs))


async def _engine_serve(conn, settings_kwargs: dict) -> None:
    import asyncio
    import gc
    import cProfile
    import io
    import pstats
    from array import array

    import numpy as np

    import mcu_floor
    import mcu_naive
    from mixer.engine.engine import Engine
    from mixer.settings import EngineSettings

    engine = Engine(EngineSettings(**settings_kwargs))
    mcu_naive.register(engine)
    mcu_floor.register(engine)
    engine.start()
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    # Record every tick's lateness against its deadline, and how long the tick itself took.
    lateness = array("d")
    busy = array("d")
    inner = engine.clock.on_tick

    def recorded_tick(deadline_ms: float) -> None:
        began = time.monotonic() * 1000.0
        lateness.append(began - deadline_ms)
        inner(deadline_ms)
        busy.append(time.monotonic() * 1000.0 - began)

    engine.clock.on_tick = recorded_tick
    profiler: list = []

    def gc_collections() -> int:
        return sum(s["collections"] for s in gc.get_stats())

    # Every garbage collection: (generation, pause in ms), to tell GC pauses from other lateness.
    gc_pauses: list = []
    gc_began = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_began[0] = time.perf_counter()
        else:
            gc_pauses.append((info["generation"], (time.perf_counter() - gc_began[0]) * 1000.0))

    gc.callbacks.append(on_gc)

    def snapshot() -> dict:
        stats = engine.stats()
        return {
            "cpu_s": time.process_time(),
            "mono": time.monotonic(),
            "tick_index": len(lateness),
            "skipped": engine.clock.skipped,
            "packets_in": stats["packets_in"],
            "packets_out": stats["packets_out"],
            "drops": stats["drops"],
            "legs": stats["legs"],
            "gc_collections": gc_collections(),
            "gc_index": len(gc_pauses),
            "conferences": {cid: c.stats() for cid, c in engine.conferences.items()},
        }

    def gc_window(start: int) -> dict:
        pauses = gc_pauses[start:]
        return {"count": len(pauses), "gen2": sum(1 for g, _ in pauses if g == 2),
                "max_ms": max((ms for _, ms in pauses), default=0.0),
                "total_ms": sum(ms for _, ms in pauses),
                "over_5ms": sum(1 for _, ms in pauses if ms > 5.0)}

    def window(start: int) -> dict:
        lat = np.array(lateness[start:], dtype=np.float64)
        bz = np.array(busy[start:], dtype=np.float64)
        if len(lat) == 0:
            return {"ticks": 0}
        return {
            "ticks": int(len(lat)),
            "lateness_p50": float(np.percentile(lat, 50)),
            "lateness_p99": float(np.percentile(lat, 99)),
            "lateness_max": float(lat.max()),
            "busy_mean": float(bz.mean()) if len(bz) else 0.0,
            "busy_p99": float(np.percentile(bz, 99)) if len(bz) else 0.0,
        }

    def calibrate() -> float:
        """CPU ms of a fixed reference workload (20 Opus encodes at the engine's settings + a Python
        loop), best of 3: how fast this core is right now. Lower is faster."""
        from mixer.codec import FrameEncoder, OpusSettings

        t = np.arange(960 * 20) / 48000.0
        mix = (np.sin(2 * np.pi * 350.0 * t) + np.sin(2 * np.pi * 520.0 * t)) * 0.3 * 32767
        frames = [np.ascontiguousarray(mix[i * 960:(i + 1) * 960].astype(np.int16)) for i in range(20)]
        settings = engine.settings
        best = float("inf")
        for _ in range(3):
            hint = settings.opus_packet_loss_percent or 0
            encoder = FrameEncoder("opus", OpusSettings(settings.opus_bitrate, settings.opus_complexity,
                                                        settings.opus_fec and hint > 0, hint))
            began = time.process_time()
            for frame in frames:
                encoder.encode(frame)
            x = 0
            for i in range(200_000):
                x += i
            best = min(best, (time.process_time() - began) * 1000.0)
        return best

    def cprofile_stop(top: int) -> str:
        prof = profiler.pop()
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
        return out.getvalue()

    async def add_legs(conference_id: str, offers: list) -> None:
        try:
            answers = []
            for sdp in offers:
                answers.append((await engine.add_leg(conference_id, sdp))["sdp"])
            os.set_blocking(conn.fileno(), True)
            conn.send(("ok", answers))
        except Exception as exc:  # noqa: BLE001 - reported to the orchestrator
            conn.send(("error", repr(exc)))

    def on_command() -> None:
        # uvloop's add_reader makes the fd non-blocking; a large message (N offers, N answers) must
        # be read and written whole.
        os.set_blocking(conn.fileno(), True)
        while True:
            try:
                if not conn.poll():
                    return
                op, *args = conn.recv()
            except (EOFError, OSError):  # the orchestrator is gone: stop, never spin on a dead pipe
                loop.remove_reader(conn.fileno())
                if not done.done():
                    done.set_result(None)
                return
            try:
                if op == "add_legs":
                    loop.create_task(add_legs(*args))
                    continue
                if op == "create":
                    result = engine.create_conference(args[0])["id"]
                elif op == "snapshot":
                    result = snapshot()
                elif op == "window":
                    result = window(args[0])
                elif op == "calibrate":
                    result = calibrate()
                elif op == "gc_window":
                    result = gc_window(args[0])
                elif op == "cprofile_start":
                    profiler.append(cProfile.Profile())
                    profiler[-1].enable()
                    result = True
                elif op == "cprofile_stop":
                    result = cprofile_stop(args[0])
                elif op == "stop":
                    loop.remove_reader(conn.fileno())
                    conn.send(("ok", True))
                    if not done.done():
                        done.set_result(None)
                    return
                else:
                    raise ValueError(f"unknown op {op}")
                conn.send(("ok", result))
            except Exception as exc:  # noqa: BLE001
                conn.send(("error", repr(exc)))

    loop.add_reader(conn.fileno(), on_command)
    conn.send(("ok", {"pid": os.getpid()}))
    await done
    engine.clock.stop()  # no graceful leg teardown: the process exits and the kernel closes sockets


# ===================================================================================== load generator
def encode_cycles(talkers: int):
    """Pre-encoded payload cycles: per talker a loud tone (+ its RFC 6464 level per frame, V=1),
    and one comfort-level noise cycle for everyone else (sent with level 127, V=0)."""
    import numpy as np

    from mixer import _mix, _rtp
    from mixer.codec import FRAME_SAMPLES, MIX_RATE, FrameEncoder

    n = CYCLE_FRAMES * FRAME_SAMPLES
    t = np.arange(n) / MIX_RATE
    tones, tone_exts = [], []
    for i in range(talkers):
        freq = TALKER_TONES_HZ[i % len(TALKER_TONES_HZ)]
        signal = (np.sin(2 * np.pi * freq * t) * 0.3 * 32767).astype(np.int16)
        encoder = FrameEncoder("opus")
        payloads, exts = [], []
        for k in range(CYCLE_FRAMES):
            frame = np.ascontiguousarray(signal[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES])
            payloads.append(encoder.encode(frame))
            exts.append(_rtp.audio_level_extension(AUDIO_LEVEL_EXT_ID, _mix.audio_level(frame), True))
        tones.append(payloads)
        tone_exts.append(exts)
    rng = np.random.default_rng(7)
    noise = rng.normal(0, 3.0, n).astype(np.int16)  # about -80 dBFS: comfort level
    encoder = FrameEncoder("opus")
    silence = [encoder.encode(np.ascontiguousarray(noise[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES]))
               for k in range(CYCLE_FRAMES)]
    silent_ext = _rtp.audio_level_extension(AUDIO_LEVEL_EXT_ID, _rtp.AUDIO_LEVEL_SILENT, False)
    return tones, tone_exts, silence, silent_ext


def _loadgen_main(conn, core: int) -> None:
    """Load generator process: one UDP socket for all simulated participants."""
    _pin(core)
    import random
    from array import array

    import numpy as np

    from mixer._rtp import build_rtp

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt_force, opt, size in ((33, socket.SO_RCVBUF, 64 << 20), (32, socket.SO_SNDBUF, 16 << 20)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt_force, size)  # SO_RCVBUFFORCE / SO_SNDBUFFORCE
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    cycles = encode_cycles(TALKERS)
    conn.send(("ok", {"pid": os.getpid(), "port": sock.getsockname()[1],
                      "tone_bytes": len(cycles[0][0][0]), "silence_bytes": len(cycles[2][0])}))

    recv_packets = recv_bytes = recv_rtcp = 0
    sent = send_errors = 0
    skipped = 0
    lateness = array("d")
    groups: list = []
    t0 = 0.0
    j = 0  # send step: frame j // SEND_SLOTS, sub-slot j % SEND_SLOTS
    running = False
    buf = bytearray(4096)
    recv_into = sock.recv_into

    def drain() -> None:
        nonlocal recv_packets, recv_bytes, recv_rtcp
        while True:
            try:
                size = recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ICMP errors from a closed engine port
            if size >= 2 and 200 <= buf[1] <= 204:
                recv_rtcp += 1
            else:
                recv_packets += 1
                recv_bytes += size

    def counters() -> dict:
        return {"sent": sent, "send_errors": send_errors, "recv_packets": recv_packets,
                "recv_bytes": recv_bytes, "recv_rtcp": recv_rtcp, "skipped": skipped,
                "tick_index": len(lateness), "mono": time.monotonic()}

    tones, tone_exts, silence, silent_ext = cycles
    sendto = sock.sendto
    while True:
        if running:
            now = time.monotonic()
            deadline = t0 + j * SLOT_S
            if now >= deadline:
                behind = int((now - deadline) / SLOT_S)
                if behind > 3 * SEND_SLOTS:
                    skipped += behind
                    j += behind
                    deadline = t0 + j * SLOT_S
                lateness.append((now - deadline) * 1000.0)
                k, slot = divmod(j, SEND_SLOTS)
                f = k % CYCLE_FRAMES
                ts_step = k * 960
                silent_payload = silence[f]
                for i, addr, pt, ssrc, seq0, ts0 in groups[slot]:
                    if i < TALKERS:
                        payload, ext = tones[i][f], tone_exts[i][f]
                    else:
                        payload, ext = silent_payload, silent_ext
                    packet = build_rtp(pt, (seq0 + k) & 0xFFFF, (ts0 + ts_step) & 0xFFFFFFFF, ssrc,
                                       payload, k == 0, ONE_BYTE_PROFILE, ext)
                    try:
                        sendto(packet, addr)
                        sent += 1
                    except OSError:
                        send_errors += 1
                j += 1
                drain()
                continue
            timeout = deadline - now
        else:
            timeout = None
        readable, _, _ = select.select([sock, conn], [], [], timeout)
        if sock in readable:
            drain()
        if conn in readable:
            op, *args = conn.recv()
            if op == "start":
                targets, t0 = args
                rnd = random.Random(11)
                # Real clients are not in phase: leg i sends in sub-slot i % SEND_SLOTS of each 20 ms
                # frame, so arrivals spread over the frame as they would from independent phones.
                groups = [[] for _ in range(SEND_SLOTS)]
                for i, (port, pt) in enumerate(targets):
                    groups[i % SEND_SLOTS].append((i, (HOST, port), pt, rnd.getrandbits(32),
                                                   rnd.getrandbits(16), rnd.getrandbits(32)))
                j = 0
                running = True
                conn.send(("ok", True))
            elif op == "snapshot":
                conn.send(("ok", counters()))
            elif op == "window":
                lat = np.array(lateness[args[0]:], dtype=np.float64)
                conn.send(("ok", {"ticks": int(len(lat)),
                                  "lateness_p99": float(np.percentile(lat, 99)) if len(lat) else 0.0}))
            elif op == "stop":
                conn.send(("ok", True))
                sock.close()
                return


# ======================================================================================= orchestration
class Child:
    """A spawned process with a request/response Pipe."""

    def __init__(self, ctx, target, *args) -> None:
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child_conn, *args), daemon=True)
        self.proc.start()
        child_conn.close()
        self.hello = self._recv(120)
        self.pid = self.hello["pid"]

    def call(self, *message, timeout: float = 300.0):
        self.conn.send(message)
        return self._recv(timeout)

    def _recv(self, timeout: float):
        if not self.conn.poll(timeout):
            raise TimeoutError(f"no answer from pid {self.proc.pid} in {timeout} s")
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(value)
        return value

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self.call("stop", timeout=10)
            except (TimeoutError, OSError, EOFError, RuntimeError):
                pass
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_cpu_s(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process from /proc/<pid>/stat, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def others_cpu(exclude: set[int]) -> dict[int, float]:
    """CPU seconds (utime + stime) of every other process, by pid (children reaped in the window
    are not seen: an undercount, never the double count that cutime would add)."""
    tick = os.sysconf("SC_CLK_TCK")
    result = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        result[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    return result


def ctx_switches(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("nonvoluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def core_times() -> dict[int, tuple[float, float, float]]:
    """Per core (user+nice+system, irq+softirq, steal) in seconds from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    result = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in values]
                result[int(name[3:])] = ((v[0] + v[1] + v[2]) / tick, (v[5] + v[6]) / tick,
                                         (v[7] if len(v) > 7 else 0) / tick)
    return result


def answer_target(answer_sdp: str) -> tuple[int, int]:
    from mixer.sdp import parse

    media = next(m for m in parse(answer_sdp).media if m.media == "audio")
    return media.port, int(media.formats[0])


@dataclass
class Measurement:
    mode: str
    n: int
    window_s: float = 0.0
    cpu_s: float = 0.0
    cpu_stat_s: float = 0.0
    lateness_p50: float = 0.0
    lateness_p99: float = 0.0
    lateness_max: float = 0.0
    busy_mean: float = 0.0
    busy_p99: float = 0.0
    ticks: int = 0
    skipped: int = 0
    rss_before_kb: int = 0
    rss_legs_kb: int = 0
    rss_after_kb: int = 0
    packets_in: int = 0
    packets_out: int = 0
    drops: dict = field(default_factory=dict)
    gen_sent: int = 0
    gen_received: int = 0
    gen_lateness_p99: float = 0.0
    gen_skipped: int = 0
    decodes: int = 0
    shared_encodes: int = 0
    own_encodes: int = 0
    conf_ticks: int = 0
    speakers: int = 0
    gc_collections: int = 0
    gc_gen2: int = 0
    gc_max_ms: float = 0.0
    gc_total_ms: float = 0.0
    setup_s: float = 0.0
    others_s: float = 0.0           # CPU used by other processes on the machine in the window
    involuntary: int = 0            # times the engine was preempted (nonvoluntary context switches)
    irq_s: float = 0.0              # irq+softirq time on the engine's core (loopback delivery)
    steal_s: float = 0.0            # time the hypervisor took from the engine's core
    attempts: int = 1
    ref_ms: float = 0.0             # the engine core's speed just before: reference workload CPU ms
    profile: str = ""
    error: str = ""

    @property
    def audio_s(self) -> float:
        """Seconds of audio the engine mixed in the window: ticks that ran x 20 ms (equal to the
        window when it holds real time; less when it skipped ticks)."""
        return self.ticks * FRAME_S if self.ticks else self.window_s

    @property
    def cpu_ms_per_participant_s(self) -> float:
        return self.cpu_s * 1000.0 / self.n / self.audio_s if self.audio_s else float("nan")

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_s / self.window_s if self.window_s else float("nan")

    @property
    def rss_kb_per_participant(self) -> float:
        return (self.rss_after_kb - self.rss_before_kb) / self.n

    @property
    def holds(self) -> bool:
        return (not self.error and self.ticks > 0 and self.lateness_p99 < LATENESS_LIMIT_MS
                and self.skipped == 0)

    @property
    def disturbed(self) -> float:
        """A disturbance score: other processes' CPU on the (2-core) machine as a share of one core,
        plus ten times the share of the window the hypervisor stole from the engine's core (steal
        comes as whole stalls of tens of ms: 1% of an 8 s window is enough to break the p99)."""
        return (self.others_s + 10 * self.steal_s) / self.window_s if self.window_s else 1.0

    @property
    def tick_share(self) -> float:
        """Fraction of the engine's CPU spent inside conference ticks (rest: receive path, loop)."""
        tick_s = self.busy_mean * self.ticks / 1000.0
        return tick_s / self.cpu_s if self.cpu_s else float("nan")


def measure(mode: str, n: int, warmup_s: float, window_s: float, profile: str | None = None,
            log=print, attempt: int = 1) -> Measurement:
    """One engine + one load generator, one conference of `n` legs in `mode`."""
    from mixer.sdp import offer_audio

    ctx = mp.get_context("spawn")
    result = Measurement(mode, n, attempts=attempt)
    engine = gen = None
    began = time.monotonic()
    try:
        engine = Child(ctx, _engine_main, ENGINE_CORE,
                       {"media_ports": MEDIA_PORTS, "max_legs_per_conference": 20000})
        gen = Child(ctx, _loadgen_main, GEN_CORE)
        result.ref_ms = engine.call("calibrate")
        time.sleep(0.3)  # let the fresh engine settle before its baseline RSS
        result.rss_before_kb = rss_kb(engine.pid)
        conference_id = engine.call("create", mode)
        offers = [offer_audio(local_ip=HOST, local_port=gen.hello["port"], codecs=("opus",),
                              rtcp_mux=True, audio_level_ext_id=AUDIO_LEVEL_EXT_ID)[0]
                  for _ in range(n)]
        answers = engine.call("add_legs", conference_id, offers, timeout=600)
        targets = [answer_target(a) for a in answers]
        result.rss_legs_kb = rss_kb(engine.pid)
        gen.call("start", targets, time.monotonic() + 0.05)
        result.setup_s = time.monotonic() - began
        time.sleep(warmup_s)
        e0, g0 = engine.call("snapshot"), gen.call("snapshot")
        stat0 = proc_cpu_s(engine.pid)
        core0 = core_times()[ENGINE_CORE]
        mine = {os.getpid(), engine.pid, gen.pid}
        others0 = others_cpu(mine)
        invol0 = ctx_switches(engine.pid)
        spy = None
        if profile == "py-spy":
            spy = _start_py_spy(engine.pid, window_s)
        elif profile == "perf":
            spy = _start_perf(engine.pid, window_s)
        elif profile == "cprofile":
            engine.call("cprofile_start")
        time.sleep(window_s)
        e1 = engine.call("snapshot")
        stat1 = proc_cpu_s(engine.pid)
        core1 = core_times()[ENGINE_CORE]
        others1 = others_cpu(mine | ({spy[0].pid} if spy else set()))
        invol1 = ctx_switches(engine.pid)
        g1 = gen.call("snapshot")
        if profile == "cprofile":
            result.profile = engine.call("cprofile_stop", 40)
        elif profile == "perf" and spy is not None:
            result.profile = _finish_perf(spy)
        elif spy is not None:
            result.profile = _finish_py_spy(spy)
        window = engine.call("window", e0["tick_index"])
        gwindow = gen.call("window", g0["tick_index"])
        result.rss_after_kb = rss_kb(engine.pid)
        result.window_s = e1["mono"] - e0["mono"]
        result.cpu_s = e1["cpu_s"] - e0["cpu_s"]
        result.cpu_stat_s = (stat1[0] + stat1[1]) - (stat0[0] + stat0[1])
        result.others_s = sum(v - others0.get(pid, 0.0) for pid, v in others1.items()
                              if v >= others0.get(pid, 0.0))
        result.involuntary = invol1 - invol0
        result.irq_s = core1[1] - core0[1]
        result.steal_s = core1[2] - core0[2]
        result.ticks = window["ticks"]
        result.lateness_p50 = window.get("lateness_p50", 0.0)
        result.lateness_p99 = window.get("lateness_p99", 0.0)
        result.lateness_max = window.get("lateness_max", 0.0)
        result.busy_mean = window.get("busy_mean", 0.0)
        result.busy_p99 = window.get("busy_p99", 0.0)
        result.skipped = e1["skipped"] - e0["skipped"]
        result.packets_in = e1["packets_in"] - e0["packets_in"]
        result.packets_out = e1["packets_out"] - e0["packets_out"]
        result.drops = {k: v - e0["drops"].get(k, 0) for k, v in e1["drops"].items()
                        if v - e0["drops"].get(k, 0)}
        gcw = engine.call("gc_window", e0["gc_index"])
        result.gc_collections = gcw["count"]
        result.gc_gen2 = gcw["gen2"]
        result.gc_max_ms = gcw["max_ms"]
        result.gc_total_ms = gcw["total_ms"]
        c0, c1 = e0["conferences"][conference_id], e1["conferences"][conference_id]
        result.decodes = c1["decodes"] - c0["decodes"]
        result.shared_encodes = c1["shared_encodes"] - c0["shared_encodes"]
        result.own_encodes = c1["own_encodes"] - c0["own_encodes"]
        result.conf_ticks = c1["ticks"] - c0["ticks"]
        result.speakers = len(c1["speakers"])
        result.gen_sent = g1["sent"] - g0["sent"]
        result.gen_received = g1["recv_packets"] - g0["recv_packets"]
        result.gen_skipped = g1["skipped"] - g0["skipped"]
        result.gen_lateness_p99 = gwindow["lateness_p99"]
    except Exception as exc:  # noqa: BLE001 - a failed size is a result, not a crash
        result.error = repr(exc)
    finally:
        for child in (gen, engine):
            if child is not None:
                child.close()
    log(_detail_line(result))
    return result


_retry_budget: int | None = None  # retries left in the whole run (None: unlimited); --quick: 1
TARGET_N = 500
TARGET_REPEATS = 3
DISTURBED_LIMIT = 0.10  # retry a size that failed while others used > 10% of a core, or steal > 1%
ATTEMPTS = 3


def measure_clean(mode: str, n: int, warmup_s: float, window_s: float, log=print,
                  attempts: int = ATTEMPTS) -> Measurement:
    """`measure`, repeated (up to ATTEMPTS) when a size did not hold real time while other
    processes disturbed the machine, or the run failed. The machine may be shared."""
    best: Measurement | None = None

    def better(r: Measurement, than: Measurement | None) -> bool:
        # Disturbance can only hurt a run: a size that held real time despite it did hold; among
        # runs that did not, the least disturbed one is the fairest.
        if than is None or (than.error and not r.error):
            return True
        if r.error or (than.holds and not r.holds):
            return False
        if r.holds and not than.holds:
            return True
        return r.disturbed < than.disturbed

    global _retry_budget
    for attempt in range(1, attempts + 1):
        r = measure(mode, n, warmup_s, window_s, log=log, attempt=attempt)
        if better(r, best):
            best = r
        if not r.error and (r.holds or r.disturbed <= DISTURBED_LIMIT):
            break
        if attempts == 1:
            break
        if attempt < attempts and _retry_budget is not None:
            if _retry_budget <= 0:
                log(f"    (N={n} {mode}: disturbed, no retries left in this run)")
                break
            _retry_budget -= 1
        if attempt < attempts:
            why = (f"failed: {r.error}" if r.error else
                   f"did not hold while others disturbed the machine ({r.disturbed:.0%} of a core)")
            log(f"    (N={n} {mode}: {why}; retrying)")
        else:
            log(f"    (N={n} {mode}: keeping attempt {best.attempts}, the fairest of {attempts})")
        time.sleep(1.0)
    return best


# --------------------------------------------------------------------------------------- profiling
def _start_perf(pid: int, seconds: float):
    """`perf record` of the engine: timer sampling at 999 Hz (not phase-locked to the 20 ms tick),
    with kernel call chains, so syscall time is attributed to the syscall. Low overhead: the engine
    keeps running (its numbers in this pass are printed too)."""
    out = tempfile.NamedTemporaryFile(prefix="mcu_perf_", suffix=".data", delete=False)
    out.close()
    cmd = [shutil.which("perf"), "record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(pid),
           "-o", out.name, "--", "sleep", str(seconds)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: os.sched_setaffinity(0, {GEN_CORE}))
    return proc, out.name


PERF_SYSCALLS = {
    "sendto": "kernel: UDP send syscalls (sendmsg/sendto; loopback delivery to the receiver included)",
    "sendmsg": "kernel: UDP send syscalls (sendmsg/sendto; loopback delivery to the receiver included)",
    "sendmmsg": "kernel: UDP send syscalls (sendmsg/sendto; loopback delivery to the receiver included)",
    "recvfrom": "kernel: UDP receive syscalls (recvmsg)",
    "recvmsg": "kernel: UDP receive syscalls (recvmsg)",
    "recvmmsg": "kernel: UDP receive syscalls (recvmsg)",
    "epoll_wait": "kernel: epoll_pwait",
    "epoll_pwait": "kernel: epoll_pwait",
    "epoll_pwait2": "kernel: epoll_pwait",
}
PERF_DSOS = (
    ("libopus", "libopus (encode, decode, PLC)"),
    ("libpython", "CPython interpreter (the Python code of the tick, receive path, stats)"),
    ("_rtp.cpython", "mixer._rtp (Cython: RTP parse/build)"),
    ("_jitter.cpython", "mixer._jitter (Cython: the jitter buffer)"),
    ("_mix.cpython", "mixer._mix (Cython: mix kernel, levels)"),
    ("_opus.cpython", "mixer._opus (Cython wrapper around libopus)"),
    ("loop.cpython", "uvloop + libuv (event loop, UDP transports, callbacks)"),
    ("libc.so", "libc (malloc/free, memcpy, syscall wrappers)"),
    ("_multiarray_umath", "numpy"),
)


def summarize_perf(script: str, top: int = 18) -> str:
    import re

    category: collections.Counter = collections.Counter()
    leaf: collections.Counter = collections.Counter()
    total = 0
    for block in script.split("\n\n"):
        frames = []
        for line in block.strip().splitlines():  # "addr sym (dso)" per frame, the leaf first
            parts = line.strip().split(None, 1)
            if len(parts) == 2 and parts[1].endswith(")") and " (" in parts[1]:
                sym, _, dso = parts[1].rpartition(" (")
                frames.append((sym, dso[:-1].rsplit("/", 1)[-1]))
        if not frames:
            continue
        total += 1
        sym, dso = frames[0]
        leaf[f"{sym} ({dso})"] += 1
        if dso == "[kernel.kallsyms]":
            label = None
            for fsym, fdso in frames:
                m = re.match(r"_*(?:x64_|se_|do_)?sys_(\w+)$", fsym)
                if m:
                    label = PERF_SYSCALLS.get(m.group(1), f"kernel: sys_{m.group(1)}")
                    break
            if label is None:
                names = " ".join(f for f, _ in frames)
                label = ("kernel: page faults" if "page_fault" in names else
                         "kernel: interrupts, softirq, scheduler" if re.search(r"irq|sysvec|schedule", names)
                         else "kernel: other")
        else:
            label = next((text for key, text in PERF_DSOS if key in dso), f"other: {dso}")
        category[label] += 1
    if not total:
        return "perf recorded no samples"
    lines = [f"perf record -e cpu-clock -F 999 -g: {total} samples of the engine process (unbiased "
             "timer sampling; kernel call chains name the syscall)",
             "  share  where"]
    for name, c in category.most_common():
        lines.append(f"  {100.0 * c / total:5.1f}%  {name}")
    lines.append("  share  leaf symbol (shared object)")
    for name, c in leaf.most_common(top):
        lines.append(f"  {100.0 * c / total:5.1f}%  {name}")
    return "\n".join(lines)


def _finish_perf(spy) -> str:
    proc, path = spy
    try:
        _, err = proc.communicate(timeout=120)
        script = subprocess.run([shutil.which("perf"), "script", "-i", path, "-F", "ip,sym,dso"],
                                capture_output=True, text=True, timeout=300).stdout
    except subprocess.TimeoutExpired:
        proc.kill()
        return "perf timed out"
    finally:
        for leftover in (path, path + ".old"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    if not script.strip():
        return "perf produced no samples: " + (err or b"").decode(errors="replace")[-500:]
    return summarize_perf(script)


def _start_py_spy(pid: int, seconds: float):
    exe = shutil.which("py-spy")
    out = tempfile.NamedTemporaryFile(prefix="mcu_pyspy_", suffix=".txt", delete=False)
    out.close()
    # Python frames only, without pausing the engine (--nonblocking): time in C code and syscalls is
    # charged to the Python function that called it (perf gives the native split).
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "200",
           "--format", "raw", "--output", out.name, "--nonblocking"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: os.sched_setaffinity(0, {GEN_CORE}))
    return proc, out.name


def _finish_py_spy(spy) -> str:
    proc, path = spy
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    try:
        text = Path(path).read_text()
    finally:
        os.unlink(path)
    if not text.strip():
        return "py-spy produced no samples: " + err.decode(errors="replace")[-500:]
    return summarize_collapsed(text)


def _frame_name(frame: str) -> str:
    # "tick (mixer/mcu/conference.py:190)" -> "tick (mixer/mcu/conference.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":") if where.count(":") else (where, "", "")
    path = path or where
    for marker in ("/work/main/", "site-packages/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


LEAF_CATEGORIES = (  # (substring of a native/Python frame, category), checked from the leaf upward
    ("opus_encode", "libopus encode"),
    ("opus_decode", "libopus decode / PLC"),
    ("sendmsg (libc", "syscall: UDP send (sendmsg; on loopback incl. delivery to the receiver)"),
    ("sendto (libc", "syscall: UDP send (sendmsg; on loopback incl. delivery to the receiver)"),
    ("recvmsg (libc", "syscall: UDP receive (recvmsg: libuv calls it until EAGAIN, 2 per packet)"),
    ("recvfrom (libc", "syscall: UDP receive (recvmsg: libuv calls it until EAGAIN, 2 per packet)"),
    ("epoll_pwait (libc", "syscall: epoll_pwait"),
    ("epoll_wait (libc", "syscall: epoll_pwait"),
    ("gc_collect", "Python GC"),
)
ANCHORS = (  # deepest first: the category is "<anchor> > <function it called>"
    ("MediaLeg._on_rtp", "receive"),
    ("MediaLeg._on_datagram", "receive"),
    ("MediaLeg.send_payload", "tick > send_payload"),
    ("MediaLeg.maybe_send_rtcp", "tick > maybe_send_rtcp"),
    ("Voice.pull", "tick > Voice.pull"),
    ("McuConference.tick", "tick"),
)


def _short(name: str) -> str:
    return name.partition(" (")[0]


def summarize_collapsed(text: str, top: int = 16) -> str:
    """Where the engine's busy time goes, from py-spy's collapsed stacks: by category (syscalls,
    libopus, GC, then the Python/Cython function each hot path calls), and by leaf function."""
    self_t: collections.Counter = collections.Counter()
    category: collections.Counter = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += c
        names = [_frame_name(f) for f in frames]
        self_t[names[-1]] += c
        found = None
        for frame in reversed(frames):
            for marker, label in LEAF_CATEGORIES:
                if marker in frame:
                    found = label
                    break
            if found:
                break
        if found is None:
            shorts = [_short(n) for n in names]
            for anchor, label in ANCHORS:
                hits = [i for i, n in enumerate(shorts) if n.endswith(anchor)]
                if hits:
                    i = hits[-1]
                    child = shorts[i + 1] if i + 1 < len(shorts) else "(own lines, incl. C/Cython calls)"
                    found = f"{label} > {child}"
                    break
        category[found or "event loop outside Python callbacks (epoll, recvmsg, uvloop)"] += c
    if not total:
        return "no samples"
    lines = [f"py-spy --nonblocking, {total} samples of the engine's busy (non-idle) time, Python frames: "
             "C code and syscalls count toward the Python function that called them",
             "  share  hot path > the function it called (inclusive)"]
    for name, c in category.most_common(28):
        lines.append(f"  {100.0 * c / total:5.1f}%  {name}")
    lines.append("  share  leaf function (self time)")
    for name, c in self_t.most_common(top):
        lines.append(f"  {100.0 * c / total:5.1f}%  {name}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ output
def _detail_line(r: Measurement) -> str:
    if r.error:
        return f"  [{r.mode:5s} N={r.n:5d}] FAILED: {r.error}"
    expected = r.n * r.window_s / FRAME_S
    per_tick = lambda x: x / r.conf_ticks if r.conf_ticks else float("nan")  # noqa: E731
    drops = f" drops={r.drops}" if r.drops else ""
    return (f"  [{r.mode:5s} N={r.n:5d}] cpu {r.cpu_percent:5.1f}% (/proc {100 * r.cpu_stat_s / r.window_s:5.1f}%)"
            f" late p50/p99/max {r.lateness_p50:.2f}/{r.lateness_p99:.2f}/{r.lateness_max:.1f} ms"
            f" skipped={r.skipped} | tick busy mean {r.busy_mean:.2f} p99 {r.busy_p99:.2f} ms"
            f" ({100 * r.tick_share:.0f}% of cpu) | per tick: decodes {per_tick(r.decodes):.1f}"
            f" shared enc {per_tick(r.shared_encodes):.1f} own enc {per_tick(r.own_encodes):.1f}"
            f" speakers {r.speakers} | engine in {r.packets_in / expected:.1%} out"
            f" {r.packets_out / expected:.1%} gen got {r.gen_received / expected:.1%}"
            f" gen late p99 {r.gen_lateness_p99:.1f} ms gen skipped {r.gen_skipped}"
            f" | gc {r.gc_collections} (gen2 {r.gc_gen2}) max pause {r.gc_max_ms:.1f} ms"
            f" | setup {r.setup_s:.1f}s ref {r.ref_ms:.1f} ms | others on the machine"
            f" {100 * r.others_s / r.window_s:.0f}% of a core, engine preempted {r.involuntary}x"
            f" | core {ENGINE_CORE}:"
            f" irq {100 * r.irq_s / r.window_s:.1f}%"
            f" steal {100 * r.steal_s / r.window_s:.1f}%"
            f"{f' (attempt {r.attempts})' if r.attempts > 1 else ''}{drops}")


def _fmt_row(r: Measurement | None) -> list[str]:
    if r is None:
        return ["-"] * 7
    if r.error:
        return ["error"] + ["-"] * 6
    return [f"{r.cpu_ms_per_participant_s:.3f}{'' if r.skipped == 0 else '*'}", f"{r.cpu_percent:.1f}",
            f"{r.lateness_p50:.2f}/{r.lateness_p99:.2f}", "yes" if r.holds else "NO",
            f"{r.rss_kb_per_participant:.1f}", f"{100 * r.disturbed:.1f}%", f"{r.ref_ms:.1f}"]


def print_table(ours: dict[int, Measurement], naive: dict[int, Measurement]) -> None:
    sizes = sorted(set(ours) | set(naive))
    header = (f"{'N':>6} | {'mode':6} | {'CPU ms/part-s':>13} | {'CPU % core':>10} | "
              f"{'late p50/p99 ms':>15} | {'real time':>9} | {'RSS KB/part':>11} | {'disturbed':>9} | "
              f"{'ref ms':>6} | {'naive/ours':>10}")
    print(header)
    print("-" * len(header))
    for n in sizes:
        o, v = ours.get(n), naive.get(n)
        ratio = ""
        if o and v and not o.error and not v.error:
            ratio = f"{v.cpu_ms_per_participant_s / o.cpu_ms_per_participant_s:.1f}x"
            if v.skipped:
                ratio += " (naive saturated)"
        for label, r in (("ours", o), ("naive", v)):
            if r is None:
                continue
            cells = _fmt_row(r)
            print(f"{n:>6} | {label:6} | {cells[0]:>13} | {cells[1]:>10} | {cells[2]:>15} | "
                  f"{cells[3]:>9} | {cells[4]:>11} | {cells[5]:>9} | {cells[6]:>6} | "
                  f"{ratio if label == 'naive' else ''}")
    print("(CPU ms per participant per second of audio mixed, over the measurement window; "
          "'real time' = tick lateness p99 < 5 ms and no skipped ticks; * = the engine skipped ticks "
          "(saturated core): CPU is divided by the audio it did mix, its receive path still ran for all "
          "packets; "
          "'disturbed' = CPU other processes used on the machine (share of one core) + 10 x hypervisor "
          "steal "
          "on the engine's core, in the window; 'ref ms' = CPU time of a fixed reference workload "
          "(20 Opus encodes + a Python loop) on the engine's core just before that size: this "
          "virtual machine's speed drifts by tens of percent over minutes, compare rows with it; "
          "the machine may be shared)")


# -------------------------------------------------------------------------------------------- scans
def scan(mode: str, steps: list[int], resolution: int, warmup_s: float, window_s: float,
         required: list[int], log=print, attempts: int = ATTEMPTS, bisect: bool = True,
         results: dict[int, Measurement] | None = None
         ) -> tuple[dict[int, Measurement], int | None, int | None]:
    """Measure `required` sizes (on top of `results` already measured), then `steps` upward until
    one fails, then bisect to `resolution`.

    Returns (results, largest size that held, smallest size that failed)."""
    results = {} if results is None else results

    def run(n: int) -> Measurement:
        if n not in results:
            results[n] = measure_clean(mode, n, warmup_s, window_s, log=log, attempts=attempts)
        return results[n]

    for n in required:
        run(n)
    held = [n for n, r in results.items() if r.holds]
    failed = [n for n, r in results.items() if not r.holds]
    for n in steps:
        if failed and n > min(failed):
            break
        if run(n).holds:
            held.append(n)
        else:
            failed.append(n)
            break
    best = max((n for n in held if not failed or n < min(failed)), default=None)
    worst = min(failed) if failed else None
    if bisect and best is not None and worst is not None:
        low, high = best, worst
        while high - low > resolution:
            mid = (low + high) // 2 // resolution * resolution
            if mid <= low:
                mid = low + resolution
            if mid >= high:
                break
            if run(mid).holds:
                low = mid
            else:
                high = mid
        best, worst = low, high
    return results, best, worst


def latency(runs: int, duration_s: float) -> tuple[list[float], list[bool]]:
    import uvloop

    from mixer.sim.call import CallConfig, run_call

    values, oks = [], []
    for seed in range(1, runs + 1):
        result = uvloop.run(run_call(CallConfig(participants=4, duration_s=duration_s, seed=seed)))
        values += result.latencies()
        oks.append(result.ok)
    return values, oks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 10 and 100 only, short windows")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy/cProfile pass")
    args = parser.parse_args()
    # SIGTERM -> SystemExit, so multiprocessing's exit handler terminates the engine and generator
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(os.sched_getaffinity(0)) < 2:
        print("needs two cores (engine and load generator are pinned to one each)")
        return 2
    import numpy as np

    started = time.monotonic()
    if args.quick:
        warmup_s, window_s = 1.5, 5.0
        ours_steps, naive_steps = [], []
        latency_runs, latency_s = 1, 6.0
    else:
        warmup_s, window_s = 3.0, 8.0
        ours_steps = [750, 1000, 1250, 1500, 2000, 2500, 3000, 4000, 5000]
        naive_steps = [150, 200, 250, 300, 400, 500]
        latency_runs, latency_s = 3, 10.0
    from mixer.settings import EngineSettings

    s = EngineSettings()
    print(f"voicemix MCU scale benchmark ({'quick' if args.quick else 'full'}) on "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print(f"engine pinned to core {ENGINE_CORE}, load generator to core {GEN_CORE}; Opus 48 kHz 20 ms "
          f"everywhere (engine encoder {s.opus_bitrate} b/s, complexity {s.opus_complexity}, "
          f"FEC {'on' if s.opus_fec else 'off'}), {TALKERS} talkers (loud tone, RFC 6464 V=1), "
          f"everyone else comfort noise with level 127 V=0; warm-up {warmup_s:g} s, window "
          f"{window_s:g} s per size\n")
    # Keep this (mostly idle) orchestrator off the engine's core.
    os.sched_setaffinity(0, {GEN_CORE})

    global _retry_budget
    attempts, bisect = (2, False) if args.quick else (ATTEMPTS, True)
    if args.quick:
        _retry_budget = 1  # one retry at most, to stay under a minute
    ours: dict[int, Measurement] = {}
    naive: dict[int, Measurement] = {}
    print("ours (McuConference) and naive at the same sizes, back to back (the host's speed drifts):")
    for n in (10, 100):
        ours[n] = measure_clean("mcu", n, warmup_s, window_s, attempts=attempts)
        naive[n] = measure_clean("naive", n, warmup_s, window_s, attempts=attempts)
    target_runs: list[Measurement] = []
    if not args.quick:
        print(f"ours at N={TARGET_N}, {TARGET_REPEATS} runs (the target size):")
        target_runs = [measure_clean("mcu", TARGET_N, warmup_s, window_s, attempts=attempts)
                       for _ in range(TARGET_REPEATS)]
        held = [r for r in target_runs if r.holds]
        # the table shows the median run by CPU among the majority outcome
        pool = held if 2 * len(held) > len(target_runs) else [r for r in target_runs if not r.holds]
        ours[TARGET_N] = sorted(pool, key=lambda r: r.cpu_s)[len(pool) // 2]
        print("ours, larger sizes until one fails, then bisection:")
    ours, ours_best, ours_fail = scan("mcu", ours_steps, 50, warmup_s, window_s, [], results=ours,
                                      attempts=attempts, bisect=bisect)
    if not args.quick:
        print("naive, bisection to where it stops holding real time:")
    naive, naive_best, naive_fail = scan("naive", naive_steps, 10, warmup_s, window_s, [],
                                         results=naive, attempts=attempts, bisect=bisect)

    floors: dict[str, Measurement] = {}
    costs_text = ""
    if not args.quick and ours_best:
        print(f"floors at N={ours_best} (real legs and I/O, no mixing), then ours again, back to back:")
        for mode in ("recv-floor", "io-floor", "mcu"):
            floors[mode] = measure_clean(mode, ours_best, warmup_s, window_s, attempts=attempts)
        import mcu_costs

        os.sched_setaffinity(0, {ENGINE_CORE})  # the engine core is free now
        print(f"cost model in-process at N={ours_best} ...")
        costs_text = mcu_costs.format_cost_model(mcu_costs.cost_model(ours_best),
                                                 floors["mcu"].cpu_ms_per_participant_s, ours_best)
        os.sched_setaffinity(0, {GEN_CORE})

    profiles: list[tuple[str, str]] = []
    if not args.no_profile and not args.quick and ours_best:
        kinds = [k for k in ("perf", "py-spy") if shutil.which(k)] or ["cprofile"]
        for kind in kinds:
            print(f"profile pass ({kind}) at the largest N that holds, N={ours_best}:")
            prof = measure("mcu", ours_best, warmup_s, min(window_s, 6.0), profile=kind)
            profiles.append((kind, prof.profile))

    os.sched_setaffinity(0, set(range(os.cpu_count() or 2)))
    print(f"\nadded latency: run_call(participants=4, duration_s={latency_s:.0f}) x {latency_runs}, "
          f"zero network jitter ...")
    lat, oks = latency(latency_runs, latency_s)

    print("\n=== per conference size: CPU per participant-second of audio, real time, memory ===")
    print_table(ours, naive)
    if floors:
        o = floors.get("mcu") or ours[ours_best]
        print(f"\n=== what the mixing costs on top of the I/O every participant needs anyway, N={ours_best} ===")
        print(f"{'mode':12} | {'CPU ms/part-s':>13} | {'CPU % core':>10} | {'late p99 ms':>11} | "
              f"{'ref ms':>6} | what it does")
        rows = [("recv-floor", floors.get("recv-floor"), "receive path only (uvloop + MediaLeg), drop"),
                ("io-floor", floors.get("io-floor"), "receive + send one constant payload per leg per tick"),
                ("ours", o, "McuConference: jitter buffers, levels, 3 decodes, 4 encodes, sends")]
        for name, r, what in rows:
            if r is None or r.error:
                print(f"{name:12} | {'error':>13} |")
                continue
            print(f"{name:12} | {r.cpu_ms_per_participant_s:13.3f} | {r.cpu_percent:10.1f} | "
                  f"{r.lateness_p99:11.2f} | {r.ref_ms:6.1f} | {what}")
        fr, fi = floors.get("recv-floor"), floors.get("io-floor")
        if fr and fi and not fr.error and not fi.error:
            total = o.cpu_ms_per_participant_s
            print(f"share of ours: receive I/O {100 * fr.cpu_ms_per_participant_s / total:.0f}%, send I/O "
                  f"{100 * (fi.cpu_ms_per_participant_s - fr.cpu_ms_per_participant_s) / total:.0f}%, "
                  f"mixing (jitter buffer, levels, codecs, tick logic) "
                  f"{100 * (total - fi.cpu_ms_per_participant_s) / total:.0f}%; the per-packet I/O "
                  f"alone would fill a core at N~{int(1000 / fi.cpu_ms_per_participant_s)}")
    if costs_text:
        print("\n=== cost model: one participant's work per tick, split (bench/mcu_costs.py) ===")
        print(costs_text)
    for kind, text in profiles:
        print(f"\n=== where the engine's time goes at N={ours_best} (ours), {kind} ===")
        print(text)
    lat_p50 = float(np.percentile(lat, 50)) if lat else float("nan")
    lat_p99 = float(np.percentile(lat, 99)) if lat else float("nan")
    print(f"\nadded latency send->hear (onsets, 4 participants, zero jitter): p50 {lat_p50:.1f} ms, "
          f"p99 {lat_p99:.1f} ms, max {max(lat) if lat else float('nan'):.1f} ms, n={len(lat)}; "
          f"calls ok: {sum(oks)}/{len(oks)}")

    print("\n=== verdict ===")
    o100, n100 = ours.get(100), naive.get(100)
    if o100 and n100 and not o100.error and not n100.error:
        ratio = n100.cpu_ms_per_participant_s / o100.cpu_ms_per_participant_s
        note = ""
        if n100.skipped:
            note = (f"; naive cannot run N=100 in real time (it skipped {n100.skipped} ticks), so two "
                    f"cross-checks: per wall-clock second it used {n100.cpu_percent:.0f}% vs "
                    f"{o100.cpu_percent:.0f}% of a core = {n100.cpu_percent / o100.cpu_percent:.1f}x "
                    f"(a lower bound: the audio it did not mix cost it nothing)")
            held = naive.get(naive_best) if naive_best else None
            if held is not None and not held.error and naive_best >= 20:
                note += (f"; naive's cost where it does hold real time (N={naive_best}, "
                         f"{held.cpu_ms_per_participant_s:.3f} ms/part-s) vs ours at N=100 = "
                         f"{held.cpu_ms_per_participant_s / o100.cpu_ms_per_participant_s:.1f}x")
        print(f"[{'PASS' if ratio >= 5 else 'FAIL'}] ours >= 5x cheaper than naive at N=100: "
              f"{ratio:.1f}x ({n100.cpu_ms_per_participant_s:.3f} vs {o100.cpu_ms_per_participant_s:.3f}"
              f" CPU ms per participant-second of mixed audio){note}")
    else:
        print("[FAIL] ours vs naive at N=100: not measured")
    if args.quick:
        print(f"[ -- ] ours >= {TARGET_N} participants on one core: not measured in --quick "
              f"(largest measured that holds: N={ours_best})")
    else:
        runs = [r for r in target_runs if not r.error]
        held_runs = sum(1 for r in runs if r.holds)
        detail = ", ".join(f"p99 {r.lateness_p99:.1f} ms at {r.cpu_percent:.0f}% (ref {r.ref_ms:.1f})"
                           for r in runs)
        largest = f"largest N that holds: {ours_best}" + (f", fails at {ours_fail}" if ours_fail else
                                                           ", no failure up to the last step")
        verdict = "PASS" if runs and 2 * held_runs > len(target_runs) else "FAIL"
        print(f"[{verdict}] ours >= {TARGET_N} participants on one core with {TALKERS} speakers: "
              f"N={TARGET_N} held real time in {held_runs}/{len(target_runs)} runs ({detail}); "
              f"{largest}")
    print(f"[ -- ] naive holds real time up to N={naive_best}"
          + (f", fails at N={naive_fail}" if naive_fail else ""))
    print(f"[{'PASS' if lat and lat_p99 < 60 else 'FAIL'}] added latency p99 < 60 ms at zero jitter: "
          f"{lat_p99:.1f} ms (p50 {lat_p50:.1f} ms, n={len(lat)})")
    print(f"\ntotal run time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
