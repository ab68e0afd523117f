"""SIP calls set up and torn down per second: sipp's built-in `uac` against an auto-answering
number, the server on one core.

The server is what `voicemix serve` runs (controller + in-process engine + SIP user agent on one
uvloop loop), in a child process pinned to core 0; the number's route joins every inbound call to
one MCU call, so each sipp call is: INVITE (trunk check, number lookup, screening with a
reputation query, an engine leg on its own UDP port, 100 + 200 with the engine's answer), ACK,
BYE (leg removed, its CDR and the call history written), 200. sipp runs on core 1 at a fixed
rate; the run counts sipp's successful and failed calls and the server's CPU time (utime+stime
from /proc) per call.

    python bench/sip_cps.py                      # 200, 300, 400 CPS for 15 s each (~1.5 min)
    python bench/sip_cps.py --rates 200 --seconds 30
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUMBER = "+15550100100"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime + stime


async def server(data_dir: str, sip_port: int) -> None:
    """The child: a controller with SIP on, one call, a number routed to it; prints READY."""
    import logging

    from controller.testing import running_controller

    logging.basicConfig(level=logging.WARNING)
    async with running_controller(Path(data_dir), sip_listen=f"127.0.0.1:{sip_port}",
                                  monitor_interval_s=5.0, sip_invite_rate=100000,
                                  sip_source_rate=100000, pstn_caller_rate_per_minute=1e9,
                                  pstn_trunk_rate_per_second=1e9,
                                  pstn_reputation_threshold=101) as c:
        owner = await c.user("owner")
        call = (await c.client.post("/v1/calls", json={"mode": "mcu"}, headers=owner)).json()
        response = await c.client.post("/v1/numbers", json={"number": NUMBER, "route": {"call": call["id"]}},
                                       headers=c.admin)
        assert response.status_code == 201, response.text
        profile = None
        if os.environ.get("SIP_CPS_PROFILE"):   # the steady state only, not the start-up
            import cProfile
            profile = cProfile.Profile()
            profile.enable()
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if profile is not None:
            profile.disable()
            profile.dump_stats(os.environ["SIP_CPS_PROFILE"])
        stats = c.server.pstn.stats()
        print(f"STATS answered={stats['answered_inbound']} screened={stats['screened']} "
              f"({stats['screening']['decisions']}) task_errors={stats['sip']['task_errors']}",
              flush=True)


def free_port() -> int:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rate(rate: int, seconds: int, sip_port: int, workdir: Path) -> dict:
    calls = rate * seconds
    stats_file = workdir / f"stats-{rate}.csv"
    command = ["taskset", "-c", "1", shutil.which("sipp"), "-sn", "uac", f"127.0.0.1:{sip_port}",
               "-s", NUMBER, "-r", str(rate), "-m", str(calls), "-l", str(max(100, rate * 2)),
               "-i", "127.0.0.1", "-p", str(free_port()), "-mi", "127.0.0.1", "-mp", str(free_port()),
               "-nostdin", "-trace_stat", "-stf", str(stats_file), "-fd", "1",
               "-timeout", f"{seconds + 30}s", "-max_socket", "10000"]
    began = time.monotonic()
    result = subprocess.run(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    elapsed = time.monotonic() - began
    with open(stats_file, newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    header, last = rows[0], rows[-1]
    value = dict(zip(header, last))
    return {"rate": rate, "successful": int(value["SuccessfulCall(C)"]),
            "failed": int(value["FailedCall(C)"]), "elapsed_s": elapsed,
            "call_rate": float(value["CallRate(C)"]), "sipp_exit": result.returncode,
            "retransmissions": int(value.get("Retransmissions(C)", 0) or 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[200, 300, 400])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server:
        import uvloop
        os.sched_setaffinity(0, {0})
        uvloop.run(server(args.server, args.port))
        return
    if shutil.which("sipp") is None:
        sys.exit("sipp (Debian package sip-tester) is not installed")
    with tempfile.TemporaryDirectory() as data:
        sip_port = free_port()
        child = subprocess.Popen([sys.executable, __file__, "--server", data, "--port", str(sip_port)],
                                 cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
        assert child.stdout.readline().strip() == "READY", "the server did not start"
        print(f"sipp -sn uac against an auto-answering number; server (controller + engine + SIP) "
              f"pinned to core 0, sipp to core 1; load average {os.getloadavg()[0]:.1f} at start")
        print(f"{'target CPS':>10} {'calls':>7} {'failed':>7} {'retrans':>7} {'achieved CPS':>13} "
              f"{'server CPU':>11} {'CPU/call':>9}")
        try:
            for rate in args.rates:
                cpu_before = cpu_seconds(child.pid)
                result = run_rate(rate, args.seconds, sip_port, Path(data))
                cpu = cpu_seconds(child.pid) - cpu_before
                total = result["successful"] + result["failed"]
                # sipp's own cumulative rate: calls over the time it was placing them
                achieved = result["call_rate"]
                print(f"{rate:>10} {total:>7} {result['failed']:>7} {result['retransmissions']:>7} "
                      f"{achieved:>13.1f} {100 * cpu / result['elapsed_s']:>10.0f}% "
                      f"{1000 * cpu / max(total, 1):>7.2f}ms")
                time.sleep(2)   # transactions of the previous rate wind down
        finally:
            child.stdin.write("\n")
            child.stdin.flush()
            print(child.stdout.readline().strip())
            child.wait(30)


if __name__ == "__main__":
    main()
