"""What a Prometheus scrape costs an engine with 500 legs.

1. In-process: an engine with 500 real legs (10 MCU conferences of 50, real sockets), the cost of
   building the `/metrics` text, timed over many scrapes (CPU time per scrape on the engine's loop),
   next to `GET /stats` and to what `voicemix top` asks (`/conferences` + one conference's detail).
2. End to end: a `voicemix engine` process pinned to core 0, `voicemix load -n 500` (10
   conferences of 50, 3 talkers each) pinned to core 1, and alternating phases without scraping
   and with 10 scrapes/s (Prometheus scrapes every 15 s by default: 10/s is 150x that). Per kind of
   phase: the engine's CPU time (/proc), and from its own tick-lateness histogram (difference of
   the counts at each phase's ends) mean lateness, the share of ticks later than 2 and 5 ms, and
   skipped ticks.

    python bench/metrics_scrape.py [--legs 500] [--phase-s 5] [--rounds 6] [--rate 10]

Other work on this 2-core machine shows in every phase alike; compare phases within one run, and run
it twice.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mixer.engine.engine import Engine  # noqa: E402
from mixer.engine.metrics import engine_registry  # noqa: E402
from mixer.metrics import exposition  # noqa: E402
from mixer.sdp import offer_audio  # noqa: E402
from mixer.settings import EngineSettings  # noqa: E402


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def in_process(legs: int, per_conference: int, scrapes: int) -> None:
    engine = Engine(EngineSettings(media_ports="30000-31999"))
    engine.start()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    offer, _ = offer_audio(local_ip="127.0.0.1", local_port=sink.getsockname()[1], codecs=("opus",),
                           rtcp_mux=True)
    for index in range(legs):
        conference = f"c{index // per_conference}"
        if conference not in engine.conferences:
            engine.create_conference("mcu", conference)
        await engine.add_leg(conference, offer)
    await asyncio.sleep(1.0)  # ticks run: histograms have data
    registry = engine_registry(engine)
    size = len(exposition(registry))

    def timed(fn, count: int) -> tuple[float, float]:
        times = []
        began_cpu = cpu_s()
        for _ in range(count):
            began = time.perf_counter()
            fn()
            times.append((time.perf_counter() - began) * 1000.0)
        return statistics.median(times), (cpu_s() - began_cpu) * 1000.0 / count

    engine.clock.stop()  # measure the work alone, without ticks in between
    scrape = timed(lambda: exposition(registry), scrapes)
    stats = timed(engine.stats, scrapes)
    top = timed(lambda: (engine.list_conferences(), engine.get_conference("c0")), scrapes // 4)
    print(f"in-process, {legs} legs in {legs // per_conference} MCU conferences "
          f"(exposition {size} bytes):")
    print(f"  /metrics build   median {scrape[0]:.2f} ms, CPU {scrape[1]:.2f} ms per scrape")
    print(f"  /stats           median {stats[0]:.2f} ms, CPU {stats[1]:.2f} ms")
    print(f"  top's reads      median {top[0]:.2f} ms, CPU {top[1]:.2f} ms "
          f"(/conferences + one {per_conference}-leg conference)")
    engine.stop()
    sink.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lateness(url: str) -> dict:
    """The engine's tick-lateness histogram counts and skipped ticks, from /metrics."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    buckets, result = {}, {}
    for line in text.splitlines():
        if line.startswith("voicemix_engine_tick_lateness_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets[le] = float(line.split()[-1])
        elif line.startswith("voicemix_engine_tick_lateness_seconds_sum"):
            result["sum"] = float(line.split()[-1])
        elif line.startswith("voicemix_engine_tick_lateness_seconds_count"):
            result["count"] = float(line.split()[-1])
        elif line.startswith("voicemix_engine_ticks_skipped_total"):
            result["skipped"] = float(line.split()[-1])
    result["buckets"] = buckets
    return result


def engine_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def end_to_end(legs: int, per_conference: int, phase_s: float, rounds: int, rate: float,
               nice: int = 0) -> None:
    """Alternate phases without and with scraping (so the machine's other load falls on both
    alike); per kind of phase: the engine's CPU time, tick lateness and skipped ticks."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    priority = ["nice", "-n", str(nice)] if nice else []
    engine = subprocess.Popen([*priority, "taskset", "-c", "0", sys.executable, "-m", "mixer.cli", "engine",
                               "--control", f"127.0.0.1:{port}", "--ports", "32000-33999"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load = None
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/stats", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        duration = 2 * rounds * phase_s + 30
        load = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-m", "mixer.cli", "load",
                                 "-n", str(legs), "--per-conference", str(per_conference),
                                 "--talkers", "3", "--duration", str(duration), "--engine", url,
                                 "--interval", "1000"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        for _ in range(300):  # until every client has joined
            stats = urllib.request.urlopen(f"{url}/stats", timeout=5).read()
            if f'"legs": {legs},'.encode() in stats:
                break
            time.sleep(0.1)
        time.sleep(5)  # settle
        totals = {kind: {"cpu": 0.0, "ticks": 0.0, "sum": 0.0, "over2": 0.0, "over5": 0.0,
                         "skipped": 0.0, "scrapes": 0, "seconds": 0.0} for kind in ("off", "on")}
        for _ in range(rounds):
            for kind in ("off", "on"):
                before, cpu_before, began = lateness(url), engine_cpu_s(engine.pid), time.monotonic()
                ends = began + phase_s
                while time.monotonic() < ends:
                    if kind == "on":
                        urllib.request.urlopen(f"{url}/metrics", timeout=5).read()
                        totals[kind]["scrapes"] += 1
                        time.sleep(1.0 / rate)
                    else:
                        time.sleep(0.2)
                after, cpu_after = lateness(url), engine_cpu_s(engine.pid)
                t = totals[kind]
                t["seconds"] += time.monotonic() - began
                t["cpu"] += cpu_after - cpu_before
                count = after["count"] - before["count"]
                t["ticks"] += count
                t["sum"] += after["sum"] - before["sum"]
                for le, key in (("0.002", "over2"), ("0.005", "over5")):
                    t[key] += count - (after["buckets"][le] - before["buckets"][le])
                t["skipped"] += after["skipped"] - before["skipped"]
        print(f"end to end: engine process on core 0 with {legs} legs ({legs // per_conference} MCU "
              f"conferences, 3 talkers each), `voicemix load` on core 1; {rounds} alternations of "
              f"{phase_s:.0f} s without and with {rate:g} scrapes/s:")
        for kind, label in (("off", "no scraping"), ("on", f"{rate:g} scrapes/s")):
            t = totals[kind]
            print(f"  {label:14s} engine CPU {100 * t['cpu'] / t['seconds']:.1f} % of a core, ticks "
                  f"{t['ticks']:.0f}, mean lateness {1000 * t['sum'] / t['ticks']:.2f} ms, "
                  f"> 2 ms {100 * t['over2'] / t['ticks']:.2f} %, > 5 ms {100 * t['over5'] / t['ticks']:.2f} %, "
                  f"skipped {t['skipped']:.0f} ({t['scrapes']} scrapes)")
        on, off = totals["on"], totals["off"]
        extra = on["cpu"] / on["seconds"] - off["cpu"] / off["seconds"]
        if on["scrapes"]:
            print(f"  engine CPU per scrape (difference of the two rates): "
                  f"{1000 * extra * on['seconds'] / on['scrapes']:.2f} ms")
    finally:
        for process in (load, engine):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legs", type=int, default=500)
    parser.add_argument("--per-conference", type=int, default=50)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--phase-s", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rate", type=float, default=10.0, help="scrapes per second when scraping")
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--nice", type=int, default=0,
                        help="run the engine at this nice value (e.g. -15, as root) when other work "
                             "on the machine starves it")
    args = parser.parse_args()
    asyncio.run(in_process(args.legs, args.per_conference, args.scrapes))
    if not args.skip_end_to_end:
        end_to_end(args.legs, args.per_conference, args.phase_s, args.rounds, args.rate, args.nice)
    return 0


if __name__ == "__main__":
    sys.exit(main())
