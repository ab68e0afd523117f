"""Soak: a long call with churn against a real `voicemix engine` process; is anything growing?

    python bench/soak.py --minutes 10
    python bench/soak.py --minutes 0.5 --participants 10 --churn 0.5     # a quick look

The engine runs as its own process (`python -m mixer.cli engine`), so its memory and descriptors are
its own. The call: `--participants` clients (default 20), `--talkers` of them talking (3), and
every `--churn` seconds one listener leaves and a new one joins. Every `--sample` seconds the
engine's RSS, open fds and tick lateness p99 (its last 60 s) are read. At the end: the least-squares
slope of memory (KB/min) and fds (per min) after the first minute's warm-up (the whole run when it
is shorter than 3 minutes), and the tick lateness p99 over time.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixer.load import LoadConfig, LoadRun, process_usage  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EngineProcess:
    """`voicemix engine` in a child process on loopback, stopped with SIGINT (at once: SIGTERM
    would drain its conferences first)."""

    def __init__(self, ports: str) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        # the engine logs every leg added and removed: to a file, since a pipe nobody reads
        # fills after a few hundred lines and then blocks the engine's loop on its next log line
        self.log = tempfile.TemporaryFile(mode="w+", prefix="soak_engine_", suffix=".log")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mixer.cli", "engine", "--control", f"127.0.0.1:{self.port}",
             "--ports", ports], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=self.log, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"engine exited: {self.output()}")
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("engine did not open its control port")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.output()

    def output(self, tail: int = 4000) -> str:
        """The end of what the engine logged."""
        self.log.seek(0)
        return self.log.read()[-tail:]


def slope_per_minute(t_s: list[float], values: list[float]) -> float:
    """Least-squares slope of `values` against time, per minute."""
    if len(t_s) < 3:
        return float("nan")
    return float(np.polyfit(np.array(t_s) / 60.0, np.array(values, dtype=np.float64), 1)[0])


async def soak(minutes: float, participants: int, talkers: int, churn_s: float, sample_s: float,
               ports: str, log=print) -> dict:
    engine = EngineProcess(ports)
    samples: list[dict] = []
    baseline = process_usage(engine.pid)
    try:
        config = LoadConfig(clients=participants, talkers=talkers, duration_s=minutes * 60,
                            engine_url=engine.url, engine_pid=engine.pid, interval_s=sample_s,
                            churn_every_s=churn_s)
        run = LoadRun(config)
        join: dict = {}

        def on_snapshot(snapshot: dict) -> None:
            if not join:  # the first sample: every participant has joined, none replaced yet
                join.update(process_usage(engine.pid))
            samples.append(snapshot)
        summary = await run.run(progress=log, on_snapshot=on_snapshot)
        await asyncio.sleep(0.5)  # the legs' sockets are closed by now
        after = process_usage(engine.pid)
    finally:
        engine_log = engine.stop()
    t = [s["elapsed_s"] for s in samples]
    warm = 60.0 if minutes >= 3 else 0.0
    steady = [s for s in samples if s["elapsed_s"] >= warm]
    ts = [s["elapsed_s"] for s in steady]
    return {
        "minutes": minutes, "participants": participants, "talkers": talkers, "churn_s": churn_s,
        "churned": summary["churned"], "loss_percent": summary["loss_percent"],
        "samples": len(samples),
        "rss_kb_first": samples[0]["engine_rss_kb"] if samples else None,
        "rss_kb_last": samples[-1]["engine_rss_kb"] if samples else None,
        "rss_slope_kb_per_min": slope_per_minute(ts, [s["engine_rss_kb"] for s in steady]),
        # growth that levels off (allocator arenas filling) and a leak (a steady climb) can have the
        # same whole-run slope; the second half's slope tells them apart
        "rss_slope_second_half_kb_per_min": slope_per_minute(
            [x for x in ts if x >= ts[len(ts) // 2]],
            [s["engine_rss_kb"] for s in steady if s["elapsed_s"] >= ts[len(ts) // 2]]) if ts else None,
        "rss_kb_per_minute": [(round(s["elapsed_s"]), s["engine_rss_kb"]) for s in samples
                              if round(s["elapsed_s"]) % 60 == 0],
        "fds_slope_per_min": slope_per_minute(ts, [s["engine_fds"] for s in steady]),
        "fds_baseline": baseline["fds"], "rss_kb_baseline": baseline["rss_kb"],
        "rss_kb_join": join["rss_kb"], "fds_during": samples[-1]["engine_fds"] if samples else None,
        "fds_after": after["fds"],
        "tick_p99_ms": [(round(x, 0), s["tick_lateness_p99_ms"]) for x, s in zip(t, samples)],
        "tick_p99_max_ms": max((s["tick_lateness_p99_ms"] for s in samples), default=None),
        "skipped_ticks": summary["skipped_ticks"],
        "engine_log_lines": len(engine_log.splitlines()),
    }


def report(result: dict) -> str:
    p99 = result["tick_p99_ms"]
    step = max(1, len(p99) // 12)
    over_time = ", ".join(f"{int(t)} s: {v} ms" for t, v in p99[::step])
    return "\n".join([
        f"soak: {result['minutes']:g} min, {result['participants']} participants ({result['talkers']} talking), "
        f"a listener replaced every {result['churn_s']:g} s ({result['churned']} replaced)",
        f"  engine RSS {result['rss_kb_first']} -> {result['rss_kb_last']} KB; "
        f"slope {result['rss_slope_kb_per_min']:.1f} KB/min (second half: "
        f"{result['rss_slope_second_half_kb_per_min']:.1f} KB/min)",
        f"  engine fds: {result['fds_baseline']} before the call, {result['fds_during']} during, "
        f"{result['fds_after']} after; slope {result['fds_slope_per_min']:.2f} per min",
        f"  tick lateness p99 (last 60 s window) over time: {over_time}",
        f"  worst p99 {result['tick_p99_max_ms']} ms, skipped ticks {result['skipped_ticks']}, "
        f"client-side loss {result['loss_percent']}%",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--participants", type=int, default=20)
    parser.add_argument("--talkers", type=int, default=3)
    parser.add_argument("--churn", type=float, default=3.0, help="seconds between a leave+join")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--ports", default="44000-44999", help="the engine's media port range")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    import uvloop

    print(f"soak: start, {args.minutes:g} min against a voicemix engine process on 127.0.0.1", flush=True)
    result = uvloop.run(soak(args.minutes, args.participants, args.talkers, args.churn, args.sample,
                             args.ports, log=lambda line: print(line, flush=True)))
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print("soak: stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
